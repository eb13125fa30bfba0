"""The settle rule, with an injected clock: quiet time plus a size and mtime that held still."""

from pathlib import Path, PurePath

import pytest

from handwatch.intake.settle import Settler, ignored_reason

P = Path("/w/a.jpg")


def test_ready_only_after_quiet_time_with_stable_signature():
    s = Settler(lambda p: 3.0)
    s.event(P, now=0.0, sig=(100, 1))
    assert s.ready(2.9, lambda p: (100, 1)) == []
    assert s.ready(3.0, lambda p: (100, 1)) == [P]
    assert s.ready(10.0, lambda p: (100, 1)) == []  # reported once


def test_growing_file_waits_for_the_last_chunk():
    s = Settler(lambda p: 3.0)
    sizes = iter([(200, 2), (300, 3), (300, 3)])
    s.event(P, 0.0, (100, 1))
    assert s.ready(3.0, lambda p: next(sizes)) == []  # grew without an event (e.g. lost inotify event)
    assert s.ready(6.0, lambda p: next(sizes)) == []  # grew again
    assert s.ready(9.0, lambda p: next(sizes)) == [P]


def test_new_event_restarts_the_wait():
    s = Settler(lambda p: 3.0)
    s.event(P, 0.0, (1, 1))
    s.event(P, 2.0, (2, 2))
    assert s.ready(4.0, lambda p: (2, 2)) == []
    assert s.ready(5.0, lambda p: (2, 2)) == [P]


def test_vanished_file_is_forgotten():
    s = Settler(lambda p: 1.0)
    s.event(P, 0.0, (1, 1))
    assert s.ready(2.0, lambda p: None) == [] and len(s) == 0


def test_per_path_settle_time_and_next_due():
    slow, fast = Path("/w/slow.jpg"), Path("/w/fast.jpg")
    s = Settler(lambda p: 10.0 if p == slow else 1.0)
    s.event(slow, 0.0, (1, 1))
    s.event(fast, 0.0, (1, 1))
    assert s.next_due() == 1.0
    assert s.ready(1.0, lambda p: (1, 1)) == [fast]
    assert s.next_due() == 10.0


@pytest.mark.parametrize(
    "name",
    [
        ".syncthing.IMG_1.jpg.tmp",
        "~syncthing~IMG_1.jpg.tmp",
        ".IMG_1.jpg.~4f2a",
        "IMG_1.jpg.part",
        "IMG_1.jpg.crdownload",
        ".~lock.x.jpg#",
        "~$report.jpg",
        "._IMG_1.jpg",
        ".DS_Store",
        "Thumbs.db",
        "desktop.ini",
        "IMG_1.md",
        "notes.txt",
        ".IMG_1.md.ab12cd34.handwatch-tmp",
    ],
)
def test_temporary_and_junk_names_are_never_inputs(name):
    assert ignored_reason(PurePath(name)) is not None


@pytest.mark.parametrize(
    "rel",
    [".stfolder/a.jpg", ".stversions/a.jpg", "@eaDir/a.jpg/SYNOFILE_THUMB_M.jpg", ".Trash-1000/files/a.jpg", "__MACOSX/a.jpg"],
)
def test_junk_folders_are_never_inputs(rel):
    assert ignored_reason(PurePath(rel)) is not None


@pytest.mark.parametrize("name", ["IMG_1.jpg", "IMG_1.JPG", "scan.PDF", "x.heic", "y.HEIF", "z.webp", "t.tiff", "p.png"])
def test_readable_extensions_in_any_case(name):
    assert ignored_reason(PurePath("sub") / name) is None

"""Watching with real watchdog observers on real folders, and reading mount types."""

import os
import threading
from pathlib import Path

from handwatch.intake.watch import Watcher, WatchSpec, mount_type, parse_mountinfo, walk, wants_polling
from handwatch.safefs import inside
from tests.support.fakeopenai import wait_for

MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /mnt/nas rw,relatime shared:20 - nfs4 nas:/export rw,vers=4.2
41 22 0:36 / /mnt/smb\040share rw,relatime shared:21 - cifs //nas/share rw
42 22 0:37 / /home/me/remote rw,nosuid shared:22 - fuse.sshfs me@host:/ rw
43 40 0:38 / /mnt/nas/local rw shared:23 - ext4 /dev/sdb1 rw
"""


def test_mount_type_picks_the_deepest_mount():
    assert mount_type(Path("/mnt/nas/photos"), MOUNTINFO) == "nfs4"
    assert mount_type(Path("/mnt/nas/local/x"), MOUNTINFO) == "ext4"
    assert mount_type(Path("/mnt/smb share/cam"), MOUNTINFO) == "cifs"
    assert ("/mnt/smb share", "cifs") in parse_mountinfo(MOUNTINFO)


def test_auto_polls_network_filesystems_only():
    assert wants_polling(Path("/mnt/nas/photos"), "auto", MOUNTINFO)
    assert wants_polling(Path("/home/me/remote/x"), "auto", MOUNTINFO)
    assert not wants_polling(Path("/home/me/photos"), "auto", MOUNTINFO)
    assert wants_polling(Path("/home/me/photos"), True, MOUNTINFO)
    assert not wants_polling(Path("/mnt/nas"), False, MOUNTINFO)


def _collect(tmp_path, poll):
    seen, dirs, lock = [], [], threading.Lock()

    def on_file(p, moved=False):
        with lock:
            seen.append(p)

    w = Watcher([WatchSpec(tmp_path, True, poll, poll_interval_s=0.2)], on_file, dirs.append)
    w.start()
    return w, seen, dirs


def test_syncthing_temp_then_rename_with_old_mtime_is_seen(tmp_path):
    w, seen, _ = _collect(tmp_path, False)
    try:
        tmp = tmp_path / ".syncthing.IMG_1.jpg.tmp"
        tmp.write_bytes(b"x" * 100)
        os.utime(tmp, (1_000_000, 1_000_000))  # Syncthing keeps the phone's old mtime
        os.rename(tmp, tmp_path / "IMG_1.jpg")
        wait_for(lambda: tmp_path / "IMG_1.jpg" in seen, 10, what="moved event for IMG_1.jpg")
    finally:
        w.stop()


def test_polling_observer_sees_new_files_and_folders(tmp_path):
    w, seen, dirs = _collect(tmp_path, True)
    try:
        assert w.modes[tmp_path] == "polling"
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "a.png").write_bytes(b"x")
        wait_for(lambda: tmp_path / "sub" / "a.png" in seen, 10, what="polled file event")
    finally:
        w.stop()


def test_walk_prunes_junk_and_skipped_folders_and_does_not_follow_folder_links(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"1")
    (tmp_path / ".stversions").mkdir()
    (tmp_path / ".stversions" / "old.jpg").write_bytes(b"1")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "moved.jpg").write_bytes(b"1")
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"1")
    (tmp_path / "linkdir").symlink_to(outside)
    found = set(walk(tmp_path, True, {tmp_path / "done"}))
    assert found == {tmp_path / "a" / "x.jpg"}
    assert set(walk(tmp_path, False)) == set()


def test_inside_resolves_links(tmp_path):
    outside = tmp_path / "out.jpg"
    outside.write_bytes(b"1")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "link.jpg").symlink_to(outside)
    assert not inside(tmp_path / "w" / "link.jpg", tmp_path / "w")
    assert inside(outside, tmp_path)

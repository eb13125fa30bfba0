"""`bench/doubt.py`'s two-reader case on a few pages (issue #26): it runs through the daemon's own merge, and what
two readers buy shows on them too — fewer wrong words written, and doubt where one reader without
log-probabilities has none."""

from __future__ import annotations

import contextlib
import io

from bench import doubt as bench


def test_two_readers_write_fewer_wrong_words_and_doubt_what_one_without_probabilities_cannot():
    truths, read = bench.read_twice(bench.SPECS[:12])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        cases = bench.two_table(truths, read)
    one, two = cases["one reader (small), with log-probabilities"], cases["**two readers, with log-probabilities**"]
    assert one.wrong > 0 and two.wrong < one.wrong  # the surer reading's words are written
    assert 1.0 < two.requests / two.pages <= 2.0  # the pages in doubt are read again, none twice
    alone, pair = cases["one reader (small), without"], cases["**two readers, without**"]
    assert alone.tp == 0 and pair.tp > 0 and pair.requests == 2 * pair.pages  # LM Studio: every page read twice
    assert "| **two readers, with log-probabilities** |" in out.getvalue()

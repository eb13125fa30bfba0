"""The review page shows, beside each word two readings disagree on, what the other reading has there (issue #26)."""

from __future__ import annotations

import re

import yaml

from handwatch.config import loader
from handwatch.publish import markdown
from handwatch.safefs import file_sig, sha256_file
from handwatch.service.worker import Worker, build
from handwatch.store.jobs import this_owner
from tests.support.fakeopenai import FakeOpenAI
from tests.support.pages import draw_page
from tests.support.webworld import World, serve

FIRST = "Two cups of flower and one egg, beaten"
# A note can carry markup: the second reading's text between two disputed words is shown, so it must be escaped.
SECOND = "Two cups of <script>alert(1)</script> and one egg, beaten"


def _world(tmp_path, small: FakeOpenAI, big: FakeOpenAI) -> World:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = {
        "state_dir": str(tmp_path / "state"),
        "endpoints": [{"url": small.url, "name": "small"}, {"url": big.url, "name": "big"}],
        "defaults": {"settle_s": 0, "second_opinion": {"endpoint": "big", "when": "always"}},
        "folders": [{"path": str(inbox)}],
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    w = World(cfg_path, loader.load(cfg_path), inbox)
    w.files["note"] = inbox / "note.png"
    draw_page(["Two cups of flour", "and one egg, beaten"]).save(w.files["note"])
    db, queue, pipeline, candidates, _ = build(w.cfg)
    worker = Worker(queue, pipeline, candidates)
    p = w.files["note"]
    queue.enqueue(p, sha256_file(p), file_sig(p))
    outcomes = []
    while (job := queue.claim(this_owner(), 600)) is not None:  # the first reading, then its second opinion
        outcomes.append(worker.handle(job))
    assert outcomes == ["again", "done"]
    db.close()
    return w


def test_a_disputed_word_shows_the_other_reading_beside_it_escaped(tmp_path):
    small, big = FakeOpenAI(models=("small-vl",)).start(), FakeOpenAI(models=("big-vl",)).start()
    small.logprobs_mode = big.logprobs_mode = "ignore"  # LM Studio: disagreement is the only doubt there is
    small.default, big.default = {"content": FIRST}, {"content": SECOND}
    w = serve(_world(tmp_path, small, big))
    try:
        md = (w.inbox / "note.md").read_text()
        assert markdown.fields(md)["other_readings"] == [{"page": 1, "word": "flower", "other": "script>alert(1)</script"}]
        with w.client() as c:
            page = c.get(f"/file/{w.job_id('note')}").text
        shown = re.search(r'<div class="rendered" id="rendered">(.*?)</div>', page, re.S).group(1)
        assert re.findall(r'<mark class="doubt"[^>]*>([^<]+)</mark>', shown) == ["flower"]
        assert '<span class="other" title="the other reading">(script&gt;alert(1)&lt;/script)</span>' in shown
        assert "alert(1)</script" not in page  # nowhere unescaped
    finally:
        w.stop()
        small.stop()
        big.stop()


def test_other_readings_are_matched_in_order_and_hostile_front_matter_is_ignored():
    body = "a ==flower== and ==egg== and ==flower== too"
    others = [{"page": 1, "word": "flower", "other": "flour"}, {"page": 1, "word": "flower", "other": "floor"}]
    pieces = [(p, o) for p, d, o in markdown.doubt_pieces(body, others) if d]
    assert pieces == [("flower", "flour"), ("egg", None), ("flower", "floor")]
    for hostile in ("flour", [1, 2], [{"word": 3, "other": "x"}], [{"word": "flower"}], None):
        assert [o for _, d, o in markdown.doubt_pieces(body, hostile) if d] == [None, None, None]

"""The second opinion (`second_opinion:`): the pages a first reading leaves in doubt, read again by another endpoint.

The first reading is published as soon as it exists; the worker then queues the same file again for this step
(`JobQueue.again`), so a second endpoint that is down or busy never holds back a first reading, and a reading
that comes back late goes through the publisher, which never writes over a person's edit. Each page read again
is combined with its first reading word by word (`transcribe.agree`); a second reply that is empty, cut off or in
another language leaves the first reading as it was, with the reason. What was done is kept in the text's
`second` entry, so the same bytes are never read a second time twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from handwatch import log
from handwatch.config.schema import Rule
from handwatch.errors import EngineResponseError
from handwatch.prepare import preprocess
from handwatch.transcribe import agree, doubt
from handwatch.transcribe.engine import PageText

if TYPE_CHECKING:
    from handwatch.service.pipeline import Pipeline

# A second reply with one of these problems is no reading of the page: the first stands (profiles.judge's and
# the engine's own reasons, and the script and language checks of doubt.page_reasons).
UNUSABLE = ("truncated", "loop", "refusal", "narration", "thinking", "empty", "script", "language")


def page_reasons(result: dict, i: int) -> list[str]:
    """The engine's reasons for page `i` (0-based) of a stored text, without their `page N: ` prefix."""
    reasons = list(result.get("review_reasons", ()))
    if len(result["pages"]) == 1:
        return reasons
    prefix = f"page {i + 1}: "
    return [r[len(prefix) :] for r in reasons if r.startswith(prefix)]


def _with_page_reasons(result: dict, i: int, page: list[str]) -> list[str]:
    """The stored text's reasons with page `i`'s replaced, the pages' order kept."""
    n = len(result["pages"])
    if n == 1:
        return page
    out: list[str] = []
    for k in range(n):
        out += [f"page {k + 1}: {r}" for r in (page if k == i else page_reasons(result, k))]
    return out


def _words(result: dict, i: int) -> list[doubt.Word] | None:
    stored = result.get("words") or []
    if i >= len(stored) or stored[i] is None:
        return None
    return [doubt.Word.from_json(x) for x in stored[i]]


def due(result: dict, rule: Rule) -> list[int]:
    """The pages (0-based) to read again: those in doubt under the rule's thresholds, and those without word
    probabilities (or, `when: always`, every page with text); none when the rule has no second opinion or this
    text has had its second reading."""
    if rule.second_opinion is None or "second" in result:
        return []
    t = doubt.thresholds(rule.engine, rule.uncertain_below, rule.review_below, rule.review_uncertain_words)
    out = []
    for i, text in enumerate(result["pages"]):
        if not text.strip():
            continue  # a blank page: never sent, nothing to read again
        words = _words(result, i)
        # No word probabilities (LM Studio): no word is doubted, so only a second reading can doubt any.
        if (
            rule.second_opinion.when == "always"
            or words is None
            or page_reasons(result, i)
            or doubt.assess([text], [words], t).reasons
        ):
            out.append(i)
    return out


def key(rule: Rule) -> str:
    """What the text cache's key adds for a reading with this rule's second opinion."""
    opinion = rule.second_opinion
    return f" second={opinion.endpoint}/{opinion.when}" if opinion is not None else ""


def _of(first: dict) -> str:
    return hashlib.sha256(json.dumps([first["pages"], first.get("words")], sort_keys=True).encode()).hexdigest()[:16]


def made_from(stored: dict | None, first: dict) -> bool:
    """A stored combined reading is good only for the very first reading it was made from (a person's retry
    reads the page afresh, and then it is that reading the second opinion must see)."""
    return stored is not None and (stored.get("second") or {}).get("of") == _of(first)


def unusable(page: PageText) -> str | None:
    """Why a second reply cannot stand beside the first, or None."""
    if not page.text.strip() or doubt.PLACEHOLDER.match(page.text):
        return "the reply was empty"
    bad = [r for r in page.review_reasons if r.split(":")[0].split(" ")[0] in UNUSABLE]
    return bad[0] if bad else None


def read(pipeline: Pipeline, path: Path, rule: Rule, result: dict, decoding: Callable[[], AbstractContextManager]) -> dict:
    """`result` (a stored first reading) with its pages in doubt read again and combined. Raises EngineUnavailable
    while the second endpoint is down (nothing changes: the job waits); any other failure of the second reading
    leaves the first as it was, with the reason."""
    engine = pipeline.engines.second(rule)
    which = due(result, rule)
    if engine is None or not which:
        return result
    label = engine.clients[0].ep.label()
    read_rule = rule.model_copy(update={"profile": result.get("profile") or rule.profile})
    if read_rule.profile == "auto":
        read_rule = read_rule.model_copy(update={"profile": "notes"})
    opts = preprocess.for_engine(rule.preprocess, "vlm")
    refs = pipeline.open_pages(path, opts, rule, decoding)
    out = {**result, "pages": list(result["pages"]), "words": list(result.get("words") or [None] * len(result["pages"]))}
    second = {"endpoint": label, "model": "", "read": [i + 1 for i in which], "written": [], "disputed": 0, "of": _of(result)}
    flow = pipeline.flow
    for i in which:
        if i >= len(refs):
            continue
        ref = refs[i]
        try:
            with flow.page():
                image, ink = flow.run(partial(pipeline._prepare, ref, opts, read_rule, engine.encode, decoding))
                if ink.blank:  # the first reading found text on it: ask anyway
                    image = engine.encode(image, read_rule)
                with flow.encoded.held():
                    page = engine.transcribe_page(image, read_rule)
        except EngineResponseError as e:  # the server failed on this page (FileRejected, context): the first stands
            out["review_reasons"] = _with_page_reasons(
                out, i, page_reasons(out, i) + [f"second reading ({label}) failed: {e}; the first reading stands"]
            )
            continue
        second["model"] = second["model"] or page.model
        page.review_reasons += doubt.page_reasons(page.text, ink, rule.languages, page.extra.get("detected_languages"))
        out = _combined(out, i, page, label, second)
    if second["written"] and rule.translate_to and out.get("appendix"):  # the translation was of the first text
        try:
            with flow.encoded.held():
                translation = engine.translate("\n\n".join(out["pages"]), rule.translate_to)
            out["appendix"] = f"## Translation ({rule.translate_to})\n\n{translation}"
        except EngineResponseError as e:  # the first text's translation stays, and says so
            out["review_reasons"] = list(out["review_reasons"]) + [f"translation: of the first reading ({e})"]
    log.get("second").info("second.read", path=str(path), endpoint=label, pages=second["read"], written=second["written"])
    return {**out, "second": second}


def _combined(out: dict, i: int, page: PageText, label: str, second: dict) -> dict:
    first_text = out["pages"][i]
    reasons = page_reasons(out, i)
    problem = unusable(page)
    if problem is not None:
        reasons.append(f"second reading ({label}): {problem}; the first reading stands")
    elif doubt.PLACEHOLDER.match(first_text) or not doubt.spans(first_text):  # no reading of it ([illegible]): the second
        out["pages"][i] = page.text
        out["words"][i] = None if page.words is None else [w.to_json() for w in page.words]
        reasons = list(page.review_reasons) + [f"the first reading failed; the text is the second reading's ({label})"]
        second["written"].append(i + 1)
    else:
        c = agree.combine(agree.Reading(first_text, _words(out, i)), agree.Reading(page.text, page.words))
        if c is None and max(len(doubt.spans(first_text)), len(doubt.spans(page.text))) > agree.MAX_WORDS:
            reasons.append(
                f"second reading ({label}): over {agree.MAX_WORDS} words, too long to compare word by word; the first "
                "reading stands"
            )
        elif c is None:
            reasons.append(
                f"second reading ({label}): it shares too few words with the first (another language, or another "
                "page?); the first reading stands"
            )
        else:
            out["pages"][i] = c.text
            out["words"][i] = [w.to_json() for w in c.words]
            second["disputed"] += c.disputed
            if c.second_written:
                second["written"].append(i + 1)
    out["review_reasons"] = _with_page_reasons(out, i, reasons)
    return out

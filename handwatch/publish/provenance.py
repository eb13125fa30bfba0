"""What made a transcription: a fingerprint of prompt, preprocessing and rule, model, endpoint — kept for `redo`."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from handwatch.config.schema import Config, Rule
from handwatch.prepare import preprocess
from handwatch.store.state import StateDB, decode, encode
from handwatch.transcribe import doubt, gate, profiles

# Created on first use by this module, so the state database's own schema stays as it is.
SCHEMA = """
CREATE TABLE IF NOT EXISTS provenance(
    source BLOB PRIMARY KEY,            -- the original, where it is now
    output BLOB NOT NULL,               -- its Markdown
    source_sha256 TEXT NOT NULL,
    fingerprint TEXT NOT NULL,          -- short: what the front matter shows
    parts TEXT NOT NULL,                -- JSON {prompt, preprocess, rule, review}: each part's hash, to say what changed
    model TEXT NOT NULL,                -- the model asked for ('' when no page was sent)
    endpoint TEXT,
    needs_review INTEGER NOT NULL,
    confidence REAL,
    uncertain_words INTEGER,
    written REAL NOT NULL
);
"""
PART_NAMES = {"prompt": "prompt", "preprocess": "preprocessing", "rule": "rule", "review": "review thresholds"}
TRANSCRIBING = ("prompt", "preprocess", "rule")  # parts whose change needs the model again; "review" does not
GATE = "gate"  # "on" in the parts of a transcription whose original passed the document check (a redo cue, not a change)


def _h(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prompts(rule: Rule, cfg: Config) -> list[str]:
    """Every prompt a page under this rule may be sent with (the recipe JSON one only where an endpoint
    does structured output), as the current handwatch writes them: a new prompt text is a change too."""
    if rule.engine != "vlm":
        return []
    if rule.profile == "auto":  # chosen per page: each profile's prompts, and the question that chooses
        out = [gate.PROMPT] + [
            p for name in ("notes", "recipe", "multilingual") for p in prompts(rule.model_copy(update={"profile": name}), cfg)
        ]
        return out
    out = [profiles.prompt_for(rule.profile, rule.languages, rule.prompt)]
    if rule.profile == "recipe" and any(ep.structured_output for ep in cfg.endpoints):
        out.append(profiles.prompt_for("recipe", rule.languages, rule.prompt, structured=True))
    if rule.translate_to:
        out.append(f"translate_to={rule.translate_to}")
    return out


def parts(rule: Rule, cfg: Config) -> dict[str, str]:
    t = doubt.thresholds(rule.engine, rule.uncertain_below, rule.review_below, rule.review_uncertain_words)
    return {
        "prompt": _h(prompts(rule, cfg)),
        "preprocess": _h(preprocess.for_engine(rule.preprocess, rule.engine).model_dump()),
        "rule": _h({k: getattr(rule, k) for k in ("profile", "languages", "translate_to", "engine", "max_pages")}),
        "review": _h([t.word, t.page, t.words, rule.mark_uncertain]),
    }


def fingerprint(p: dict[str, str]) -> str:
    return _h(p)[:12]


def changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Which parts differ, in words: ["prompt changed", "review thresholds changed"]."""
    return [f"{PART_NAMES[k]} changed" for k in PART_NAMES if old.get(k) != new.get(k)]


@dataclass(frozen=True)
class Record:
    source: Path
    output: Path
    source_sha256: str
    fingerprint: str
    parts: dict[str, str]
    model: str
    endpoint: str | None
    needs_review: bool
    confidence: float | None
    uncertain_words: int | None


class Provenance:
    def __init__(self, db: StateDB):
        self.db = db
        self.db.connect().executescript(SCHEMA)

    def record(self, r: Record) -> None:
        self.db.connect().execute(
            """INSERT OR REPLACE INTO provenance(source, output, source_sha256, fingerprint, parts, model, endpoint,
                   needs_review, confidence, uncertain_words, written) VALUES(?,?,?,?,?,?,?,?,?,?,?)""",
            (
                encode(r.source),
                encode(r.output),
                r.source_sha256,
                r.fingerprint,
                json.dumps(r.parts),
                r.model,
                r.endpoint,
                int(r.needs_review),
                r.confidence,
                r.uncertain_words,
                time.time(),
            ),
        )

    def forget(self, source: Path) -> None:
        self.db.connect().execute("DELETE FROM provenance WHERE source=?", (encode(source),))

    def all(self) -> list[Record]:
        rows = self.db.connect().execute("SELECT * FROM provenance ORDER BY source").fetchall()
        return [
            Record(
                decode(r["source"]),
                decode(r["output"]),
                r["source_sha256"],
                r["fingerprint"],
                json.loads(r["parts"]),
                r["model"],
                r["endpoint"],
                bool(r["needs_review"]),
                r["confidence"],
                r["uncertain_words"],
            )
            for r in rows
        ]

"""Benchmark: full-text search over 10,000 generated transcriptions, handwatch's FTS5 index against a LIKE scan.

The transcriptions are generated (no downloads): Markdown notes and recipes of 60–250 words drawn with Zipf's
law (as words in real text are) from 20,000 words — everyday, kitchen and letter words first, then made-up
ones — a third of them recipes (`profile: recipe`, `tags: [recipe]`), one in 400 with cardamom in it. They are written as Markdown files, recorded in the ledger and indexed through
`SearchIndex.update` in a real state database, as handwatch does with the Markdown it writes.

Baseline ("LIKE scan"): the same question asked of the same table without the index — every word a
`LIKE '%word%'` over title, tags and text, all words required, every matching row (unranked). handwatch: `SearchIndex.search`
(FTS5, porter stemming, bm25 ranking, the matching line highlighted), and the whole `/search` page over
HTTP from the real server (query, ranking, rendering the HTML).

    python -m bench.search [--files N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from handwatch.config import loader
from handwatch.publish.index import SearchIndex, terms
from handwatch.safefs import sha256_bytes
from handwatch.store.state import Ledger, StateDB

WORDS = (
    "milk eggs bread butter call mum dentist tuesday garden tomatoes water plants pay rent invoice meeting "
    "project notes ideas book library return friday train ticket berlin hamburg holiday weather sunny rain "
    "remember birthday present anna ben grandma letter dear love thank you recipe family dinner lunch soup "
    "onion garlic pepper salt olive oil lemon chicken rice beans carrots potatoes bake oven minutes stir "
    "simmer boil chop slice cream yeast dough knead rest hour overnight jar label shelf cupboard kitchen "
    "bathroom paint blue white window door key neighbour parcel post office bank account number phone "
    "doctor appointment medicine twice daily evening morning school homework maths reading piano lesson"
).split()
RECIPE = "flour sugar cinnamon apples nutmeg vanilla ginger cloves honey almonds raisins walnuts yoghurt".split()
QUERIES = ("the recipe with cardamom", "grandma letter", "sugar flour", '"olive oil" garlic', "xylophone")


SYLLABLES = "ka lo mi nu re sa ti vo ber dan fel gor han kis lum mor nel pra sto tru wen zel".split()


def vocabulary(rng: random.Random, size: int = 20_000) -> tuple[list[str], list[float]]:
    made = {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(size * 2)}
    vocab = list(dict.fromkeys(WORDS + RECIPE + sorted(made)))[:size]
    cum, total = [], 0.0
    for rank in range(len(vocab)):
        total += 1 / (rank + 1) ** 1.07
        cum.append(total)
    return vocab, cum


def document(rng: random.Random, i: int, vocab: tuple[list[str], list[float]]) -> tuple[str, bool]:
    recipe = i % 3 == 0
    n = rng.randint(60, 250)
    words = rng.choices(vocab[0], cum_weights=vocab[1], k=n)
    if recipe:
        words = [rng.choice(RECIPE) if rng.random() < 0.15 else w for w in words]
    if i % 400 == 7:
        words.insert(rng.randrange(len(words)), "cardamom")
    lines = [" ".join(words[k : k + 10]) for k in range(0, len(words), 10)]
    title = f"{words[0].capitalize()} {words[1]}"
    fm = (
        f"---\nsource: IMG_{i:05d}.jpg\nsource_sha256: {i:064x}\npages: 1\nprofile: {'recipe' if recipe else 'notes'}\n"
        f"languages: [en]\nengine: vlm\nmodel: bench\ntranscribed: 2026-01-01T00:00:00Z\nhandwatch: 0.1.0\n"
        f"needs_review: {'true' if i % 50 == 0 else 'false'}\nreview_reasons: []\n"
        + (f"title: {title}\ntags: [recipe]\n" if recipe else "")
        + "---\n\n"
    )
    body = (f"# {title}\n\n" if recipe else "") + "\n".join(f"- {ln}" if recipe else ln for ln in lines) + "\n"
    return fm + body, recipe


def like_scan(db: StateDB, text: str) -> list:
    """Every row that has all the words anywhere: a scan of every text, unranked (LIKE cannot rank, so a
    person would be shown them in no useful order)."""
    words = terms(text)
    where = " AND ".join("(title LIKE ? OR meta LIKE ? OR body LIKE ?)" for _ in words)
    args = [a for w in words for a in (f"%{w}%",) * 3]
    return db.connect().execute(f"SELECT id, output, body FROM docs WHERE {where}", args).fetchall()


def timed(fn, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=25)
    args = ap.parse_args()
    rng = random.Random(15)
    with tempfile.TemporaryDirectory(prefix="handwatch-bench-") as tmp:
        root = Path(tmp)
        inbox = root / "inbox"
        inbox.mkdir()
        db = StateDB(root / "state")
        index = SearchIndex(db)
        t0 = time.perf_counter()
        conn = db.connect()
        conn.execute("BEGIN")
        vocab = vocabulary(rng)
        ledger = Ledger(db)
        for i in range(args.files):  # real files in the ledger, as handwatch leaves them (the page re-reads changed ones)
            text, _ = document(rng, i, vocab)
            md, src = inbox / f"IMG_{i:05d}.md", inbox / f"IMG_{i:05d}.jpg"
            md.write_text(text)
            sha = sha256_bytes(text.encode())
            ledger.intend(md, sha, src, "0" * 64)
            ledger.commit(md, sha)
            index.update(md, text, src)
        conn.execute("COMMIT")
        build_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in (root / "state").iterdir()) / 1e6
        assert index.refresh() == (0, 0)  # the page's background refresh will find nothing to do

        from handwatch.web.server import WebServer
        from tests.support.fakeopenai import free_port  # the bench reuses the tests' free-port helper

        port = free_port()
        cfg_path = root / "config.yaml"
        cfg_path.write_text(
            f"state_dir: {root / 'state'}\ndefaults: {{engine: tesseract}}\nfolders:\n  - path: {inbox}\n"
            f"web: {{listen: '127.0.0.1:{port}'}}\n"
        )
        server = WebServer(loader.load(cfg_path))
        server.start()
        rows = []
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                for q in QUERIES:
                    fts_ms, hits = timed(lambda q=q: index.search(q, limit=30, folders=[inbox]), args.runs)  # as the page asks
                    like_ms, like_rows = timed(lambda q=q: like_scan(db, q), max(3, args.runs // 5))
                    page_ms, resp = timed(lambda q=q: http.get("/search", params={"q": q}), args.runs)
                    assert resp.status_code == 200
                    rows.append((q, len(hits), len(like_rows), like_ms, fts_ms, page_ms))
        finally:
            server.stop()
    print(
        f"{args.files} generated transcriptions; index built in {build_s:.1f} s; state database {size_mb:.0f} MB; "
        f"median of {args.runs} runs (LIKE: {max(3, args.runs // 5)}); one core of this 2-core machine, warm cache.\n"
    )
    print(
        "| query | files matching (LIKE) | shown (FTS5, best 30) | LIKE scan ms | handwatch FTS5 ms | /search page over HTTP ms | FTS5 vs LIKE |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for q, n_fts, n_like, like_ms, fts_ms, page_ms in rows:
        print(f"| `{q}` | {n_like} | {n_fts} | {like_ms:.1f} | {fts_ms:.2f} | {page_ms:.1f} | 1/{like_ms / fts_ms:.0f} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()

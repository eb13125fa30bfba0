"""The docs: nothing the long README said was lost when it became a site, the README stays a five-minute read,
and every link and path they give leads somewhere.

The README grew to 1,632 lines before its sections moved into docs/ (mkdocs-material, built `--strict`).
`MOVED` records where each of its `##`/`###` sections went, so a link or a habit that knew the old section
still finds it; the strict build then proves every page, link and anchor resolves as the site renders it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

from tests.support.paths import REPO

DOCS = REPO / "docs"

# Every `##`/`###` heading of the README before the docs site (headings inside its fenced Markdown samples,
# such as "## Ingredients", excepted), and the page and anchor that section lives at now.
MOVED = {
    "## Contents": "index.md#where-to-read-on",
    "## Run it as a service": "install.md#run-it-as-a-service",
    "## Configuration": "configuration.md#configuration",
    "## Commands and exit codes": "reference/commands.md#commands-and-exit-codes",
    "### `scan`": "reference/commands.md#scan",
    "## What `check` checks": "reference/commands.md#what-check-checks",
    "## The Markdown it writes": "markdown.md#the-markdown-it-writes",
    "## Guarantees": "markdown.md#guarantees",
    "## Reliability": "markdown.md#reliability",
    "## How watching works": "watching.md#how-watching-works",
    "## What `status` shows": "reference/commands.md#what-status-shows",
    "## Doubt: which pages and words to check": "doubt.md#doubt-which-pages-and-words-to-check",
    "### Redo after a change": "reference/commands.md#redo-after-a-change",
    "## The review page, search, metrics and notifications": "review.md#the-review-page-search-metrics-and-notifications",
    "## Profiles: notes, recipes, letters in several languages": "profiles.md#profiles-notes-recipes-letters-in-several-languages",
    "### `notes` (default)": "profiles.md#notes-default",
    "### `recipe`": "profiles.md#recipe",
    "### `multilingual`": "profiles.md#multilingual",
    "## Taming model output": "model-servers.md#taming-model-output",
    "## Model servers": "model-servers.md#model-servers",
    "## Inputs and image preparation": "inputs.md#inputs-and-image-preparation",
    "## Engines": "model-servers.md#engines",
    "## Benchmarks": "develop/benchmarks.md#benchmarks",
    "### `python -m bench.preprocess` — CPU, memory, bytes, tokens per page": (
        "develop/benchmarks.md#python-m-benchpreprocess-cpu-memory-bytes-tokens-per-page"
    ),
    "### `python -m bench.spawn` — starting poppler under a memory limit": (
        "develop/benchmarks.md#python-m-benchspawn-starting-poppler-under-a-memory-limit"
    ),
    "### `python -m bench.legibility` — does preprocessing help a reader?": (
        "develop/benchmarks.md#python-m-benchlegibility-does-preprocessing-help-a-reader"
    ),
    "### `python -m bench.search` — full-text search over 10,000 transcriptions": (
        "develop/benchmarks.md#python-m-benchsearch-full-text-search-over-10000-transcriptions"
    ),
    "### `python -m bench.doubt` — do marked words and flagged pages find the errors?": (
        "develop/benchmarks.md#python-m-benchdoubt-do-marked-words-and-flagged-pages-find-the-errors"
    ),
    "## Performance": "reference/performance.md#performance",
    "## Tests": "develop/tests.md#tests",
}

README_MAX_LINES = 220


def headings(text: str) -> list[str]:
    """The ATX headings of a Markdown text, outside fenced code blocks (where `# Saturday` is a sample)."""
    found, fence = [], ""
    for line in text.splitlines():
        m = re.match(r"(`{3,}|~{3,})", line)
        if fence:
            if m and line.strip() == fence:
                fence = ""
        elif m:
            fence = m.group(1)
        elif re.match(r"#{1,6} ", line):
            found.append(line)
    return found


def anchors(path: Path) -> set[str]:
    """The ids mkdocs gives a page's headings: Python-Markdown's toc slugify over the heading's text (code spans
    unwrapped), a repeated id getting `_1`, `_2`, …"""
    seen: set[str] = set()
    for h in headings(path.read_text()):
        text = h.lstrip("#").strip().replace("`", "")
        base = slug = slugify(text, "-")
        n = 0
        while slug in seen:
            n += 1
            slug = f"{base}_{n}"
        seen.add(slug)
    return seen


def resolve(target: str, page: Path) -> tuple[Path, str]:
    """A relative link from `page` as a file and an anchor ('' when it has none)."""
    path, _, anchor = target.partition("#")
    return ((page.parent / path).resolve() if path else page), anchor


def test_every_section_of_the_old_readme_has_a_page_and_an_anchor():
    missing = []
    for heading, target in MOVED.items():
        page, anchor = resolve(target, DOCS / "index.md")
        if not page.is_file():
            missing.append(f"{heading} -> {target}: no page {page.relative_to(REPO)}")
        elif anchor not in anchors(page):
            missing.append(f"{heading} -> {target}: no such heading (has {sorted(anchors(page))})")
    assert missing == []


def test_the_anchor_rule_is_the_one_mkdocs_uses():
    """The slugs the test computes for the headings that carry code, punctuation and a dash."""
    page = DOCS / "develop" / "benchmarks.md"
    assert "python-m-benchsearch-full-text-search-over-10000-transcriptions" in anchors(page)
    assert "what-check-checks" in anchors(DOCS / "reference" / "commands.md")
    assert "ingredients" not in anchors(DOCS / "profiles.md")  # a heading inside a fenced sample is no section


def links(text: str) -> list[str]:
    """The targets of Markdown links and images, and of src/href attributes; not autolinks like <http://…>."""
    return re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"""(?:src|href)=["']([^"']+)["']""", text)


def test_the_readme_is_short_and_every_link_in_it_leads_somewhere():
    readme = REPO / "README.md"
    text = readme.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    broken = []
    for target in links(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, anchor = resolve(target, readme)
        if not path.is_file():
            broken.append(f"{target}: no file {path}")
        elif anchor and anchor not in anchors(path):
            broken.append(f"{target}: no heading with that anchor in {path.relative_to(REPO)}")
    assert broken == []
    assert any(t.startswith("docs/") for t in links(text)), "the README links into the docs"


def test_every_path_and_test_the_docs_name_exists():
    """The docs name files (`tests/publish/test_output.py::test_…`, `handwatch/prepare/alloc.py`) and tests by
    name (the guarantees' proofs); a file moved or a test renamed must take its mention along."""
    defined = {m for p in (REPO / "tests").rglob("*.py") for m in re.findall(r"^\s*def (test_\w+)", p.read_text(), re.M)}
    stale = []
    for page in [REPO / "README.md", *DOCS.rglob("*.md")]:
        text = page.read_text()
        where = page.relative_to(REPO)
        for ref in re.findall(r"`((?:tests|handwatch|bench|config|systemd)/[\w./-]*(?:::\w+)?)`", text):
            path, _, func = ref.partition("::")
            if not (REPO / path).exists():
                stale.append(f"{where}: {ref}: no such file")
            elif func and not re.search(rf"^\s*def {func}\b", (REPO / path).read_text(), re.M):
                stale.append(f"{where}: {ref}: no such test in that file")
        stale += [f"{where}: {name}: no such test" for name in re.findall(r"`(test_\w+)`", text) if name not in defined]
    assert stale == []


def test_the_site_builds_strict_and_has_every_moved_anchor(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, a page missing from the navigation, any warning fails.
    Then the anchors of `MOVED` are checked against the HTML mkdocs really wrote."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING" not in run.stderr, run.stderr
    missing = []
    for heading, target in MOVED.items():
        page, _, anchor = target.partition("#")
        html = site / ("" if page == "index.md" else page.removesuffix(".md")) / "index.html"
        if f'id="{anchor}"' not in html.read_text():
            missing.append(f"{heading} -> {target}: no id in {html.relative_to(site)}")
    assert missing == []

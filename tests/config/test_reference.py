"""The configuration reference cannot drift from the code: docs/reference/config-keys.md is what the models'
field descriptions render to, every field has one, and every key the example config and the design name is on it."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from handwatch.config import preprocess, reference, schema, web
from tests.support.paths import REPO, cli_env

PAGE = REPO / "docs" / "reference" / "config-keys.md"
EXAMPLE = REPO / "config" / "handwatch.yaml"

# The rule keys DESIGN.md's contract lists ("Rule keys (in `defaults`, on a folder, or in a `.handwatch.yaml` …"),
# the doubt thresholds spelled out.
DESIGN_RULE_KEYS = {
    "profile", "languages", "translate_to", "prompt", "engine", "settle_s", "output", "recursive", "poll", "include",
    "exclude", "preprocess", "after", "documents_only", "endpoint", "second_opinion",
    "mark_uncertain", "uncertain_below", "review_below", "review_uncertain_words",
}  # fmt: skip
# Named by the contract but not accepted by the config models yet (the document check, choosing endpoints per
# folder, a second opinion). Once one is a field it is on the page, and this test says to strike it from here.
NOT_IN_THE_MODELS_YET: set[str] = set()


def _models() -> list[type[BaseModel]]:
    found = {
        obj
        for module in (schema, preprocess, web)
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__.startswith("handwatch.config")
    }
    return sorted(found, key=lambda m: m.__name__)


def _documented(section: str | None = None) -> set[str]:
    """The keys in the first column of the page's tables (of one `## ` section, if named)."""
    text = PAGE.read_text()
    if section is not None:
        text = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M))


def test_the_committed_page_is_what_the_models_render():
    rendered = reference.render()
    committed = PAGE.read_text() if PAGE.exists() else ""
    if committed != rendered:
        diff = "".join(difflib.unified_diff(committed.splitlines(True), rendered.splitlines(True), "committed", "rendered", n=1))
        pytest.fail(f"docs/reference/config-keys.md is out of date with the config models: run `{reference.COMMAND}`\n{diff}")


def test_the_command_writes_the_page_and_importing_the_module_does_nothing():
    run = subprocess.run([sys.executable, "-m", "handwatch.config.reference"], capture_output=True, text=True, env=cli_env())
    assert run.returncode == 0, run.stderr
    assert run.stdout == reference.render()
    quiet = subprocess.run(
        [sys.executable, "-c", "import handwatch.config.reference"], capture_output=True, text=True, env=cli_env()
    )
    assert (quiet.returncode, quiet.stdout) == (0, "")


def test_the_page_opens_with_its_title_and_how_to_regenerate_it():
    title, _, first, *_ = reference.render().splitlines()
    assert title == "# Configuration keys"
    assert "handwatch/config/schema.py" in first and reference.COMMAND in first


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_every_field_of_every_config_model_says_what_it_does(model):
    missing = [key for key, field in model.model_fields.items() if not (field.description or "").strip()]
    assert missing == [], f"{model.__name__}: give these fields a description=…: {missing}"


def test_the_models_found_include_every_section_of_the_config():
    names = {m.__name__ for m in _models()}
    assert {"Config", "Endpoint", "Folder", "RuleOverride", "RuleFileOverride", "Rule", "Preprocess"} <= names
    assert {"PreprocessOverride", "MoveAfter", "Web", "Notify"} <= names


def _keys(node, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            found.add(str(k))
            _keys(v, found)
    elif isinstance(node, list):
        for v in node:
            _keys(v, found)
    return found


def test_every_key_of_the_example_config_is_on_the_page():
    text = EXAMPLE.read_text()
    keys = _keys(yaml.safe_load(text), set())
    # and the keys it shows commented out (`# translate_to: en`, the whole `notify:` block)
    keys |= set(re.findall(r"^\s*#\s*([a-z_]+):(?:\s|$)", text, re.M))
    assert {"state_dir", "endpoints", "url", "defaults", "preprocess", "folders", "path", "web", "notify"} <= keys
    assert keys - _documented() == set()


def test_every_rule_key_the_design_names_is_on_the_page():
    missing = DESIGN_RULE_KEYS - _documented("Rule keys")
    assert missing == NOT_IN_THE_MODELS_YET, (
        "rule keys DESIGN.md names that the page lacks (a key now in the models: remove it from NOT_IN_THE_MODELS_YET)"
    )


def test_the_rule_keys_a_rule_file_may_not_set_are_found_from_the_models():
    refused = {k for k in schema.RuleOverride.model_fields if reference.rule_file_refuses(k)}
    assert refused == {"recursive", "poll"}
    page_says = re.findall(r"^\| `(\w+)` \|.*\| no: config file only \|$", PAGE.read_text(), re.M)
    assert sorted(page_says) == ["poll", "recursive"]


class _Sample(BaseModel):
    plain: str | None = Field(default=None, description="Either a | b, or `c`.")
    mode: bool | Literal["auto"] = Field(default="auto", description="`true`, `false` or `auto`.")
    size: int = Field(default=7, ge=1, le=9, description="How big.")
    names: list[str] = Field(default=["x"], min_length=1, description="Some names.")


def test_types_read_as_words_and_a_pipe_never_splits_a_cell():
    rows = reference.table(_Sample)
    assert rows[2:] == [
        "| `plain` | string | unset | Either a \\| b, or `c`. |",
        "| `mode` | `true`, `false` or `auto` | `auto` | `true`, `false` or `auto`. |",
        "| `size` | integer, 1 to 9 | `7` | How big. |",
        "| `names` | list of strings, not empty | `[x]` | Some names. |",
    ]
    with pytest.raises(ValueError, match="code span"):
        reference.cell("`str | None`")


def test_every_row_of_the_page_renders_as_one_table_row_in_mkdocs():
    """Rendered by Python-Markdown with the site's table extension: each row has as many cells as its header
    (an unescaped `|` would add one), and every link within the page reaches a heading."""
    markdown = pytest.importorskip("markdown")
    html = markdown.markdown(PAGE.read_text(), extensions=["tables", "toc"])
    for table in re.findall(r"<table>(.*?)</table>", html, re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in rows}
        assert len(widths) == 1, table
    anchors = set(re.findall(r'<h2 id="([^"]+)"', html))
    assert set(re.findall(r'href="#([^"]+)"', html)) <= anchors
    assert "\\|" not in re.sub(r"<[^>]+>", "", html), "an escaped pipe shows its backslash"

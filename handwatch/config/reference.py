"""Render the configuration reference (docs/reference/config-keys.md) from the config models' field descriptions.

The page is made from the same pydantic models that validate the config file, so a key cannot be added,
renamed or given another default without the reference saying so: `tests/config/test_reference.py` fails
when the committed page differs from what `render()` gives. Regenerate it with `COMMAND`."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from handwatch.config.endpoint import Endpoint
from handwatch.config.preprocess import Preprocess, PreprocessOverride
from handwatch.config.schema import RULE_FILE, Config, Folder, MoveAfter, Rule, RuleFileOverride, RuleOverride, SecondOpinion
from handwatch.config.web import Notify, Web

COMMAND = "python -m handwatch.config.reference > docs/reference/config-keys.md"

# Where each nested model is explained on the page: its section's anchor and heading.
SECTIONS: dict[type[BaseModel], tuple[str, str]] = {
    Endpoint: ("endpoints", "`endpoints[]`"),
    Folder: ("folders", "`folders[]`"),
    RuleOverride: ("rule-keys", "rule keys"),
    Preprocess: ("preprocess", "`preprocess`"),
    PreprocessOverride: ("preprocess", "`preprocess`"),
    MoveAfter: ("after", "`after`"),
    SecondOpinion: ("second_opinion", "`second_opinion`"),
    Web: ("web", "`web`"),
    Notify: ("notify", "`notify`"),
}
SCALARS = {str: "string", int: "integer", float: "number", Path: "path"}
PLURALS = {str: "strings", int: "integers", float: "numbers", Path: "paths"}


def _or(items: list[str], word: str = "or") -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {word} " + items[-1]


def _section_of(model: type[BaseModel]) -> tuple[str, str]:
    for cls in model.__mro__:
        if cls in SECTIONS:
            return SECTIONS[cls]
    raise KeyError(f"{model.__name__}: no section of the reference explains it (reference.SECTIONS)")


def _constraints(metadata: Iterable[Any]) -> list[Any]:
    """The annotated-types constraints, also those inside a nested `Field(...)`."""
    out: list[Any] = []
    for m in metadata:
        out += _constraints(m.metadata) if isinstance(m, FieldInfo) else [m]
    return out


def _num(x: Any) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _bounds(metadata: Iterable[Any], counted: str | None) -> str:
    """`, 64 to 10000`, `, at least 5`, `, 1 to 100 characters`, `, not empty`: the limits a value must keep."""
    low = high = None
    for c in _constraints(metadata):
        if isinstance(c, at.Ge):
            low = _num(c.ge)
        elif isinstance(c, at.Gt):
            low = f"over {_num(c.gt)}"
        elif isinstance(c, at.Le):
            high = _num(c.le)
        elif isinstance(c, at.Lt):
            high = f"under {_num(c.lt)}"
        elif isinstance(c, at.MinLen):
            low = str(c.min_length)
        elif isinstance(c, at.MaxLen):
            high = str(c.max_length)
        else:
            raise TypeError(f"no words for the constraint {c!r} (reference._bounds)")
    if counted and low == "1" and high is None:
        return ", not empty"
    if low is None and high is None:
        return ""
    if low is not None and high is not None:
        text = f"{low}, at most {high}" if low.startswith("over") else f"{low} to {high}"
    elif low is not None:
        text = low if low.startswith("over") else f"at least {low}"
    else:
        text = str(high) if str(high).startswith("under") else f"at most {high}"
    return f", {text}" + (f" {counted}" if counted else "")


def _counted(tp: Any) -> str | None:
    """What a length bound on a value of this type counts."""
    return "characters" if tp is str else "items" if get_origin(tp) in (list, tuple) else None


def _choices(tp: Any) -> list[str]:
    """The alternatives a value may take, in words; `None` is left out (a key left out is unset)."""
    origin = get_origin(tp)
    if tp is type(None):
        return []
    if origin is Annotated:
        inner, *meta = get_args(tp)
        return [_or(_choices(inner)) + _bounds(meta, _counted(inner))]
    if origin in (Union, types.UnionType):
        return [c for arg in get_args(tp) for c in _choices(arg)]
    if origin is Literal:
        return [f"`{v}`" for v in get_args(tp)]
    if tp is bool:
        return ["`true`", "`false`"]
    if origin in (list, tuple):
        item = get_args(tp)[0]
        if isinstance(item, type) and issubclass(item, BaseModel):
            anchor, title = _section_of(item)
            return [f"list of mappings (see [{title}](#{anchor}))"]
        return [f"list of {PLURALS[item]}" if item in PLURALS else f"list, each {_or(_choices(item))}"]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        anchor, title = _section_of(tp)
        return [f"a mapping (see [{title}](#{anchor}))"]
    if tp in SCALARS:
        return [SCALARS[tp]]
    raise TypeError(f"no readable name for the type {tp!r} (reference._choices)")


def type_text(field: FieldInfo) -> str:
    """A field's type as a person reads it: `integer, 64 to 10000`; `` `true`, `false` or `auto` ``."""
    return _or(_choices(field.annotation)) + _bounds(field.metadata, _counted(field.annotation))


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        if value.model_dump(exclude_defaults=True):
            raise ValueError(f"{value!r}: a model default that is not all its own defaults (reference.default_text)")
        if all(f.default is None for f in type(value).model_fields.values()):
            return "`{}`"
        anchor, title = _section_of(type(value))
        return f"each key's own (see [{title}](#{anchor}))"
    return f"`{_yaml(value)}`"


def cell(text: str) -> str:
    """Text that stays in one table cell: `|` escaped. A `|` inside a code span cannot be escaped so that both
    Python-Markdown (mkdocs) and GitHub render it, so it is refused: reword the description."""
    parts = " ".join(text.split()).split("`")
    for i, part in enumerate(parts):
        if i % 2 and "|" in part:
            raise ValueError(f"a `|` inside a code span breaks the table row: {text!r}")
    return "`".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def table(model: type[BaseModel], keys: Iterable[str] | None = None) -> list[str]:
    """One row per key (by default every field a config file may write, i.e. not `exclude`d): its type, default
    and description."""
    fields = model.model_fields
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key in keys if keys is not None else [k for k, f in fields.items() if not f.exclude]:
        field = fields[key]
        rows.append(_row(f"`{key}`", type_text(field), default_text(field), field.description or ""))
    return rows


def rule_file_refuses(key: str) -> bool:
    """Whether a `.handwatch.yaml` may not set this rule key: the config file's rule model takes it and the rule
    file's model does not (any value is refused there, even `null`)."""
    if key not in RuleFileOverride.model_fields:
        return True
    RuleOverride.model_validate({key: None})  # the config file takes it, or the comparison says nothing
    try:
        RuleFileOverride.model_validate({key: None})
    except ValidationError:
        return True
    return False


def rule_table() -> list[str]:
    """Rule keys as written (`RuleOverride`), with the built-in defaults they override (`Rule`)."""
    rows = [
        f"| key | type | default | description | in `{RULE_FILE}` |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, field in RuleOverride.model_fields.items():
        where = "no: config file only" if rule_file_refuses(key) else "yes"
        rows.append(_row(f"`{key}`", type_text(field), default_text(Rule.model_fields[key]), field.description or "", where))
    return rows


def render() -> str:
    """The whole page, as `COMMAND` writes it."""
    folder_keys = [k for k in Folder.model_fields if k not in RuleOverride.model_fields]
    refused = [f"`{k}`" for k in RuleOverride.model_fields if rule_file_refuses(k)]
    lines = [
        "# Configuration keys",
        "",
        "This page is generated from the pydantic models in `handwatch/config/schema.py` (with `preprocess.py` and "
        "`web.py` beside it), whose field descriptions are its text: change a description there, then regenerate "
        f"the page with `{COMMAND}`. A test fails when the two differ.",
        "",
        "The config file is YAML. Unknown keys are errors, never ignored; `~` and `$VARIABLES` expand in paths, and a "
        "relative path is taken from the config file's folder. `config/handwatch.yaml` is a commented example of "
        "every key. *Unset* means the key is left out.",
        "",
        "## Top-level keys",
        "",
        *table(Config),
        "",
        "## `endpoints[]`",
        "",
        "Each entry of `endpoints` is one OpenAI-compatible server (LM Studio, vLLM, Ollama, llama.cpp's server). "
        "Jobs go to the one with the most free capacity; one that is down is skipped until it answers again. A rule's "
        "`endpoint` key sends a folder's pages to the endpoints it names instead, and `second_opinion` names the one "
        "that reads pages in doubt again: both by the endpoint's `name`.",
        "",
        *table(Endpoint),
        "",
        "## `folders[]`",
        "",
        "Each entry of `folders` is a folder to watch: the keys below, plus any [rule key](#rule-keys), which "
        "overrides `defaults` for that folder and everything under it.",
        "",
        *table(Folder, folder_keys),
        "",
        "## Rule keys",
        "",
        f"Rule keys can be set in `defaults`, on a folder entry, or in a `{RULE_FILE}` file inside any watched folder "
        "or sub-folder, which overrides them for that subtree. The rule for a file is the built-in default ◀ "
        f"`defaults` ◀ the deepest folder entry containing it ◀ each `{RULE_FILE}` from that folder down to the "
        f"file's own, the nearest winning. {_or(refused, 'and')} decide how the whole watched folder is observed, so only "
        f"the config file may set them: a `{RULE_FILE}` that does is an error.",
        "",
        *rule_table(),
        "",
        "## `preprocess`",
        "",
        "The rule key `preprocess` is a mapping of these keys: how a page image is cleaned up before it is read. It "
        f"merges key by key, so a `{RULE_FILE}` can change one and keep the rest.",
        "",
        *table(Preprocess),
        "",
        "## `after`",
        "",
        "The rule key `after` is `keep` (the default: the original stays where it is) or a mapping with this key. DIR "
        "is a plain sub-folder, relative to the folder whose rule names it: the watched folder for `defaults` and "
        f"folder entries, the rule file's own folder for a `{RULE_FILE}`. It is never absolute, never contains `..`, "
        "and `~` and variables are not expanded there, so a rule file cannot reach outside its tree.",
        "",
        *table(MoveAfter),
        "",
        "## `second_opinion`",
        "",
        "The rule key `second_opinion` is an endpoint's `name`, or a mapping with these keys. The endpoint must not "
        "serve the folder's first reading: without `endpoint`, every endpoint but this one does. `second_opinion: "
        f"false` in a `{RULE_FILE}` turns it off for that subtree. See [Two readers](../two-readers.md).",
        "",
        *table(SecondOpinion),
        "",
        "## `web`",
        "",
        "The review page: a list of the files that need a person, each beside its original, search, `/metrics` and "
        "`/healthz`. `handwatch run` serves it when the config has `web:`; `handwatch web` serves it without the daemon.",
        "",
        *table(Web),
        "",
        "## `notify`",
        "",
        "Push notifications through apprise, batched: the first event after a quiet spell is sent at once, later ones "
        "together once `every` has passed. YAML reads a bare `on` key as `true`; handwatch accepts it either way.",
        "",
        *table(Notify),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()

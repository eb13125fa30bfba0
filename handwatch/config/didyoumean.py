"""For an unknown config key, the key that was probably meant: the closest one accepted at the same place,
or the place where that key belongs (a rule key written at the top level, say)."""

from __future__ import annotations

import difflib
import typing

from pydantic import BaseModel


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `list[Endpoint]` or `PreprocessOverride | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc` (list indexes and pydantic's union labels skipped)."""
    current: type[BaseModel] | None = root
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int) or part == current.__name__:
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _model_in(field.annotation)
    return current


def suggestion(root: type[BaseModel], loc: tuple, homes: dict[str, type[BaseModel]] | None = None) -> str | None:
    """What to say after "unknown key" for the key at `loc` (its last part), or None.
    `homes`: where keys of other models belong, {"defaults: or a folder entry": RuleOverride, …}."""
    key = str(loc[-1])
    parent = model_at(root, loc[:-1])
    if parent is None:
        return None
    known = list(parent.model_fields)
    lowered = {k.lower(): k for k in known}
    close = [lowered[key.lower()]] if key.lower() in lowered else difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    for where, model in (homes or {}).items():
        if model is not parent and key in model.model_fields:
            return f"`{key}` belongs under {where}"
    return None

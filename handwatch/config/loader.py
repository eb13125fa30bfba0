"""Load a config or rule file into the frozen models of `schema`; every error names its file and key path."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ValidationError

from handwatch.config import routing
from handwatch.config.schema import KEY_HOMES, SEARCH_PATHS, Config, RuleFileOverride, RuleOverride, expand_path
from handwatch.config.yamlfile import read_yaml
from handwatch.errors import ConfigError


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("MoveAfter", "SecondOpinion", "literal['keep']") or str(part).startswith(("function-", "literal[", "bool")):
            continue  # pydantic's union-branch labels are noise to a person
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


AFTER_KEY = re.compile(r"(?:^|\.)(after)(?:\.|$)")


def problems_of(exc: ValidationError, prefix: tuple = (), model: type[BaseModel] | None = None) -> list[str]:
    """One line per key path; an unknown key of `model` says which key was probably meant."""
    from handwatch.config.didyoumean import suggestion

    seen: dict[str, str] = {}
    for err in exc.errors():
        path = format_loc(prefix + tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            hint = suggestion(model, tuple(err["loc"]), KEY_HOMES) if model is not None else None
            msg = f"unknown key ({hint})" if hint else "unknown key"
        elif (after := AFTER_KEY.search(path)) and err["type"] == "value_error":
            path = path[: after.end(1)] + ".move"  # the move folder's own validator says why
            msg = msg.removeprefix("move: ")
        elif after := AFTER_KEY.search(path):
            path, msg = path[: after.end(1)], "must be keep or a mapping {move: DIR}"
        elif not err["loc"] and model is not None and msg.split(":")[0] in model.model_fields:
            path, msg = msg.split(": ", 1)  # a check across keys names the key it is about
        seen.setdefault(path, msg)  # one message per key path: union branches repeat themselves
    for k in [k for k in seen if k.endswith("after.move")]:
        seen.pop(k[: -len(".move")], None)  # the `keep` branch's complaint only hides the real one
    for k in [k for k in seen if ".second_opinion." in k]:
        seen.pop(k[: k.index(".second_opinion.") + len(".second_opinion")], None)  # likewise the `false` branch's
    return [f"{k}: {v}" for k, v in seen.items()]


NO_FOLDERS = (
    "folders: none configured, so handwatch has nothing to watch. Add one, e.g.\n"
    "  folders:\n    - path: ~/Sync/Camera\n"
    "(`handwatch once FILE` transcribes single files without any)"
)


def systemd_dir(variable: str) -> Path | None:
    """The first directory systemd made for the unit (`$STATE_DIRECTORY`, `$CONFIGURATION_DIRECTORY`:
    colon-separated, absolute), or None outside such a unit."""
    first = os.environ.get(variable, "").split(":")[0]
    return Path(first) if first.startswith("/") else None


def find_config(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("HANDWATCH_CONFIG")
    if env:
        return Path(env)
    managed = systemd_dir("CONFIGURATION_DIRECTORY")  # ConfigurationDirectory= in the unit
    if managed is not None and (managed / "config.yaml").exists():
        return managed / "config.yaml"
    for candidate in SEARCH_PATHS:
        p = Path(os.path.expanduser(candidate))
        if p.exists():
            return p
    raise ConfigError(
        "handwatch", [f"no configuration file: give -c FILE, set HANDWATCH_CONFIG, or create one of {', '.join(SEARCH_PATHS)}"]
    )


def load(path: str | os.PathLike) -> Config:
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["(top level): must be a mapping of keys"])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(str(path), problems_of(e, model=Config)) from None
    base = path.resolve().parent
    state_dir = cfg.state_dir
    if "state_dir" not in cfg.model_fields_set and (from_unit := systemd_dir("STATE_DIRECTORY")) is not None:
        state_dir = from_unit  # StateDirectory= in the unit
    folders = [f.model_copy(update={"path": expand_path(f.path, base)}) for f in cfg.folders]
    problems = []
    for i, f in enumerate(folders):
        for j, g in enumerate(folders[:i]):
            if f.path == g.path:
                problems.append(f"folders[{i}].path: same folder as folders[{j}]")
    problems += routing.config_problems(cfg)
    if problems:
        raise ConfigError(str(path), problems)
    return cfg.model_copy(update={"folders": folders, "state_dir": expand_path(state_dir, base), "source": str(path)})


def load_rule_file(path: Path) -> RuleOverride:
    data = read_yaml(path, untrusted=True)
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["(top level): must be a mapping of rule keys"])
    try:
        return RuleFileOverride.model_validate(data)
    except ValidationError as e:
        raise ConfigError(str(path), problems_of(e, model=RuleFileOverride)) from None

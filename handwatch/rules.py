"""Resolve the effective rule for a path: built-ins ◀ defaults ◀ folder entry ◀ `.handwatch.yaml` files, nearest wins."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from handwatch.config import RULE_FILE, Config, Folder, Rule, RuleOverride, expand_path, load_rule_file


@dataclass(frozen=True)
class Resolved:
    rule: Rule
    folder: Folder | None  # None: the file lies in no watched folder, so only `defaults` apply


def owning_folder(cfg: Config, path: Path) -> Folder | None:
    """The deepest configured folder that contains `path` (directly, or anywhere below when recursive)."""
    best: Folder | None = None
    for folder in cfg.folders:
        try:
            rel = path.relative_to(folder.path)
        except ValueError:
            continue
        recursive = folder.recursive if folder.recursive is not None else cfg.base_rule().recursive
        if not recursive and len(rel.parts) > 1:
            continue
        if best is None or len(folder.path.parts) > len(best.path.parts):
            best = folder
    return best


def rule_dirs(root: Path, path: Path) -> list[Path]:
    """Folders whose `.handwatch.yaml` may apply to `path`, outermost first (the root included)."""
    dirs = [root]
    for part in path.parent.relative_to(root).parts:
        dirs.append(dirs[-1] / part)
    return dirs


def resolve(cfg: Config, path: Path, overrides: Mapping[Path, RuleOverride]) -> Resolved:
    """Pure: `overrides` maps a folder to the rule file found in it; the shell supplies them."""
    folder = owning_folder(cfg, path)
    if folder is None:
        return Resolved(cfg.base_rule(), None)
    rule = cfg.folder_rule(folder)
    for d in rule_dirs(folder.path, path):
        if d in overrides:
            rule = rule.merged(overrides[d])
    return Resolved(rule, folder)


def matches(rule: Rule, rel: Path) -> bool:
    """`include`/`exclude` globs against the path relative to the watched folder and against the bare name."""
    rel_s, name = rel.as_posix(), rel.name

    def hit(patterns) -> bool:
        return any(fnmatch.fnmatch(rel_s, p) or fnmatch.fnmatch(name, p) for p in patterns)

    if rule.include and not hit(rule.include):
        return False
    return not hit(rule.exclude)


def managed_dirs(folder: Folder, rule: Rule) -> list[Path]:
    """Folders inside a watched folder that handwatch itself writes to (outputs, `after: move`): never inputs."""
    out = []
    parent = Path(rule.output).parent
    if str(parent) not in ("", "."):
        out.append(folder.path / parent)
    if not isinstance(rule.after, str):
        out.append(expand_path(rule.after.move, folder.path))
    return out


class RuleBook:
    """The shell around `resolve`: reads rule files, caching each by its size and mtime."""

    def __init__(self, cfg: Config, loader: Callable[[Path], RuleOverride] = load_rule_file):
        self.cfg = cfg
        self._loader = loader
        self._cache: dict[Path, tuple[tuple[int, int], RuleOverride]] = {}

    def _override(self, d: Path) -> RuleOverride | None:
        f = d / RULE_FILE
        try:
            st = os.stat(f)
        except OSError:
            self._cache.pop(d, None)
            return None
        key = (st.st_size, st.st_mtime_ns)
        hit = self._cache.get(d)
        if hit and hit[0] == key:
            return hit[1]
        value = self._loader(f)  # ConfigError propagates: the caller reports the file and key path
        self._cache[d] = (key, value)
        return value

    def resolve(self, path: Path) -> Resolved:
        path = Path(os.path.abspath(path))
        folder = owning_folder(self.cfg, path)
        overrides: dict[Path, RuleOverride] = {}
        if folder is not None:
            for d in rule_dirs(folder.path, path):
                ov = self._override(d)
                if ov is not None:
                    overrides[d] = ov
        return resolve(self.cfg, path, overrides)

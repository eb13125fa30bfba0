"""Resolve the effective rule for a path: built-ins ◀ defaults ◀ folder entry ◀ `.handwatch.yaml` files, nearest wins."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from handwatch.config import routing
from handwatch.config.loader import load_rule_file
from handwatch.config.schema import RULE_FILE, Config, Folder, MoveAfter, Rule, RuleOverride
from handwatch.errors import ConfigError


@dataclass(frozen=True)
class Resolved:
    rule: Rule
    folder: Folder | None  # None: the file lies in no watched folder, so only `defaults` apply
    move_to: Path | None = None  # where `after: move` sends the original, relative to the rule that said so
    managed: tuple[Path, ...] = ()  # every move folder a rule on the way to this path names: never inputs

    def root(self, path: Path) -> Path:
        """The folder nothing handwatch writes for `path` may leave: its watched folder, or, for a file in none
        (`once`), the file's own folder."""
        return self.folder.path if self.folder else path.parent

    def in_managed(self, path: Path) -> bool:
        return any(path == d or d in path.parents for d in self.managed)


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
    """Pure: `overrides` maps a folder to the rule file found in it; the shell supplies them.

    A move folder is taken relative to the folder whose rule names it: the watched folder for
    `defaults` and folder entries, the rule file's own folder for a `.handwatch.yaml`. Every move
    folder named on the way down is remembered, even one a deeper rule file overrides, so a moved
    original is never an input again."""
    folder = owning_folder(cfg, path)
    if folder is None:
        return Resolved(cfg.base_rule(), None)
    rule = cfg.folder_rule(folder)
    after_base = folder.path
    managed = [folder.path / rule.after.move] if isinstance(rule.after, MoveAfter) else []
    routed: Path | None = None  # the nearest rule file that names endpoints: it answers for them
    for d in rule_dirs(folder.path, path):
        ov = overrides.get(d)
        if ov is None:
            continue
        rule = rule.merged(ov)
        if ov.endpoint is not None or ov.second_opinion is not None:
            routed = d
        if ov.after is not None:
            after_base = d
            if isinstance(ov.after, MoveAfter):
                managed.append(d / ov.after.move)
    if routed is not None:
        wrong = routing.problems(rule, cfg.endpoints) or routing.narrowing(rule, cfg.folder_rule(folder), cfg.endpoints)
        if wrong:
            raise ConfigError(str(routed / RULE_FILE), wrong)
    move_to = after_base / rule.after.move if isinstance(rule.after, MoveAfter) else None
    return Resolved(rule, folder, move_to, tuple(dict.fromkeys(managed)))


def matches(rule: Rule, rel: Path) -> bool:
    """`include`/`exclude` globs against the path relative to the watched folder and against the bare name."""
    rel_s, name = rel.as_posix(), rel.name

    def hit(patterns) -> bool:
        return any(fnmatch.fnmatch(rel_s, p) or fnmatch.fnmatch(name, p) for p in patterns)

    if rule.include and not hit(rule.include):
        return False
    return not hit(rule.exclude)


def managed_dirs(folder: Folder, rule: Rule) -> list[Path]:
    """Folders the folder-level rule makes handwatch write to (outputs, `after: move`): never inputs.
    Rule files can name more; `Resolved.managed` has those for each path."""
    out = []
    parent = Path(rule.output).parent
    if str(parent) not in ("", "."):
        out.append(folder.path / parent)
    if isinstance(rule.after, MoveAfter):
        out.append(folder.path / rule.after.move)
    return out


class RuleBook:
    """The shell around `resolve`: reads rule files, caching each (and each one's error) by its identity."""

    def __init__(self, cfg: Config, loader: Callable[[Path], RuleOverride] = load_rule_file):
        self.cfg = cfg
        self._loader = loader
        self._cache: dict[Path, tuple[tuple[int, ...], RuleOverride | ConfigError]] = {}

    def _override(self, d: Path) -> RuleOverride | None:
        f = d / RULE_FILE
        try:
            st = os.lstat(f)
        except OSError:
            self._cache.pop(d, None)
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = self._cache.get(d)
        if hit is None or hit[0] != key:
            try:
                hit = (key, self._loader(f))
            except ConfigError as e:  # remembered too: a broken file is not re-read for every path below it
                hit = (key, e)
            self._cache[d] = hit
        if isinstance(hit[1], ConfigError):
            raise hit[1]  # the caller reports the file and key path
        return hit[1]

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

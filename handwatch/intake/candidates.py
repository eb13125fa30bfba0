"""Which paths are inputs, and under which rule: the one place that says so for the daemon, `scan` and `once`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from handwatch.config import rules
from handwatch.config.rules import Resolved
from handwatch.config.schema import Config
from handwatch.errors import ConfigError
from handwatch.intake.settle import ignored_reason
from handwatch.intake.watch import WatchSpec, walk
from handwatch.safefs import inside

LINK_OUT = "a link to a file outside the watched folder"


class Candidates:
    def __init__(self, cfg: Config, book: rules.RuleBook):
        self.cfg, self.book = cfg, book

    def resolve(self, path: Path) -> tuple[Resolved | None, str | None]:
        """(resolved rule, None) for an input; (None, reason) for a path that is not one. A broken rule
        file still yields the path (with the folder's rule) so its job fails with the rule file's reason."""
        folder = rules.owning_folder(self.cfg, path)
        if folder is None:
            return None, "outside the watched folders"
        rel = path.relative_to(folder.path)
        why = ignored_reason(rel)
        if why:
            return None, why
        try:
            resolved = self.book.resolve(path)
        except ConfigError:
            resolved = rules.resolve(self.cfg, path, {})
        out_dir = Path(resolved.rule.output).parent.parts
        if out_dir and rel.parent.parts[-len(out_dir) :] == out_dir:
            return None, "inside a folder handwatch writes Markdown to"
        if resolved.in_managed(path):
            return None, "inside a folder handwatch moves originals to"
        if not rules.matches(resolved.rule, rel):
            return None, "excluded by include/exclude"
        if not inside(path, folder.path):
            return None, LINK_OUT
        return resolved, None

    def rule(self, path: Path):
        resolved, why = self.resolve(path)
        return (resolved.rule if resolved else None), why

    def specs(self) -> list[WatchSpec]:
        out = []
        for f in self.cfg.folders:
            r = self.cfg.folder_rule(f)
            out.append(WatchSpec(f.path, r.recursive, r.poll, poll_interval_s=max(1.0, min(5.0, r.settle_s))))
        return out

    def walk(self) -> Iterator[Path]:
        for f in self.cfg.folders:
            r = self.cfg.folder_rule(f)
            yield from walk(f.path, r.recursive, set(rules.managed_dirs(f, r)))

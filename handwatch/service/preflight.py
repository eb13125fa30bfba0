"""Problems the daemon can see before it starts (or reloads): configuration errors now, not a failure of every file later.

A folder whose engine is tesseract with no language pack for its languages would otherwise fail each
of its files with the same reason, forever, while systemd shows the service as running. Named by key
path, like every other configuration error, so the operator knows which line to change."""

from __future__ import annotations

from collections.abc import Callable

from handwatch.config.loader import NO_FOLDERS
from handwatch.config.schema import Config, Rule
from handwatch.errors import ConfigError


def problems(cfg: Config, installed: Callable[[], set[str] | None]) -> list[str]:
    """`installed()` gives Tesseract's languages, or None when it is not installed (asked at most once)."""
    from handwatch.transcribe.tesseract import tess_langs

    out: list[str] = []
    known: list[set[str] | None] = []

    def langs() -> set[str] | None:
        if not known:
            known.append(installed())
        return known[0]

    places: list[tuple[str, Rule, object]] = [(f"folders[{i}]", cfg.folder_rule(f), f) for i, f in enumerate(cfg.folders)]
    if not cfg.folders:
        places = [("defaults", cfg.base_rule(), cfg.defaults)]

    def key(where: str, written, name: str) -> str:
        """The line to change: the folder's own key, else the default it inherits."""
        if getattr(written, name, None) is None and getattr(cfg.defaults, name, None) is not None:
            where = "defaults"
        return f"{where}.{name}"

    for where, rule, written in places:
        if rule.engine != "tesseract":
            continue
        if rule.translate_to:
            out.append(
                f"{key(where, written, 'translate_to')}: {rule.translate_to}: translation needs engine: vlm "
                "(Tesseract does not translate)"
            )
        have = langs()
        if have is None:
            out.append(f"{key(where, written, 'engine')}: tesseract is not installed (apt-get install tesseract-ocr)")
            continue
        missing = [x for x in tess_langs(rule.languages).split("+") if x not in have]
        if missing:
            pkgs = " ".join(f"tesseract-ocr-{m.replace('_', '-')}" for m in missing)
            out.append(f"{key(where, written, 'languages')}: no Tesseract data for {', '.join(missing)} (apt-get install {pkgs})")
    out = list(dict.fromkeys(out))  # folders inheriting one default share one message
    return out


def check(cfg: Config, installed: Callable[[], set[str] | None] | None = None) -> None:
    """For the daemon, at start and at each reload: a config it could not start with is refused."""
    if not cfg.folders:
        raise ConfigError(cfg.source, [NO_FOLDERS])
    if installed is None:
        from handwatch.transcribe.tesseract import installed_languages

        installed = installed_languages
    found = problems(cfg, installed)
    if found:
        raise ConfigError(cfg.source, found)

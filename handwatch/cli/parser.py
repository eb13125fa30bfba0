"""The command line's grammar: every command, its options, its help text and examples."""

from __future__ import annotations

import argparse

from handwatch import __version__

EXAMPLE_CONFIG = "-c /etc/handwatch/config.yaml"


class _Help(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal; the examples kept line by line, as typed."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _sub(sub, common, name: str, summary: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does, in full, and shows how it is called."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return sub.add_parser(name, parents=[common], help=summary, description=description, epilog=epilog, formatter_class=_Help)


def build() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="config file (default: $HANDWATCH_CONFIG, ~/.config/handwatch/config.yaml, /etc/handwatch/config.yaml)",
    )
    common.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=argparse.SUPPRESS,
        help="log this much and more (default: log_level in the config, else info)",
    )
    p = argparse.ArgumentParser(
        prog="handwatch",
        parents=[common],
        description="Watch folders of handwriting photos and scans; write their transcriptions as Markdown.",
        epilog="Start with `handwatch check`, then `handwatch scan` for what is already there, "
        "then `handwatch run` (or the systemd unit). `handwatch COMMAND --help` says more.",
    )
    p.add_argument("--version", action="version", version=f"handwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _sub(
        sub,
        common,
        "run",
        "the daemon, in the foreground (systemd runs this)",
        "Watch every configured folder and transcribe each photo or PDF once it is completely written, "
        "until stopped (SIGTERM or Ctrl-C). Only one daemon may use a state_dir at a time.",
        [f"handwatch {EXAMPLE_CONFIG} run", "systemctl start handwatch   # the same, as a service"],
    )
    once = _sub(
        sub,
        common,
        "once",
        "transcribe these files now; print each output path",
        "Transcribe the named files now, with the rules of the folder each lies in (or the defaults), "
        "write their Markdown beside them and print each Markdown's path. A file judged not a document "
        "(where `documents_only` is on) prints `skipped PATH: reason` and exits 0; `--anyway` transcribes it. "
        "For a whole folder use `handwatch scan`.",
        ["handwatch once ~/Sync/Camera/IMG_1234.jpg", "handwatch once --anyway ~/Sync/Camera/IMG_1235.heic"],
    )
    once.add_argument(
        "--anyway", action="store_true", help="transcribe even a file the document check skips (a photo); the choice sticks"
    )
    once.add_argument("paths", nargs="+", metavar="PATH")
    scan = _sub(
        sub,
        common,
        "scan",
        "process everything in the watched folders without a current transcription, then exit",
        "Transcribe every file in the watched folders that has no current Markdown, waiting for files "
        "still being written, then summarise: transcribed, reused, failed, waiting, already done, "
        "skipped and why, where the Markdown went, which files need review. A progress bar shows on a "
        "terminal.",
        [f"handwatch {EXAMPLE_CONFIG} scan", "handwatch scan --no-progress 2> scan.log"],
    )
    scan.add_argument("--no-progress", action="store_true", help="no progress bar")
    _sub(
        sub,
        common,
        "check",
        "validate the config and probe every endpoint",
        "Check everything a first run needs and say what is wrong and how to fix it: each folder (exists, "
        "readable, writable, filesystem and watch mode, effective rule), Tesseract's language data for the "
        "folders that use it, and each endpoint (reachable, models listed, the configured model present, a "
        "picture of a number read back, the tokens one page costs against the server's context). Exits "
        "with the worst problem's code: 0 all well, 69 an endpoint, 78 the configuration.",
        [f"handwatch {EXAMPLE_CONFIG} check", "sudo -u handwatch handwatch -c /etc/handwatch/config.yaml check"],
    )
    status = _sub(
        sub,
        common,
        "status",
        "daemon, queue counts per folder, failures, files needing review, endpoint health",
        "Say whether a daemon is running (pid, since when, version), the queue counts overall and "
        "per folder, endpoint health, and the files waiting, failed or needing review, with reasons. "
        "Reads the state database only; `check` probes the endpoints.",
        ["handwatch status", "handwatch status --json | jq .needs_review"],
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    retry = _sub(
        sub,
        common,
        "retry",
        "put failed files (or the named ones; --anyway: skipped ones too) back in the queue",
        "Put every failed file back in the queue, or only the named ones (originals or their "
        "Markdown), whatever their state (a named skipped file is checked again). `--anyway` also takes "
        "skipped files and has each transcribed whatever the document check says, from now on. A running "
        "daemon picks them up; or run `handwatch scan`. A path handwatch has no record of is reported and exits 65.",
        ["handwatch retry", "handwatch retry ~/Sync/Camera/IMG_1234.jpg", "handwatch retry --anyway ~/Sync/Camera/IMG_1235.heic"],
    )
    retry.add_argument(
        "--anyway",
        action="store_true",
        help="also skipped files, transcribed whatever the document check says (the choice sticks for each file)",
    )
    retry.add_argument("paths", nargs="*", metavar="PATH")
    web = _sub(
        sub,
        common,
        "web",
        "serve the review page (also served by run when the config has web:)",
        "Serve the review page (files needing a person, search, /metrics, /healthz) without the daemon.",
        ["handwatch web", "handwatch web --listen 127.0.0.1:9000", "handwatch web --hash-password"],
    )
    web.add_argument("--listen", metavar="HOST:PORT", help="address to listen on instead of web.listen (default 127.0.0.1:8765)")
    web.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (twice on a terminal, else one line of standard input) and print its hash for web.password_hash",
    )
    _sub(
        sub,
        common,
        "reindex",
        "rebuild the search index from the Markdown handwatch wrote",
        "Read every Markdown file handwatch wrote again and rebuild the search index (it is kept up to date "
        "on its own; this is for a database restored from a backup).",
        ["handwatch reindex"],
    )
    redo = _sub(
        sub,
        common,
        "redo",
        "transcribe again the files whose model, prompt, preprocessing or rule changed; never over a person's edit",
        "Transcribe again every file whose model, prompt, preprocessing or rule (review thresholds "
        "included) differs from what the current config would use. An edited Markdown is never "
        "overwritten: it is reported as a conflict.",
        ["handwatch redo --dry-run --folder ~/Scans", "handwatch redo --needs-review"],
    )
    _sub(
        sub,
        common,
        "unit",
        "print a systemd drop-in for this config: the folders writable, their groups, this program",
        "Print a systemd drop-in for the system unit that makes this config's folders writable under "
        "ProtectSystem=strict, adds their groups to SupplementaryGroups= and runs this handwatch program.",
        ["handwatch -c /etc/handwatch/config.yaml unit > /etc/systemd/system/handwatch.service.d/folders.conf"],
    )
    redo.add_argument("--dry-run", action="store_true", help="list what would be redone and why; change nothing")
    redo.add_argument("--folder", metavar="DIR", help="only files in this folder (a watched folder or inside one)")
    redo.add_argument("--needs-review", action="store_true", help="only files whose Markdown says needs_review: true")
    return p

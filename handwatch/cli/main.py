"""Argument parsing; the only place that prints for people and turns errors into exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

from handwatch import __version__, log
from handwatch.errors import (
    EX_CONFIG,
    EX_DATAERR,
    EX_OK,
    EX_SOMEFAILED,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    ConfigError,
    EngineUnavailable,
    HandwatchError,
    InputError,
    NotReady,
)

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


def _parser() -> argparse.ArgumentParser:
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
        "write their Markdown beside them and print each Markdown's path. For a whole folder use "
        "`handwatch scan`.",
        ["handwatch once ~/Sync/Camera/IMG_1234.jpg", "handwatch once scan-1.pdf scan-2.pdf"],
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
        "put failed files (or the named ones) back in the queue",
        "Put every failed file back in the queue, or only the named ones (originals or their "
        "Markdown), whatever their state. A running daemon picks them up; or run `handwatch scan`. "
        "A path handwatch has no record of is reported and exits 65.",
        ["handwatch retry", "handwatch retry ~/Sync/Camera/IMG_1234.jpg"],
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


def _err(msg: str) -> None:
    _line(f"handwatch: {msg}")


def _line(text: str) -> None:
    """One line to stderr in one write, so log lines from worker threads cannot split it."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _out(*args, **kwargs) -> None:
    """print(), but a reader that went away (`status | head`) ends the output, not the command."""
    try:
        print(*args, **kwargs)
    except BrokenPipeError:
        _silence(kwargs.get("file") or sys.stdout)


def _silence(stream) -> None:
    """Point a closed pipe's descriptor at /dev/null, so later writes and the flush at exit are no error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # stdout or stderr closed under us: nothing left to tell anyone
        _silence(sys.stdout)
        _silence(sys.stderr)
        return EX_OK


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return EX_USAGE if e.code not in (0, None) else EX_OK
    from handwatch.config import loader
    from handwatch.prepare import alloc

    if args.command == "web" and args.hash_password:
        return cmd_hash_password()
    alloc.keep_image_buffers()
    streams = sys.stdout, sys.stderr
    cfg = None
    try:
        # No key or password reaches a terminal, a pipe or the journal: URL passwords from the start (a
        # config error may quote a URL), the config's secrets once it is read.
        sys.stdout, sys.stderr = (log.RedactingStream(s, log.Redactor()) for s in streams)
        cfg = loader.load(loader.find_config(getattr(args, "config", None)))
        redactor = log.Redactor(cfg.secrets())
        sys.stdout, sys.stderr = (log.RedactingStream(s, redactor) for s in streams)
        log.setup(getattr(args, "log_level", None) or cfg.log_level, daemon=args.command == "run", secrets=cfg.secrets())
        if args.command in ("run", "scan") and not cfg.folders:
            raise ConfigError(cfg.source, [loader.NO_FOLDERS])
        return COMMANDS[args.command](cfg, args)
    except ConfigError as e:
        for line in e.lines():
            print(f"config error: {line}", file=sys.stderr)
        return EX_CONFIG
    except EngineUnavailable as e:
        _err(f"endpoint unavailable: {e}")
        return EX_UNAVAILABLE
    except HandwatchError as e:
        _err(str(e))
        return e.exit_code
    except sqlite3.OperationalError as e:
        from handwatch.store.state import BUSY_TIMEOUT_S, is_busy

        if not is_busy(e):
            raise

        where = f" {cfg.state_dir / 'state.sqlite3'}" if cfg is not None else ""
        _err(
            f"the state database{where} is locked: another process held it longer than handwatch waits "
            f"({BUSY_TIMEOUT_S} s); try again later"
        )
        return EX_TEMPFAIL  # temporary, like another daemon holding the state directory
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout, sys.stderr = streams


def cmd_once(cfg, args) -> int:
    from handwatch.safefs import Unsafe, file_sig, sha256_file
    from handwatch.service.pipeline import Pipeline
    from handwatch.store.jobs import JobQueue
    from handwatch.store.state import StateDB

    db = StateDB(cfg.state_dir)
    queue = JobQueue(db)
    pipeline = Pipeline(cfg, db)
    codes: list[int] = []
    for raw in args.paths:
        path = Path(os.path.abspath(raw))
        sig = file_sig(path)
        sha = None
        try:
            if path.is_dir():
                raise InputError("is a folder: use `handwatch scan` for the watched folders, or list the files")
            if sig is None or not path.is_file():
                raise InputError("no such file" if not os.path.lexists(path) else "not a regular file")
            sha = sha256_file(path)
            outcome = pipeline.process(path, sha, sig)
            if outcome.source == path:  # a moved original (`after: move`) leaves no job behind
                queue.record(path, sha, sig, "done", output=outcome.output)
            _out(outcome.output, flush=True)
        except (InputError, NotReady, Unsafe) as e:
            _err(f"{raw}: {e.strerror if isinstance(e, Unsafe) else e}")
            if sha is not None and sig is not None:
                queue.record(path, sha, sig, "failed", reason=str(e))
            codes.append(EX_DATAERR)
        except (ConfigError, EngineUnavailable):
            raise  # every remaining file would fail the same way
        except HandwatchError as e:
            _err(f"{raw}: {e}")
            codes.append(EX_SOMEFAILED)
    if not codes:
        return EX_OK
    return EX_DATAERR if all(c == EX_DATAERR for c in codes) else EX_SOMEFAILED


LEVELS = {"ok": "ok   ", "note": "note ", "warn": "WARN ", "error": "ERROR"}


def cmd_check(cfg, args) -> int:
    from handwatch.cli import check

    _out(f"checking {cfg.source}", flush=True)
    found: list = []
    for f in check.run(cfg):
        found.append(f)
        _out(f"{LEVELS[f.level]} {f.subject}: {f.text}", flush=True)
    code = check.exit_code(found)
    errors = sum(f.level == "error" for f in found)
    warnings = sum(f.level == "warn" for f in found)
    if errors:
        _out(f"check: {errors} error(s), {warnings} warning(s): fix the errors above (exit {code})")
    else:
        _out("check: config ok, everything answers" + (f" ({warnings} warning(s) above)" if warnings else ""))
    return code


def cmd_status(cfg, args) -> int:
    from handwatch.cli import status

    data = status.gather(cfg)
    for line in [json.dumps(data, indent=2)] if args.json else status.lines(data):
        _out(line)
    return EX_OK


def cmd_retry(cfg, args) -> int:
    from handwatch.config.rules import owning_folder
    from handwatch.store.jobs import RUNNING, JobQueue
    from handwatch.store.state import StateDB

    queue = JobQueue(StateDB(cfg.state_dir))
    if not args.paths:
        _out(f"{queue.retry(None)} file(s) back in the queue")
        return EX_OK
    known, code = [], EX_OK
    for raw in args.paths:
        path = Path(os.path.abspath(os.path.expanduser(raw)))
        state = queue.state_of(path)
        if state is None and (source := queue.source_of(path)) is not None:
            path = source  # the Markdown was named: retry its original
            state = queue.state_of(path)
        if state is None:
            if not os.path.lexists(path):
                why = "no such file"
            elif owning_folder(cfg, path) is None:
                why = f"not in a watched folder; `handwatch once {raw}` transcribes it"
            else:
                why = f"not seen yet; `handwatch scan` takes it, or `handwatch once {raw}` now"
            _err(f"{raw}: handwatch has no record of this file ({why})")
            code = EX_DATAERR
        elif state["state"] == RUNNING:
            _err(f"{raw}: being transcribed right now; nothing to retry")
        else:
            known.append(path)
    n = queue.retry(known) if known else 0
    _out(f"{n} file(s) back in the queue")
    return code


def cmd_redo(cfg, args) -> int:
    from handwatch.cli import redo
    from handwatch.store.state import StateDB

    folder = None
    if args.folder:
        folder = Path(os.path.abspath(os.path.expanduser(args.folder)))
        if not any(redo.inside(folder, f.path) or redo.inside(f.path, folder) for f in cfg.folders):
            _err(f"--folder {args.folder}: not a watched folder, nor inside or around one")
            return EX_USAGE
    db = StateDB(cfg.state_dir)
    the_plan = redo.plan(cfg, db, folder, args.needs_review)
    todo, conflicts, skipped = the_plan.of(redo.REDO), the_plan.of(redo.CONFLICT), the_plan.of(redo.SKIP)
    for item in todo if args.dry_run else []:
        _out(f"would redo {item.source}: {item.why}")
    for item in conflicts:
        _out(f"conflict {item.source}: {item.why}")
    for item in skipped:
        _out(f"skipped {item.source}: {item.why}")
    for note in the_plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        _out(f"{len(todo)} to redo, {len(conflicts)} conflict(s), {len(skipped)} skipped")
        return EX_OK

    def progress(k: int, n: int, item, outcome: str, reason: str | None) -> None:
        said = {"done": "redone", "failed": "failed", "waiting": "waiting"}.get(outcome, outcome)
        _line(f"[{k}/{n}] {said} {item.source}" + (f": {reason}" if reason else f" ({item.why})"))

    redo.forget_gone(db, skipped)
    summary = redo.run(cfg, todo, progress)
    for path in summary.busy:
        _out(f"skipped {path}: being transcribed by another process right now")
    print(
        f"redo: {summary.redone} transcribed again, {len(summary.failed)} failed, {len(summary.waiting)} waiting, "
        f"{len(conflicts)} conflict(s), {len(skipped) + len(summary.busy)} skipped",
        file=sys.stderr,
    )
    if summary.failed or conflicts:
        return EX_SOMEFAILED
    return EX_UNAVAILABLE if summary.unavailable else EX_OK


def cmd_run(cfg, args) -> int:
    from handwatch.service.daemon import Daemon

    return Daemon(cfg, log_level=getattr(args, "log_level", None)).run()


def cmd_scan(cfg, args) -> int:
    from handwatch.cli import progress
    from handwatch.cli.scan import scan
    from handwatch.cli.status import needs_review
    from handwatch.store.state import StateDB

    summary = scan(cfg, progress.bar_for(not args.no_progress and sys.stderr.isatty(), cfg.log_level))
    review = needs_review(StateDB(cfg.state_dir), summary.outputs()) if summary.outputs() else []
    for line in summary.lines(review):
        _out(line, file=sys.stderr)
    return summary.exit_code()


def cmd_hash_password() -> int:
    import getpass

    from handwatch.web.security import hash_password

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            _err("the two passwords differ")
            return EX_USAGE
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if len(first) < 8:
        _err("use a password of at least 8 characters")
        return EX_USAGE
    _out(hash_password(first))
    return EX_OK


def cmd_web(cfg, args) -> int:
    from pydantic import ValidationError

    from handwatch.config.loader import problems_of
    from handwatch.config.schema import Web
    from handwatch.web.server import WebServer

    if args.listen:
        try:
            web = Web.model_validate({**(cfg.web.model_dump(exclude_none=True) if cfg.web else {}), "listen": args.listen})
        except ValidationError as e:
            raise ConfigError("--listen", problems_of(e, model=Web)) from None
        cfg = cfg.model_copy(update={"web": web})
    WebServer(cfg).run()
    return EX_OK


def cmd_reindex(cfg, args) -> int:
    from handwatch.publish.index import SearchIndex
    from handwatch.safefs import inside
    from handwatch.store.state import StateDB

    folders = [f.path for f in cfg.folders]
    indexed, removed = SearchIndex(StateDB(cfg.state_dir)).rebuild(lambda p: any(inside(p, f) for f in folders))
    _out(f"search index: {indexed} file(s) indexed, {removed} removed")
    return EX_OK


def cmd_unit(cfg, args) -> int:
    from handwatch.service.unit import drop_in

    _out(drop_in(cfg), end="")
    return EX_OK


COMMANDS = {
    "once": cmd_once,
    "check": cmd_check,
    "status": cmd_status,
    "retry": cmd_retry,
    "run": cmd_run,
    "scan": cmd_scan,
    "web": cmd_web,
    "reindex": cmd_reindex,
    "redo": cmd_redo,
    "unit": cmd_unit,
}

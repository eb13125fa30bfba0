"""Argument parsing; the only place that prints for people and turns errors into exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

from handwatch import log
from handwatch.cli import once
from handwatch.cli import parser as parser_mod
from handwatch.cli.console import err, err_line, out, silence
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
)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # stdout or stderr closed under us: nothing left to tell anyone
        silence(sys.stdout)
        silence(sys.stderr)
        return EX_OK


def _main(argv: list[str] | None) -> int:
    parser = parser_mod.build()
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
        err(f"endpoint unavailable: {e}")
        return EX_UNAVAILABLE
    except HandwatchError as e:
        err(str(e))
        return e.exit_code
    except sqlite3.OperationalError as e:
        from handwatch.store.state import BUSY_TIMEOUT_S, is_busy

        if not is_busy(e):
            raise

        where = f" {cfg.state_dir / 'state.sqlite3'}" if cfg is not None else ""
        err(
            f"the state database{where} is locked: another process held it longer than handwatch waits "
            f"({BUSY_TIMEOUT_S} s); try again later"
        )
        return EX_TEMPFAIL  # temporary, like another daemon holding the state directory
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout, sys.stderr = streams


LEVELS = {"ok": "ok   ", "note": "note ", "warn": "WARN ", "error": "ERROR"}


def cmd_check(cfg, args) -> int:
    from handwatch.cli import check

    out(f"checking {cfg.source}", flush=True)
    found: list = []
    for f in check.run(cfg):
        found.append(f)
        out(f"{LEVELS[f.level]} {f.subject}: {f.text}", flush=True)
    code = check.exit_code(found)
    errors = sum(f.level == "error" for f in found)
    warnings = sum(f.level == "warn" for f in found)
    if errors:
        out(f"check: {errors} error(s), {warnings} warning(s): fix the errors above (exit {code})")
    else:
        out("check: config ok, everything answers" + (f" ({warnings} warning(s) above)" if warnings else ""))
    return code


def cmd_status(cfg, args) -> int:
    from handwatch.cli import status

    data = status.gather(cfg)
    for line in [json.dumps(data, indent=2)] if args.json else status.lines(data):
        out(line)
    return EX_OK


def cmd_retry(cfg, args) -> int:
    from handwatch.config.rules import owning_folder
    from handwatch.store.jobs import RUNNING, JobQueue
    from handwatch.store.state import StateDB

    queue = JobQueue(StateDB(cfg.state_dir))
    if not args.paths:
        out(f"{queue.retry(None, args.anyway)} file(s) back in the queue")
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
            err(f"{raw}: handwatch has no record of this file ({why})")
            code = EX_DATAERR
        elif state["state"] == RUNNING:
            err(f"{raw}: being transcribed right now; nothing to retry")
        else:
            known.append(path)
    n = queue.retry(known, args.anyway) if known else 0
    out(f"{n} file(s) back in the queue")
    return code


def cmd_redo(cfg, args) -> int:
    from handwatch.cli import redo
    from handwatch.store.state import StateDB

    folder = None
    if args.folder:
        folder = Path(os.path.abspath(os.path.expanduser(args.folder)))
        if not any(redo.inside(folder, f.path) or redo.inside(f.path, folder) for f in cfg.folders):
            err(f"--folder {args.folder}: not a watched folder, nor inside or around one")
            return EX_USAGE
    db = StateDB(cfg.state_dir)
    the_plan = redo.plan(cfg, db, folder, args.needs_review)
    todo, conflicts, skipped = the_plan.of(redo.REDO), the_plan.of(redo.CONFLICT), the_plan.of(redo.SKIP)
    for item in todo if args.dry_run else []:
        if item.remove:
            out(f"would remove {item.output}: its original is {item.why}")
        elif item.why == redo.UNCHECKED:
            out(f"would check {item.source}: {item.why} ({item.output.name})")
        else:
            out(f"would redo {item.source}: {item.why}")
    for item in conflicts:
        out(f"conflict {item.source}: {item.why}")
    for item in skipped:
        out(f"skipped {item.source}: {item.why}")
    for note in the_plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        out(f"{len(todo)} to redo, {len(conflicts)} conflict(s), {len(skipped)} skipped")
        return EX_OK

    def progress(k: int, n: int, item, outcome: str, reason: str | None) -> None:
        said = {"done": "redone", "failed": "failed", "waiting": "waiting"}.get(outcome, outcome)
        err_line(f"[{k}/{n}] {said} {item.source}" + (f": {reason}" if reason else f" ({item.why})"))

    redo.forget_gone(db, skipped)
    summary = redo.run(cfg, todo, progress)
    for path in summary.busy:
        out(f"skipped {path}: being transcribed by another process right now")
    for path, why in summary.removed:
        out(f"removed {path}: its original is {why}")
    for path, why in summary.kept:
        out(f"kept {path}: its original is not a document, but {why}")
    print(
        f"redo: {summary.redone} transcribed again, "
        + (f"{len(summary.removed)} removed (not documents), " if summary.removed else "")
        + f"{len(summary.failed)} failed, {len(summary.waiting)} waiting, "
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
        out(line, file=sys.stderr)
    return summary.exit_code()


def cmd_hash_password() -> int:
    import getpass

    from handwatch.web.security import hash_password

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            err("the two passwords differ")
            return EX_USAGE
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if len(first) < 8:
        err("use a password of at least 8 characters")
        return EX_USAGE
    out(hash_password(first))
    return EX_OK


def cmd_web(cfg, args) -> int:
    from pydantic import ValidationError

    from handwatch.config.loader import problems_of
    from handwatch.config.web import Web
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
    out(f"search index: {indexed} file(s) indexed, {removed} removed")
    return EX_OK


def cmd_unit(cfg, args) -> int:
    from handwatch.service.unit import drop_in

    out(drop_in(cfg), end="")
    return EX_OK


COMMANDS = {
    "once": once.cmd_once,
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

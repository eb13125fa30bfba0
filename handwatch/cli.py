"""Argument parsing; the only place that prints for people and turns errors into exit codes."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from handwatch import __version__, log
from handwatch.errors import (
    EX_CONFIG, EX_DATAERR, EX_OK, EX_SOMEFAILED, EX_UNAVAILABLE, EX_USAGE,
    ConfigError, EngineUnavailable, HandwatchError, InputError, NotReady,
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="config file (default: $HANDWATCH_CONFIG, ~/.config/handwatch/config.yaml, /etc/handwatch/config.yaml)")
    common.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=argparse.SUPPRESS,
                        help="log this much and more (default: log_level in the config, else info)")
    p = argparse.ArgumentParser(prog="handwatch", parents=[common],
                                description="Watch folders of handwriting photos and scans; write their transcriptions as Markdown.")
    p.add_argument("--version", action="version", version=f"handwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="the daemon, in the foreground (systemd runs this)")
    once = sub.add_parser("once", parents=[common], help="transcribe these files now; print each output path")
    once.add_argument("paths", nargs="+", metavar="PATH")
    scan = sub.add_parser("scan", parents=[common], help="process everything in the watched folders without a current transcription, then exit")
    scan.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("check", parents=[common], help="validate the config and probe every endpoint")
    status = sub.add_parser("status", parents=[common], help="queue counts, failures with reasons, endpoint health")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    retry = sub.add_parser("retry", parents=[common], help="put failed files (or the named ones) back in the queue")
    retry.add_argument("paths", nargs="*", metavar="PATH")
    web = sub.add_parser("web", parents=[common], help="serve the review page (also served by run when the config has web:)")
    web.add_argument("--listen", metavar="HOST:PORT", help="address to listen on instead of web.listen (default 127.0.0.1:8765)")
    web.add_argument("--hash-password", action="store_true",
                     help="read a password (twice on a terminal, else one line of standard input) and print its hash for web.password_hash")
    sub.add_parser("reindex", parents=[common], help="rebuild the search index from the Markdown handwatch wrote")
    sub.add_parser("unit", parents=[common],
                   help="print a systemd drop-in for this config: the folders writable, their groups, this program")
    redo = sub.add_parser(
        "redo", parents=[common],
        help="transcribe again the files whose model, prompt, preprocessing or rule changed; never over a person's edit",
        description="Transcribe again every file whose model, prompt, preprocessing or rule (review thresholds "
                    "included) differs from what the current config would use. An edited Markdown is never "
                    "overwritten: it is reported as a conflict. Example: handwatch redo --dry-run --folder ~/Scans")
    redo.add_argument("--dry-run", action="store_true", help="list what would be redone and why; change nothing")
    redo.add_argument("--folder", metavar="DIR", help="only files in this folder (a watched folder or inside one)")
    redo.add_argument("--needs-review", action="store_true", help="only files whose Markdown says needs_review: true")
    return p


def _err(msg: str) -> None:
    print(f"handwatch: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return EX_USAGE if e.code not in (0, None) else EX_OK
    from handwatch import alloc, config

    if args.command == "web" and args.hash_password:
        return cmd_hash_password()
    alloc.keep_image_buffers()
    streams = sys.stdout, sys.stderr
    try:
        cfg = config.load(config.find_config(getattr(args, "config", None)))
        redactor = log.Redactor(cfg.secrets())  # no key or password reaches a terminal, a pipe or the journal
        sys.stdout, sys.stderr = log.RedactingStream(sys.stdout, redactor), log.RedactingStream(sys.stderr, redactor)
        log.setup(getattr(args, "log_level", None) or cfg.log_level, daemon=args.command == "run", secrets=cfg.secrets())
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
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout, sys.stderr = streams


def cmd_once(cfg, args) -> int:
    from handwatch.output import sha256_file
    from handwatch.pipeline import Pipeline
    from handwatch.queue import JobQueue
    from handwatch.safefs import Unsafe, file_sig
    from handwatch.state import StateDB

    db = StateDB(cfg.state_dir)
    queue = JobQueue(db)
    pipeline = Pipeline(cfg, db)
    codes: list[int] = []
    for raw in args.paths:
        path = Path(os.path.abspath(raw))
        sig = file_sig(path)
        sha = None
        try:
            if sig is None or not path.is_file():
                raise InputError("no such file" if not os.path.lexists(path) else "not a regular file")
            sha = sha256_file(path)
            outcome = pipeline.process(path, sha, sig)
            if outcome.source == path:  # a moved original (`after: move`) leaves no job behind
                queue.record(path, sha, sig, "done", output=outcome.output)
            print(outcome.output, flush=True)
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


def cmd_check(cfg, args) -> int:
    from handwatch import preprocess
    from handwatch.engines.vlm import EndpointClient, image_messages
    from handwatch.rules import RuleBook

    print(f"config ok: {cfg.source}")
    for f in cfg.folders:
        flag = "" if f.path.is_dir() else "  (does not exist yet)"
        print(f"folder: {f.path}{flag}")
    engines = {RuleBook(cfg).cfg.folder_rule(f).engine for f in cfg.folders} | {cfg.base_rule().engine}
    code = EX_OK
    if "tesseract" in engines:
        from handwatch.engines.tesseract import TesseractEngine, tess_langs

        t = TesseractEngine()
        langs = ({tess_langs(cfg.folder_rule(f).languages) for f in cfg.folders if cfg.folder_rule(f).engine == "tesseract"}
                 or {tess_langs(cfg.base_rule().languages)})
        try:
            for lang in sorted(langs):
                t._check(lang)
            print(f"tesseract: ok ({t.version()}; languages {', '.join(sorted(langs))})")
        except EngineUnavailable as e:
            print(f"tesseract: unavailable: {e}")
            code = EX_UNAVAILABLE
    for ep in cfg.endpoints:
        client = EndpointClient(ep)
        try:
            models = client.models()
            model = client.model()
            print(f"endpoint {ep.url}: up; models: {', '.join(models) or '(none)'}; using {model}")
            digits = "".join(random.choice("23456789") for _ in range(4))
            image = preprocess.probe_image(digits)
            reply = client.chat(image_messages("What number is written in this image? Answer with the digits only.",
                                               preprocess.encode_jpeg(image)), 64, 0.0)
            from handwatch.profiles import clean

            seen = "".join(ch for ch in clean(reply.content) if ch.isdigit())
            if digits in seen:
                print(f"endpoint {ep.url}: reads images (drew {digits}, model read {seen})")
            else:
                print(f"endpoint {ep.url}: answers but does not read images (drew {digits}, model said {reply.content[:60]!r}); is {model} a vision model?")
                code = EX_UNAVAILABLE
        except EngineUnavailable as e:
            print(f"endpoint {ep.url}: unavailable: {e}")
            code = EX_UNAVAILABLE
        except HandwatchError as e:
            print(f"endpoint {ep.url}: error: {e}")
            code = EX_UNAVAILABLE if code == EX_OK else code
    return code


def status_data(cfg) -> dict:
    from handwatch.queue import JobQueue
    from handwatch.state import Health, StateDB

    db = StateDB(cfg.state_dir)
    queue = JobQueue(db)
    health = Health(db).all()
    endpoints = [{"url": ep.url, "up": health.get(ep.url, {}).get("up"), "reason": health.get(ep.url, {}).get("reason")}
                 for ep in cfg.endpoints]
    return {"counts": queue.counts(), "failed": queue.failed(), "waiting": queue.waiting(), "endpoints": endpoints}


def cmd_status(cfg, args) -> int:
    data = status_data(cfg)
    if args.json:
        print(json.dumps(data, indent=2))
        return EX_OK
    c = data["counts"]
    print(f"pending {c['pending']}  running {c['running']}  done {c['done']}  failed {c['failed']}")
    for e in data["endpoints"]:
        state = {True: "up", False: "down", None: "not contacted yet"}[e["up"]]
        print(f"endpoint {e['url']}: {state}" + (f" ({e['reason']})" if e["reason"] and e["up"] is False else ""))
    if data["waiting"]:
        print("waiting:")
        for w in data["waiting"]:
            print(f"  {w['path']}: {w['reason']}")
    if data["failed"]:
        print("failed:")
        for f in data["failed"]:
            print(f"  {f['path']}: {f['reason']}")
    return EX_OK


def cmd_retry(cfg, args) -> int:
    from handwatch.queue import JobQueue
    from handwatch.state import StateDB

    queue = JobQueue(StateDB(cfg.state_dir))
    n = queue.retry([Path(os.path.abspath(p)) for p in args.paths] if args.paths else None)
    print(f"{n} file(s) back in the queue")
    return EX_OK


def cmd_redo(cfg, args) -> int:
    from handwatch import redo
    from handwatch.state import StateDB

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
        print(f"would redo {item.source}: {item.why}")
    for item in conflicts:
        print(f"conflict {item.source}: {item.why}")
    for item in skipped:
        print(f"skipped {item.source}: {item.why}")
    for note in the_plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        print(f"{len(todo)} to redo, {len(conflicts)} conflict(s), {len(skipped)} skipped")
        return EX_OK

    def progress(k: int, n: int, item, outcome: str, reason: str | None) -> None:
        said = {"done": "redone", "failed": "failed", "waiting": "waiting"}.get(outcome, outcome)
        print(f"[{k}/{n}] {said} {item.source}" + (f": {reason}" if reason else f" ({item.why})"),
              file=sys.stderr, flush=True)

    redo.forget_gone(db, skipped)
    summary = redo.run(cfg, todo, progress)
    for path in summary.busy:
        print(f"skipped {path}: being transcribed by another process right now")
    print(f"redo: {summary.redone} transcribed again, {len(summary.failed)} failed, {len(summary.waiting)} waiting, "
          f"{len(conflicts)} conflict(s), {len(skipped) + len(summary.busy)} skipped", file=sys.stderr)
    if summary.failed or conflicts:
        return EX_SOMEFAILED
    return EX_UNAVAILABLE if summary.unavailable else EX_OK


def cmd_run(cfg, args) -> int:
    from handwatch.daemon import Daemon

    return Daemon(cfg, log_level=getattr(args, "log_level", None)).run()


def cmd_scan(cfg, args) -> int:
    from handwatch.scan import scan

    return scan(cfg, progress=not args.no_progress and sys.stderr.isatty())


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
    print(hash_password(first))
    return EX_OK


def cmd_web(cfg, args) -> int:
    from pydantic import ValidationError

    from handwatch.config import Web, problems_of
    from handwatch.web.server import WebServer

    if args.listen:
        try:
            web = Web.model_validate({**(cfg.web.model_dump(exclude_none=True) if cfg.web else {}), "listen": args.listen})
        except ValidationError as e:
            raise ConfigError("--listen", problems_of(e)) from None
        cfg = cfg.model_copy(update={"web": web})
    WebServer(cfg).run()
    return EX_OK


def cmd_reindex(cfg, args) -> int:
    from handwatch.index import SearchIndex
    from handwatch.state import StateDB
    from handwatch.watch import inside

    folders = [f.path for f in cfg.folders]
    indexed, removed = SearchIndex(StateDB(cfg.state_dir)).rebuild(lambda p: any(inside(p, f) for f in folders))
    print(f"search index: {indexed} file(s) indexed, {removed} removed")
    return EX_OK


def cmd_unit(cfg, args) -> int:
    from handwatch.unit import drop_in

    print(drop_in(cfg), end="")
    return EX_OK


COMMANDS = {"once": cmd_once, "check": cmd_check, "status": cmd_status, "retry": cmd_retry, "run": cmd_run, "scan": cmd_scan,
            "web": cmd_web, "reindex": cmd_reindex, "redo": cmd_redo, "unit": cmd_unit}

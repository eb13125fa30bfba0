"""`handwatch once PATH...`: transcribe these files now, print each output path; a bad file is its own exit code."""

from __future__ import annotations

import os
from pathlib import Path

from handwatch.cli.console import err, out
from handwatch.errors import (
    EX_DATAERR,
    EX_OK,
    EX_SOMEFAILED,
    ConfigError,
    EngineUnavailable,
    HandwatchError,
    InputError,
    NotADocument,
    NotReady,
)


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
            anyway = args.anyway or bool((queue.state_of(path) or {}).get("anyway"))  # a choice made before sticks
            outcome = pipeline.process(path, sha, sig, override={"anyway": True} if anyway else None)
            if outcome.source == path:  # a moved original (`after: move`) leaves no job behind
                queue.record(path, sha, sig, "done", output=outcome.output, anyway=anyway)
            out(outcome.output, flush=True)
        except NotADocument as e:
            assert sha is not None and sig is not None
            queue.record(path, sha, sig, "skipped", reason=str(e), kind=e.kind)
            out(f"skipped {raw}: {e}", flush=True)
        except (InputError, NotReady, Unsafe) as e:
            err(f"{raw}: {e.strerror if isinstance(e, Unsafe) else e}")
            if sha is not None and sig is not None:
                queue.record(path, sha, sig, "failed", reason=str(e))
            codes.append(EX_DATAERR)
        except (ConfigError, EngineUnavailable):
            raise  # every remaining file would fail the same way
        except HandwatchError as e:
            err(f"{raw}: {e}")
            codes.append(EX_SOMEFAILED)
    if not codes:
        return EX_OK
    return EX_DATAERR if all(c == EX_DATAERR for c in codes) else EX_SOMEFAILED

"""The error tree: each error says what happens next and which exit code it maps to."""

from __future__ import annotations

# sysexits(3)
EX_OK = 0
EX_SOMEFAILED = 1
EX_USAGE = 2
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78


class HandwatchError(Exception):
    """Base class; `exit_code` is what cli.py returns when this ends a command."""

    exit_code = EX_SOMEFAILED


class ConfigError(HandwatchError):
    """The configuration is invalid: nothing can run until a person fixes it."""

    exit_code = EX_CONFIG

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems]


class InputError(HandwatchError):
    """The file itself cannot be read: fail it, do not retry until it changes."""

    exit_code = EX_DATAERR


class NotReady(HandwatchError):
    """The file is still being written (size changing): look again later, count nothing."""

    exit_code = EX_DATAERR


class EngineUnavailable(HandwatchError):
    """The endpoint cannot be reached or has no model loaded: the file waits, nothing is counted."""

    exit_code = EX_UNAVAILABLE

    def __init__(self, message: str, url: str | None = None):
        self.url = url
        super().__init__(message)


class EngineResponseError(HandwatchError):
    """The endpoint answered, but not with anything usable even after retries."""

    exit_code = EX_SOMEFAILED


class StateBusy(HandwatchError):
    """Another daemon holds the state directory: try again later (systemd may restart us)."""

    exit_code = EX_TEMPFAIL


class StateUnusable(HandwatchError):
    """The state database cannot be opened (not a database, not the service user's to open): restarting
    will not mend it, a person must (78, which the unit does not restart)."""

    exit_code = EX_CONFIG


class StateFailing(HandwatchError):
    """The state database failed as it opened in a way that may pass (disk I/O error, disk full): try again
    later (75, which systemd restarts), not a configuration error."""

    exit_code = EX_TEMPFAIL


class OutputConflict(HandwatchError):
    """The Markdown target exists and is not ours to overwrite (a person wrote or edited it)."""

    exit_code = EX_SOMEFAILED


class NotADocument(Exception):
    """The file is judged not a document (a photo, a blank frame) where the rule says documents only: it is
    recorded as skipped with this reason, gets no Markdown, and is not looked at again until it changes.
    Not a HandwatchError: nothing failed, and `once` exits 0."""

    def __init__(self, kind: str, reason: str):
        self.kind = kind  # photo | blank
        super().__init__(reason)

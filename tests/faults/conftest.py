"""The fault suite's report: each case says what it did; the run ends with a table of case and result
(copied into the "Reliability" section of docs/markdown.md)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.harness import CASES


class Report:
    def __init__(self, case: str):
        self.case = case
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


_RESULTS: dict[str, tuple[Report, str]] = {}
SIDE_BY_SIDE = 6  # cases (each a daemon, most with their own server) running at once


@pytest.fixture
def fault(request) -> Report:
    """`fault.case = "…"` names the case in the table; `fault.note("…")` adds what it saw."""
    report = Report(request.node.name)
    request.node._fault_report = report
    return report


@pytest.fixture(scope="module")
def side_by_side(request, tmp_path_factory) -> dict:
    """The module's selected cases (registered in `CASES`), started together on first use: {name: Future of
    its notes}. One module at a time, and at most SIDE_BY_SIDE cases at once: the endpoint matrix and the races
    together are 18 daemons, enough to starve a 2-core machine's watchdog pings for seconds, and the matrix's 14
    daemons alone once froze a daemon and its server for 16 s (the context case's 17 s without a ping)."""
    chosen = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module and "side_by_side" in item.fixturenames and hasattr(item, "callspec")
    ]
    with ThreadPoolExecutor(max(1, min(len(chosen), SIDE_BY_SIDE))) as pool:
        yield CASES.start(chosen, pool, tmp_path_factory.mktemp)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    report = getattr(item, "_fault_report", None)
    if report is None or (rep.when != "call" and not (rep.failed or rep.skipped)):
        return
    if rep.failed:
        why = call.excinfo.exconly().splitlines()[0] if call.excinfo else "failed"
        result = f"FAIL ({rep.when}): {why[:160]}"
    elif rep.skipped:
        result = "SKIPPED: " + (rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr))
    else:
        result = "pass" + (": " + "; ".join(report.notes) if report.notes else "")
    if item.nodeid not in _RESULTS or rep.failed or rep.skipped:
        _RESULTS[item.nodeid] = (report, result)


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    terminalreporter.section("fault suite (docs/markdown.md: Reliability)")
    terminalreporter.write_line("| case | result |")
    terminalreporter.write_line("| --- | --- |")
    for report, result in _RESULTS.values():
        terminalreporter.write_line(f"| {report.case} | {result.replace('|', '/')} |")

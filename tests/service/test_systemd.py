"""The daemon as systemd sees it: a real subprocess with NOTIFY_SOCKET on a socket the test binds and
WATCHDOG_USEC set — READY, STATUS, watchdog pings, RELOADING/READY on SIGHUP, STOPPING on SIGTERM."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from handwatch.service.systemd import clean_status
from tests.support.daemon import DaemonProc, inked, status, tiny_png
from tests.support.fakeopenai import FakeOpenAI, free_port, wait_for
from tests.support.paths import REPO
from tests.support.sdlisten import NotifyListener

WATCHDOG_USEC = 1_000_000  # a ping every half second


@pytest.fixture
def listener():
    n = NotifyListener()
    yield n
    n.close()


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def service_config(tmp_path: Path, url: str, folders: list[Path], **extra) -> dict:
    return {
        "state_dir": str(tmp_path / "state"),
        "endpoints": [{"url": url, "max_concurrency": 1, "timeout_s": 30}],
        "defaults": {"settle_s": 0.2},
        "rescan_s": 600,
        "folders": [{"path": str(f)} for f in folders],
        **extra,
    }


def folder(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


def pings_after(listener: NotifyListener, position: int) -> int:
    return sum(1 for i, x in enumerate(listener.lines()) if i > position and x == "WATCHDOG=1")


def test_ready_status_pings_reload_with_a_new_folder_and_stopping_in_order(tmp_path, fake_openai, listener, daemons):
    inbox, later = folder(tmp_path, "inbox"), folder(tmp_path, "later")
    cfg = write(tmp_path / "config.yaml", service_config(tmp_path, fake_openai.url, [inbox]))
    d = DaemonProc(cfg, tmp_path / "daemon.log", env=listener.env(WATCHDOG_USEC))
    daemons.append(d)
    wait_for(lambda: listener.index("READY=1") >= 0, 30, what="READY=1")
    ready = listener.index("READY=1")
    wait_for(lambda: pings_after(listener, ready) >= 3, 30, what="three watchdog pings")
    lines = listener.lines()
    first_status = next(i for i, x in enumerate(lines) if x.startswith("STATUS="))
    first_ping = lines.index("WATCHDOG=1")
    assert ready < first_ping and first_status < first_ping  # READY (with its STATUS) before any ping
    assert lines[first_status].startswith("STATUS=watching 1/1 folders; queued ")
    assert "endpoints up" in lines[first_status]

    # SIGHUP with a folder added: RELOADING=1, then READY=1, and the new folder is watched.
    write(cfg, service_config(tmp_path, fake_openai.url, [inbox, later]))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: listener.index("RELOADING=1") >= 0, 30, what="RELOADING=1")
    reloading = listener.index("RELOADING=1")
    wait_for(lambda: listener.index("READY=1", after=reloading) >= 0, 30, what="READY=1 after the reload")
    assert any(x.startswith("MONOTONIC_USEC=") for x in listener.lines()[reloading : reloading + 3])
    tiny_png(later / "new.png", 3)
    wait_for(lambda: (later / "new.md").exists(), 30, what="Markdown for a file in the folder added by the reload")
    wait_for(
        lambda: any(s.startswith("watching 2/2 folders") for s in listener.statuses()), 30, what="STATUS counting the new folder"
    )
    reloaded = d.events("config.reloaded")
    assert reloaded and reloaded[-1]["folders_added"] == [str(later)]
    after_reload = listener.index("READY=1", after=reloading)
    wait_for(lambda: pings_after(listener, after_reload) >= 2, 30, what="pings after the reload")

    assert d.stop() == 0
    lines = listener.lines()
    stopping = lines.index("STOPPING=1")
    assert stopping > after_reload
    assert "WATCHDOG=1" not in lines[stopping:]  # nothing claims health once stopping
    assert lines.count("READY=1") == 2


def test_sighup_with_a_broken_config_keeps_the_old_one_running(tmp_path, fake_openai, listener, daemons):
    inbox = folder(tmp_path, "inbox")
    cfg = write(tmp_path / "config.yaml", service_config(tmp_path, fake_openai.url, [inbox]))
    d = DaemonProc(cfg, tmp_path / "daemon.log", env=listener.env(WATCHDOG_USEC))
    daemons.append(d)
    cfg.write_text(cfg.read_text() + "folders_typo: 1\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.events("config.reload_failed"), 30, what="config.reload_failed")
    assert d.events("config.reload_failed")[0]["problems"] == [f"{cfg}: folders_typo: unknown key (did you mean `folders`?)"]
    reloading = listener.index("RELOADING=1")
    wait_for(lambda: listener.index("READY=1", after=reloading) >= 0, 30, what="READY=1 after the failed reload")
    tiny_png(inbox / "still.png", 1)
    wait_for(lambda: (inbox / "still.md").exists(), 30, what="the old config still at work")
    wait_for(lambda: any("reload failed" in s for s in listener.statuses()), 30, what="STATUS saying the reload failed")
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_sighup_with_no_folders_left_is_refused_as_at_start(tmp_path, fake_openai, listener, daemons):
    """`run` refuses to start without folders (78); a reload to such a config must not quietly stop
    watching everything and then fail at the next restart: it is refused, the folders stay watched."""
    inbox = folder(tmp_path, "inbox")
    cfg = write(tmp_path / "config.yaml", service_config(tmp_path, fake_openai.url, [inbox]))
    d = DaemonProc(cfg, tmp_path / "daemon.log", env=listener.env(WATCHDOG_USEC))
    daemons.append(d)
    wait_for(lambda: listener.index("READY=1") >= 0, 30, what="READY=1")
    write(cfg, service_config(tmp_path, fake_openai.url, []))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.events("config.reload_failed") or d.events("config.reloaded"), 30, what="the reload's outcome")
    assert not d.events("config.reloaded")
    assert d.events("config.reload_failed")[0]["problems"][0].startswith(f"{cfg}: folders: none configured")
    tiny_png(inbox / "still.png", 1)
    wait_for(lambda: (inbox / "still.md").exists(), 30, what="the old folder still watched")
    assert d.stop() == 0


def test_reload_swaps_the_endpoint_removes_a_folder_and_keeps_the_queue(tmp_path, listener, daemons):
    a, b, c = folder(tmp_path, "a"), folder(tmp_path, "b"), folder(tmp_path, "c")
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: files wait in the queue
    cfg = write(tmp_path / "config.yaml", service_config(tmp_path, dead, [a, b]))
    d = DaemonProc(cfg, tmp_path / "daemon.log", env=listener.env(WATCHDOG_USEC))
    daemons.append(d)
    tiny_png(a / "queued.png", 1)
    wait_for(
        lambda: any("waiting for endpoint" in (w["reason"] or "") for w in status(cfg)["waiting"]),
        30,
        what="a job waiting for the endpoint",
    )
    server = FakeOpenAI().start()
    try:
        write(cfg, service_config(tmp_path, server.url, [a, c]))
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d.events("config.reloaded"), 30, what="config.reloaded")
        ev = d.events("config.reloaded")[-1]
        assert ev["endpoints_changed"] is True and ev["folders_removed"] == [str(b)] and ev["applied"] is True
        wait_for(lambda: (a / "queued.md").exists(), 60, what="the queued file done by the new endpoint")
        assert len(server.requests) == 1
        tiny_png(b / "gone.png", 2)  # the removed folder: nobody looks any more
        tiny_png(c / "added.png", 3)
        wait_for(lambda: (c / "added.md").exists(), 30, what="a file in the added folder")
        assert not (b / "gone.md").exists()
        assert all(not j["path"].endswith("gone.png") for j in status(cfg)["waiting"] + status(cfg)["failed"])
        assert any(e["path"] == str(b) for e in d.events("watch.stopped"))
        assert len(server.requests) == 2
        assert d.stop() == 0
    finally:
        server.stop()


def test_status_cannot_inject_a_message_and_names_in_any_script_survive(tmp_path, fake_openai, listener, daemons):
    inbox = folder(tmp_path, "inbox")
    cfg = write(tmp_path / "config.yaml", service_config(tmp_path, fake_openai.url, [inbox]))
    d = DaemonProc(cfg, tmp_path / "daemon.log", env=listener.env(WATCHDOG_USEC))
    daemons.append(d)
    for name in ("x\nSTOPPING=1.jpg", "Käse 日記 🍰.jpg"):
        inked((64, 48)).save(inbox / name, "JPEG")
        wait_for(
            lambda name=name: any(s.endswith(f"last: {clean_status(name)} (done)") for s in listener.statuses()),
            30,
            what=f"STATUS naming {name!r}",
        )
    raw = os.path.join(os.fsencode(inbox), b"caf\xe9.jpg")
    inked((64, 48)).save(open(raw, "wb"), "JPEG")
    wait_for(
        lambda: any(s.endswith("last: caf\\xe9.jpg (done)") for s in listener.statuses()),
        30,
        what="STATUS naming a file whose name is not UTF-8",
    )
    assert any("last: x\\nSTOPPING=1.jpg (done)" in s for s in listener.statuses())
    assert any("last: Käse 日記 🍰.jpg (done)" in s for s in listener.statuses())
    assert "STOPPING=1" not in listener.lines()  # the name did not become a message
    for data in listener.raw:
        data.decode("utf-8")  # every datagram is valid UTF-8
    assert d.stop() == 0
    assert listener.lines().count("STOPPING=1") == 1


def test_pings_go_on_while_a_dead_worker_is_replaced_and_stop_when_workers_keep_dying(tmp_path, fake_openai, listener, daemons):
    inbox = folder(tmp_path, "inbox")
    cfg = write(tmp_path / "config.yaml", service_config(tmp_path, fake_openai.url, [inbox]))
    # One request slot (max_concurrency 1), a few workers preparing pages ahead of it; a worker that takes a
    # file named die-* dies (tests/support/kill_worker).
    env = {**listener.env(WATCHDOG_USEC), "PYTHONPATH": f"{REPO / 'tests' / 'support' / 'kill_worker'}{os.pathsep}{REPO}"}
    d = DaemonProc(cfg, tmp_path / "daemon.log", env=env)
    daemons.append(d)
    tiny_png(inbox / "die-1.png", 1)
    wait_for(lambda: len(d.events("worker.died")) == 1, 30, what="the first worker death")
    died = d.events("worker.died")[0]
    assert "SystemExit: made to die by the test on die-1.png" in died["error"] and died["job"] is not None
    mark = len(listener.lines())
    tiny_png(inbox / "fine.png", 2)  # the slot was filled again: work goes on
    wait_for(lambda: (inbox / "fine.md").exists(), 30, what="a file done by the replacement worker")
    wait_for(lambda: pings_after(listener, mark) >= 3, 30, what="pings after the death")
    assert not any(s.startswith("unhealthy") for s in listener.statuses())
    # die-1 is tried again 2 s after each death (STRIKE_DELAY_S) and failed after the third: how many deaths
    # have happened by now depends on how fast fine.png and the pings came, so each is right here (and while
    # a retry runs, the job is neither waiting nor failed: wait for it to be one of them again).
    died_on_it = "internal error: the worker handling this file died (SystemExit: made to die by the test on die-1.png)"
    counted = (
        f"a worker died while handling this file (1 of 3): {died_on_it}",
        f"a worker died while handling this file (2 of 3): {died_on_it}",
        f"{died_on_it} (3 tries)",
    )

    def die_1_reason() -> str | None:
        st = status(cfg)
        return next((j["reason"] for j in st["waiting"] + st["failed"] if Path(j["path"]).name == "die-1.png"), None)

    reason = wait_for(die_1_reason, 30, what="die-1.png waiting or failed with a reason")
    assert reason in counted, reason

    for i in range(2, 6):  # five deaths within ten minutes: the pool stops refilling
        tiny_png(inbox / f"die-{i}.png", i)
        # At least i: die-1's retry after its strike delay may kill another worker meanwhile.
        wait_for(lambda i=i: len(d.events("worker.died")) >= i, 30, what=f"worker death {i}")
    wait_for(
        lambda: any(s.startswith("unhealthy: worker threads keep dying") for s in listener.statuses()),
        30,
        what="STATUS saying the pool is broken",
    )
    first = next(i for i, x in enumerate(listener.lines()) if x.startswith("STATUS=unhealthy"))
    # The main loop repeats the unhealthy status at every ping it holds back: two more mean two missed pings.
    wait_for(
        lambda: sum(1 for x in listener.lines()[first:] if x.startswith("STATUS=unhealthy")) >= 3,
        30,
        what="two more missed pings",
    )
    assert "WATCHDOG=1" not in listener.lines()[first:]
    wait_for(lambda: d.events("daemon.unhealthy"), 30, what="daemon.unhealthy in the log")
    assert d.events("daemon.unhealthy")[0]["reason"].startswith("worker threads keep dying")
    assert d.proc.poll() is None  # it is systemd's watchdog that ends it, not the daemon


def test_a_second_daemon_on_the_same_state_exits_75(tmp_path, fake_openai, daemons, run_cli):
    inbox = folder(tmp_path, "inbox")
    cfg = write(tmp_path / "config.yaml", service_config(tmp_path, fake_openai.url, [inbox]))
    daemons.append(DaemonProc(cfg, tmp_path / "daemon.log"))
    res = run_cli("-c", cfg, "run", timeout=60)
    assert res.returncode == 75, res.stderr
    assert f"another handwatch daemon is running with state_dir {tmp_path / 'state'}" in res.stderr


def test_a_missing_tesseract_language_pack_is_a_config_error_at_start_and_on_reload(
    tmp_path, fake_openai, listener, daemons, run_cli
):
    inbox = folder(tmp_path, "inbox")
    bad = service_config(tmp_path, fake_openai.url, [inbox])
    bad["folders"][0].update(engine="tesseract", languages=["fr"])  # tesseract-ocr-fra is not installed
    cfg = write(tmp_path / "config.yaml", bad)
    res = run_cli("-c", cfg, "run", timeout=60)
    assert res.returncode == 78
    assert res.stderr.strip() == (
        f"config error: {cfg}: folders[0].languages: no Tesseract data for fra (apt-get install tesseract-ocr-fra)"
    )
    write(cfg, service_config(tmp_path, fake_openai.url, [inbox]))
    d = DaemonProc(cfg, tmp_path / "daemon.log", env=listener.env())
    daemons.append(d)
    write(cfg, bad)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.events("config.reload_failed"), 30, what="the reload refused")
    assert "no Tesseract data for fra" in d.events("config.reload_failed")[0]["problems"][0]
    assert d.proc.poll() is None and d.stop() == 0


def test_a_state_dir_that_cannot_be_made_is_a_config_error_at_start(tmp_path, fake_openai, run_cli):
    inbox = folder(tmp_path, "inbox")
    (tmp_path / "file").write_text("not a folder")
    data = service_config(tmp_path, fake_openai.url, [inbox])
    data["state_dir"] = str(tmp_path / "file" / "state")
    cfg = write(tmp_path / "config.yaml", data)
    res = run_cli("-c", cfg, "run", timeout=60)
    assert res.returncode == 78
    assert res.stderr.strip() == f"config error: {cfg}: state_dir: cannot use {tmp_path / 'file' / 'state'}: Not a directory"


def test_a_state_database_that_cannot_be_opened_is_a_config_error_not_a_traceback(tmp_path, fake_openai, run_cli):
    """Restarting cannot mend a database that is not one (or that the service's user cannot open): 78,
    which the unit does not restart, and one line saying which file, for the daemon and every command."""
    inbox = folder(tmp_path, "inbox")
    cfg = write(tmp_path / "config.yaml", service_config(tmp_path, fake_openai.url, [inbox]))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.sqlite3").write_bytes(b"not a database, but much longer than a header\n" * 100)
    for command in ("run", "status"):
        res = run_cli("-c", cfg, command, timeout=60)
        assert res.returncode == 78, res.stderr
        assert res.stderr == (
            f"handwatch: state database {tmp_path / 'state' / 'state.sqlite3'} cannot be used: file is not a database\n"
        )

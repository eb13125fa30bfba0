"""The pieces behind the service, one at a time: the status line's cleaning, sd_notify on a real socket,
the watchdog interval, the journal check, start-up checks, systemd's directories, secrets, re-watching."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from handwatch import log
from handwatch.config import loader
from handwatch.config.schema import Config
from handwatch.errors import ConfigError
from handwatch.intake.watch import Watcher, WatchSpec
from handwatch.service import preflight, systemd
from tests.support.fakeopenai import wait_for
from tests.support.sdlisten import NotifyListener


@pytest.mark.parametrize(
    "name, shown",
    [
        ("x\nSTOPPING=1.jpg", "x\\nSTOPPING=1.jpg"),
        ("a\rb\x00c\x1b[2Jd", "a\\x0db\\x00c\\x1b[2Jd"),
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("\u202egpj.exe", "\\u202egpj.exe"),  # a right-to-left override cannot disguise a name
        ("Käse 日記 🍰.jpg", "Käse 日記 🍰.jpg"),
        (os.fsdecode(b"caf\xe9.jpg"), "caf\\xe9.jpg"),
    ],
)
def test_status_text_is_one_printable_line(name, shown):
    assert systemd.clean_status(name) == shown
    systemd.clean_status(name).encode("utf-8")  # always encodable


def test_status_text_is_bounded():
    line = systemd.clean_status("é" * 10_000)
    assert len(line) == systemd.STATUS_MAX and line.endswith("…")


def test_notifier_sends_one_utf8_datagram_per_call_and_nothing_without_a_socket():
    listener = NotifyListener()
    try:
        n = systemd.Notifier(listener.address)
        assert n.ready(status="watching 1 folder; last: x\nSTOPPING=1.jpg, 日記.jpg")
        assert n.watchdog()
        wait_for(lambda: len(listener.datagrams) == 2, 10, what="two datagrams")
        assert listener.datagrams[0] == ["READY=1", "STATUS=watching 1 folder; last: x\\nSTOPPING=1.jpg, 日記.jpg"]
        assert listener.datagrams[1] == ["WATCHDOG=1"]
    finally:
        listener.close()
    assert not systemd.Notifier("").ready()  # NOTIFY_SOCKET unset: no-op
    gone = systemd.Notifier("@handwatch-test-nobody-listens")
    assert not gone.watchdog() and gone.failures == 1  # systemd gone: counted, never raised


def test_notifier_reaches_a_notify_socket_bound_again_after_a_failed_send():
    """sd_notify(3) sends each message to the address afresh; a socket connected once stays tied to the
    listener it first reached, so once that one went (systemd re-executed with a new socket, a proxy
    restarted) every later ping would fail and systemd's watchdog would end a healthy daemon."""
    address = f"@handwatch-test-{os.getpid()}-rebind"

    def bound() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind("\0" + address[1:])
        s.settimeout(10)
        return s

    first = bound()
    n = systemd.Notifier(address)
    assert n.watchdog() and first.recv(100) == b"WATCHDOG=1"
    first.close()
    assert not n.watchdog() and n.failures == 1  # nobody there: counted
    second = bound()
    try:
        assert n.watchdog(), "the ping after the failure must reach the new socket"
        assert second.recv(100) == b"WATCHDOG=1"
    finally:
        second.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only():
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "120000000"}) == 60.0
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}) == 60.0
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}) == 0.0
    assert systemd.watchdog_interval_s({}) == 0.0 and systemd.watchdog_interval_s({"WATCHDOG_USEC": "x"}) == 0.0


def test_journal_stream_is_matched_by_device_and_inode(tmp_path):
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        st = os.fstat(a.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert log.journal_stream(a.fileno(), env)
        assert not log.journal_stream(b.fileno(), env)
        assert not log.journal_stream(a.fileno(), {})


def cfg_of(data: dict) -> Config:
    return Config.model_validate({"endpoints": [{"url": "http://127.0.0.1:1/v1"}], **data})


def test_preflight_names_the_key_to_change():
    have = lambda: {"eng", "deu", "osd"}  # noqa: E731
    cfg = cfg_of(
        {
            "defaults": {"engine": "tesseract", "languages": ["fr"]},
            "folders": [
                {"path": "/a"},
                {"path": "/b", "languages": ["de", "it"]},
                {"path": "/c", "engine": "vlm"},
                {"path": "/d", "translate_to": "en"},
            ],
        }
    )
    assert preflight.problems(cfg, have) == [
        "defaults.languages: no Tesseract data for fra (apt-get install tesseract-ocr-fra)",
        "folders[1].languages: no Tesseract data for ita (apt-get install tesseract-ocr-ita)",
        "folders[3].translate_to: en: translation needs engine: vlm (Tesseract does not translate)",
    ]
    assert (
        preflight.problems(cfg, lambda: None)[0] == "defaults.engine: tesseract is not installed (apt-get install tesseract-ocr)"
    )
    assert preflight.problems(cfg_of({"folders": [{"path": "/a"}]}), have) == []  # vlm only: Tesseract not asked
    with pytest.raises(ConfigError) as e:
        preflight.check(cfg_of({"folders": [{"path": "/a", "engine": "tesseract", "languages": ["zh"]}]}), have)
    assert e.value.problems == ["folders[0].languages: no Tesseract data for chi_sim (apt-get install tesseract-ocr-chi-sim)"]


def test_state_and_config_come_from_systemds_directories(tmp_path, monkeypatch):
    monkeypatch.delenv("HANDWATCH_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "config.yaml").write_text("defaults: {engine: tesseract}\n")
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", f"{tmp_path / 'etc'}:/elsewhere")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "lib"))
    found = loader.find_config(None)
    assert found == tmp_path / "etc" / "config.yaml"
    assert loader.load(found).state_dir == tmp_path / "lib"  # not named: systemd's StateDirectory=
    (tmp_path / "etc" / "config.yaml").write_text(f"state_dir: {tmp_path / 'mine'}\n")
    assert loader.load(found).state_dir == tmp_path / "mine"  # named: the config wins
    monkeypatch.delenv("STATE_DIRECTORY")
    (tmp_path / "etc" / "config.yaml").write_text("{}\n")
    assert loader.load(found).state_dir == tmp_path / "home" / ".local" / "state" / "handwatch"
    assert loader.find_config(str(tmp_path / "x.yaml")) == tmp_path / "x.yaml"  # -c still wins


def test_secrets_are_masked_inside_any_value(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-abcdefgh12345678")
    cfg = cfg_of(
        {
            "endpoints": [
                {"url": "http://u:hunter2hunter2@127.0.0.1:1/v1", "api_key_env": "MY_KEY"},
                {"url": "http://127.0.0.1:2/v1", "api_key_env": "UNSET_KEY"},
            ]
        }
    )
    assert sorted(cfg.secrets()) == ["hunter2hunter2", "sk-abcdefgh12345678"]
    r = log.Redactor(cfg.secrets())
    event = {
        "event": "x",
        "reason": "key sk-abcdefgh12345678 refused",
        "n": 3,
        "nested": {"list": ["http://u:hunter2hunter2@h/v1", Path("/sk-abcdefgh12345678")]},
    }
    assert r(None, "info", event) == {
        "event": "x",
        "reason": "key [redacted] refused",
        "n": 3,
        "nested": {"list": ["http://u:[redacted]@h/v1", "/[redacted]"]},
    }
    assert log.Redactor(["short"]).text("short") == "short"  # placeholders like `ollama` are not secrets


def test_watcher_follows_a_new_list_of_folders(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    seen: list[Path] = []
    w = Watcher([WatchSpec(a, True, False), WatchSpec(b, True, False)], lambda p, moved: seen.append(p), lambda d: None)
    assert sorted(w.start()) == [a, b]
    try:
        removed = w.set_specs([WatchSpec(a, True, False), WatchSpec(c, True, False)])
        assert removed == [b] and w.ensure() == [c]
        assert sorted(w.modes) == [a, c] and b not in w.states
        (b / "ignored.png").write_bytes(b"x")
        (c / "seen.png").write_bytes(b"x")
        wait_for(lambda: c / "seen.png" in seen, 10, what="an event from the new folder")
        (a / "marker.png").write_bytes(b"x")
        wait_for(lambda: a / "marker.png" in seen, 10, what="an event from the kept folder")
        assert b / "ignored.png" not in seen
        w.set_specs([WatchSpec(a, False, False), WatchSpec(c, True, False)])  # changed settings: watched anew
        assert w.ensure() == [a]
        assert w.dead() == 0
    finally:
        w.stop()


def test_check_asks_tesseract_only_for_the_languages_of_its_own_folders(tmp_path, fake_openai, write_config, run_cli):
    """The shipped example has a French letters folder on the VLM beside a Tesseract folder; check used to
    ask Tesseract for French too and failed the whole config with 78."""
    import pytesseract

    fake_openai.default = lambda req: {
        "content": pytesseract.image_to_string(req.image, config="--psm 7 -c tessedit_char_whitelist=0123456789")
    }
    cfg = write_config(
        {
            "endpoints": [{"url": fake_openai.url}],
            "folders": [
                {"path": str(tmp_path / "printed"), "engine": "tesseract"},
                {"path": str(tmp_path / "letters"), "languages": ["fr", "de"]},
            ],
        }
    )
    res = run_cli("check", "-c", cfg)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "language data eng (for" in res.stdout and "reads images" in res.stdout and "fra" not in res.stdout


def test_a_urls_password_is_masked_whatever_its_length_and_nothing_else_is():
    r = log.Redactor()  # no known secret at all: before the config is read, or a config naming none
    assert (
        r.text("endpoint http://admin:pw@127.0.0.1:8000/v1: down") == "endpoint http://admin:[redacted]@127.0.0.1:8000/v1: down"
    )
    assert r.text("'ftp://bob:p@ss:w0rd@nas.lan/x?y=1'") == "'ftp://bob:[redacted]@nas.lan/x?y=1'"  # the last @ ends it
    assert r.text("mailtos://me:x@gmail.com and https://u:v@h") == "mailtos://me:[redacted]@gmail.com and https://u:[redacted]@h"
    # glued to a word: a key=value log field, a JSON string, a number before it
    assert r.text("endpoint_http://u:pw@h 2http://u:pw@h") == "endpoint_http://u:[redacted]@h 2http://u:[redacted]@h"
    for plain in ("http://127.0.0.1:8000/v1", "http://reader@h/v1", "/srv/sync/a:b@c.jpg", "x@y.z: mail"):
        assert r.text(plain) == plain
    assert r(None, "error", {"event": "config.reload_failed", "problems": ["url: 'htp://u:pw@h'"]})["problems"] == [
        "url: 'htp://u:[redacted]@h'"
    ]

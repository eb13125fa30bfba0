"""The systemd units: `systemd-analyze verify` silent, `security` at most 2.0, `handwatch unit`'s drop-in,
and the image libraries at work under the kernel filters the unit asks for (MemoryDenyWriteExecute)."""

from __future__ import annotations

import grp
import itertools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.daemon import DaemonProc, inked
from tests.support.fakeopenai import wait_for
from tests.support.pages import draw_page
from tests.support.paths import REPO, cli_env

SYSTEM_UNIT = REPO / "systemd" / "handwatch.service"
USER_UNIT = REPO / "systemd" / "handwatch-user.service"
PROGRAM = Path(sys.executable).parent / "handwatch"  # this installation's entry point (the venv's script)
SANDBOX = [sys.executable, str(REPO / "tests" / "support" / "sandbox.py"), str(SYSTEM_UNIT)]


def analyze(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def exposure(res: subprocess.CompletedProcess) -> float:
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    return float(m.group(1))


def installed(unit_dir: Path) -> Path:
    """The system unit as installed here: /opt/handwatch is where docs/install.md clones to; the test's copy
    names this checkout's program instead (nothing else in the unit changes)."""
    unit_dir.mkdir(parents=True, exist_ok=True)
    text = SYSTEM_UNIT.read_text()
    assert "ExecStart=/opt/handwatch/.venv/bin/handwatch run\n" in text
    path = unit_dir / "handwatch.service"
    path.write_text(text.replace("/opt/handwatch/.venv/bin/handwatch", str(PROGRAM)))
    return path


def assert_drop_in_verifies(units: Path, drop_in: str) -> None:
    """The unit installed with `drop_in` as its folders.conf: systemd-analyze verify says nothing at all."""
    installed(units)
    (units / "handwatch.service.d").mkdir()
    (units / "handwatch.service.d" / "folders.conf").write_text(drop_in)
    check = analyze("verify", "handwatch.service", env={"SYSTEMD_UNIT_PATH": f"{units}:"})
    assert check.returncode == 0 and check.stderr == "", check.stderr


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_the_system_unit_verifies_silently_and_rates_at_most_2(tmp_path):
    unit = installed(tmp_path / "units")
    res = analyze("verify", str(unit))
    assert res.returncode == 0 and res.stderr == "", res.stderr  # verify exits 0 on some errors: stderr tells
    assert exposure(analyze("security", "--offline=true", str(unit))) <= 2.0
    s = settings(SYSTEM_UNIT.read_text())
    for key, value in {
        "Type": "notify",
        "Restart": "on-failure",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "UMask": "0077",
        "RestartPreventExitStatus": "78",
        "User": "handwatch",
        "StateDirectory": "handwatch",
        "ConfigurationDirectory": "handwatch",
        "SupplementaryGroups": "sync",
        "ProtectSystem": "strict",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert s[key] == [value], key
    assert "WatchdogSec" in s and "MemoryMax" in s


def test_a_broken_unit_is_caught_by_its_stderr_not_its_exit_code(tmp_path):
    """Why the test above reads stderr: the check must be able to fail."""
    unit = installed(tmp_path / "units")
    unit.write_text(unit.read_text().replace("UMask=0077", "UMask=0077\nProtectSystem=sometimes"))
    res = analyze("verify", str(unit))
    assert res.returncode == 0 and "Failed to parse protect system value, ignoring: sometimes" in res.stderr


def test_the_user_unit_verifies_silently(tmp_path):
    home = tmp_path / "home"
    (home / "handwatch" / ".venv" / "bin").mkdir(parents=True)
    (home / "handwatch" / ".venv" / "bin" / "handwatch").symlink_to(PROGRAM)  # ExecStart=%h/handwatch/...
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    res = analyze("verify", "--user", str(USER_UNIT), env={"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)})
    assert res.returncode == 0 and res.stderr == "", res.stderr


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_every_hardening_line_has_a_comment_of_its_own(unit):
    """#12: the operator reads why each restriction is there, right above it."""
    lines = unit.read_text().split("[Service]")[1].split("[Install]")[0].splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("# --- hardening"))
    pairs = itertools.pairwise(lines[start:])
    bare = [x for prev, x in pairs if "=" in x and not x.startswith("#") and not prev.startswith("#")]
    assert bare == []
    assert sum(1 for x in lines[start:] if "=" in x and not x.startswith("#")) >= 10


@pytest.fixture
def shared(tmp_path):
    """A folder owned by the group `users`, as a synced folder shared with the service would be."""
    d = tmp_path / "srv" / "Camera"
    d.mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(d, -1, grp.getgrnam("users").gr_gid)
    return d


def test_handwatch_unit_writes_a_drop_in_that_fits_the_config(tmp_path, shared, write_config, run_cli):
    cfg = write_config(
        {
            "endpoints": [{"url": "http://127.0.0.1:1234/v1"}],
            "folders": [{"path": str(shared)}, {"path": "/home/alice/Sync/Phone"}],
        }
    )
    res = run_cli("unit", "-c", cfg)
    assert res.returncode == 0, res.stderr
    s = settings(res.stdout)
    assert s["ExecStart"] == ["", f"{PROGRAM} -c {cfg} run"]
    assert s["ReadWritePaths"] == ["", f"-{shared}", f"-{tmp_path / 'state'}"]
    assert s["ProtectHome"] == ["tmpfs"] and s["BindPaths"] == ["-/home/alice/Sync/Phone"]
    assert s["SupplementaryGroups"] == ["", grp.getgrgid(os.stat(shared).st_gid).gr_name]
    assert "# /home/alice/Sync/Phone does not exist yet" in res.stdout
    assert "IPAddressDeny" not in s  # every endpoint is local: the unit's allow list stays
    # Installed beside the unit, the pair verifies and still rates at most 2.0.
    units = tmp_path / "units"
    installed(units)
    (units / "handwatch.service.d").mkdir()
    (units / "handwatch.service.d" / "folders.conf").write_text(res.stdout)
    env = {"SYSTEMD_UNIT_PATH": f"{units}:"}  # trailing colon: the system's unit directories too
    check = analyze("verify", "handwatch.service", env=env)
    assert check.returncode == 0 and check.stderr == "", check.stderr
    assert exposure(analyze("security", "--offline=true", "handwatch.service", env=env)) <= 2.0
    # ... and verify does read the drop-in from there: a bad line in it is reported.
    (units / "handwatch.service.d" / "folders.conf").write_text(res.stdout + "ProtectHome=sometimes\n")
    assert "folders.conf" in analyze("verify", "handwatch.service", env=env).stderr


def test_handwatch_unit_escapes_percent_signs_systemd_would_read_as_specifiers(tmp_path, write_config, run_cli):
    """In a unit file `%o` is the OS's name and `%Z` an error: a folder named `50%off` would become
    /…/50debianff (read-only to the service, every write failing) unless written as `50%%off`."""
    odd = [tmp_path / "srv" / "50%off", tmp_path / "srv" / "x%Zy", tmp_path / "srv" / "My 100% Photos"]
    for d in odd:
        d.mkdir(parents=True)
    cfg = write_config({"endpoints": [{"url": "http://127.0.0.1:1234/v1"}], "folders": [{"path": str(d)} for d in odd]})
    res = run_cli("unit", "-c", cfg)
    assert res.returncode == 0, res.stderr
    rw = settings(res.stdout)["ReadWritePaths"]
    assert rw[1:4] == [f"-{tmp_path}/srv/50%%off", f"-{tmp_path}/srv/x%%Zy", f'"-{tmp_path}/srv/My 100%% Photos"']
    assert_drop_in_verifies(tmp_path / "units", res.stdout)


def test_handwatch_unit_escapes_colons_in_bind_paths_and_dollars_in_exec_start(tmp_path, write_config, run_cli):
    """BindPaths= splits at `:` (source:destination): `/home/alice/Sync:Phone` would bind /home/alice/Sync and
    ignore "Phone", so the folder stays hidden under ProtectHome=tmpfs. In ExecStart= `$x` is a variable."""
    homes = ["/home/alice/Sync:Phone", "/home/alice/My Sync:Tablet"]
    (tmp_path / "a$HOME").mkdir()
    cfg = write_config(
        {"endpoints": [{"url": "http://127.0.0.1:1234/v1"}], "folders": [{"path": p} for p in homes]}, "a$HOME/c.yaml"
    )
    res = run_cli("unit", "-c", cfg)
    assert res.returncode == 0, res.stderr
    found = settings(res.stdout)
    assert found["BindPaths"] == ["-/home/alice/Sync\\:Phone", '"-/home/alice/My Sync\\:Tablet"']
    assert found["ExecStart"][1].endswith(f"-c {tmp_path}/a$$HOME/c.yaml run")
    assert_drop_in_verifies(tmp_path / "units", res.stdout)


def test_handwatch_unit_lifts_the_address_allow_list_for_a_remote_endpoint(tmp_path, write_config, run_cli):
    cfg = write_config(
        {
            "endpoints": [{"url": "http://93.184.216.34:8000/v1", "allow_remote": True}],
            "folders": [{"path": str(tmp_path / "in")}],
        }
    )
    res = run_cli("unit", "-c", cfg)
    assert res.returncode == 0 and settings(res.stdout)["IPAddressDeny"] == [""]
    assert "endpoints with allow_remote: true" in res.stdout


# --- the sandbox ----------------------------------------------------------------------------------------


def test_the_sandbox_really_refuses_what_the_unit_forbids():
    """The control for the tests below: under tests/support/sandbox.py, writable-and-executable memory, a netlink
    socket and chown fail, and ordinary memory and IP sockets work."""
    probe = """
import errno, mmap, os, socket
def refused(f):
    try:
        f()
    except OSError as e:
        return e.errno
    return 0
print(refused(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)) == errno.EPERM)
print(refused(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)) == errno.EAFNOSUPPORT)
print(refused(lambda: os.chown("/", 0, 0)) == errno.EPERM)
print(refused(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)) == 0)
print(refused(lambda: socket.socket(socket.AF_INET6).close()) == 0)
"""
    res = subprocess.run([*SANDBOX, sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True"] * 5
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.stdout.split()[:3] == ["False"] * 3  # without it, the same calls succeed


def pages(folder: Path) -> list[Path]:
    """One handwritten page in every format handwatch reads."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    page = draw_page(["Sandbox 42", "hello world"], size=(900, 400))
    out = []
    for ext, fmt in (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("tif", "TIFF"), ("heic", "HEIF"), ("pdf", "PDF")):
        out.append(folder / f"page-{ext}.{ext}")
        page.save(out[-1], fmt)
    return out


def test_every_format_and_both_engines_work_without_writable_executable_memory(tmp_path, fake_openai, write_config):
    """MemoryDenyWriteExecute=yes is only safe if Pillow, OpenCV, libheif, poppler and Tesseract never
    ask for writable and executable memory: run them all under the unit's filters."""
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    cpu.mkdir()
    gpu.mkdir()
    files = pages(cpu) + pages(gpu)
    cfg = write_config(
        {"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(cpu), "engine": "tesseract"}, {"path": str(gpu)}]}
    )
    res = subprocess.run(
        [*SANDBOX, sys.executable, "-m", "handwatch", "-c", str(cfg), "once", *map(str, files)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.split()) == 12
    for f in files:
        md = f.with_suffix(".md")
        assert md.exists(), f
        if f.parent == cpu:
            assert "SANDBOX" in md.read_text().upper(), md.read_text()  # Tesseract really read the page
    assert len(fake_openai.requests) == 6


def test_the_daemon_runs_reloads_and_stops_under_the_units_filters(tmp_path, fake_openai, write_config):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = {
        "endpoints": [{"url": fake_openai.url}],
        "defaults": {"settle_s": 0.2},
        "folders": [{"path": str(inbox), "after": {"move": "done"}}],
    }
    cfg = write_config(data)
    d = DaemonProc(cfg, tmp_path / "daemon.log", prefix=SANDBOX)
    try:
        inked((64, 48)).save(inbox / "a.jpg", "JPEG")
        page = draw_page(["two"], size=(400, 200))
        page.save(inbox / "b.pdf", "PDF")
        wait_for(lambda: (inbox / "a.md").exists() and (inbox / "b.md").exists(), 60, what="two Markdown files")
        # the original moves after its Markdown is written: poll for it too (asserting at once raced under load)
        wait_for(lambda: (inbox / "done" / "a.jpg").exists(), 30, what="a.jpg moved to done/")
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d.events("config.reloaded"), 30, what="a reload under the filters")
        assert d.stop() == 0
        assert not d.events("worker.error") and not d.events("monitor.error")
    finally:
        d.kill()


def test_a_folder_handwatch_creates_is_as_open_as_its_parent_under_umask_0077(tmp_path, fake_openai, write_config):
    """UMask=0077 keeps the state private; it must not lock the people who share a folder out of the
    `done` folder handwatch creates in it (or lose the setgid bit that keeps the group)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.chmod(inbox, 0o2775)
    inked((64, 48)).save(inbox / "a.jpg", "JPEG")
    os.chmod(inbox / "a.jpg", 0o664)
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(inbox), "after": {"move": "done"}}]})
    res = subprocess.run(
        [sys.executable, "-m", "handwatch", "-c", str(cfg), "once", str(inbox / "a.jpg")],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        preexec_fn=lambda: os.umask(0o077),
    )
    assert res.returncode == 0, res.stderr
    assert oct(os.stat(inbox / "done").st_mode & 0o7777) == oct(0o2775)
    assert oct(os.stat(inbox / "a.md").st_mode & 0o777) == oct(0o664)
    assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == oct(0o700)


def test_the_example_config_is_for_the_service(tmp_path):
    """config/handwatch.yaml goes to /etc/handwatch: every path in it is absolute (no `~` of the wrong user)."""
    data = yaml.safe_load((REPO / "config" / "handwatch.yaml").read_text())
    paths = [data["state_dir"]] + [f["path"] for f in data["folders"]]
    assert all(p.startswith("/") for p in paths), paths

"""The "Run it as a service" steps of docs/install.md, run as written, as far as a container without systemd allows.

Everything happens in a private mount namespace holding a copy of /etc and empty /srv, /opt, /var/lib,
/home and /run/user, so the users, groups, files and units the steps create vanish with it and the
machine is left as it was. /opt/handwatch is this checkout, mounted read-only (what `git clone` and
`make setup` would have made). What needs a running systemd (systemctl, journalctl, loginctl) is
skipped, and the editor step is replaced by the edit a person would make; every other line runs
verbatim. Then the service itself is played the way the unit would start it: as the `handwatch` user
with its groups, umask 0077, systemd's directory variables, NOTIFY_SOCKET, and the unit's seccomp
filters (tests/support/sandbox.py)."""

from __future__ import annotations

import io
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import inked
from tests.support.fakeopenai import wait_for
from tests.support.pages import draw_page
from tests.support.paths import REPO
from tests.support.sdlisten import NotifyListener

ROOT = [] if os.geteuid() == 0 else ["sudo", "-n"]
NEEDS_SYSTEMD = ("systemctl ", "journalctl ", "loginctl ")
DONE_BY_THE_TEST = ("git clone ", "make setup")  # /opt/handwatch is this checkout, already set up
PY = sys.executable


def install_block(heading: str, n: int) -> list[str]:
    """The n-th ```sh block after `heading` in docs/install.md, one command per line, comments dropped."""
    text = (REPO / "docs" / "install.md").read_text()
    section = text[text.index(heading) :]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    lines = []
    for raw in blocks[n].splitlines():
        line = re.sub(r"\s+#\s.*$", "", raw).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


class Namespace:
    """A process holding a private mount namespace; commands run inside it with nsenter."""

    def __init__(self, scratch: Path):
        self.holder = subprocess.Popen([*ROOT, "unshare", "--mount", "--propagation", "private", "sleep", "infinity"])
        own = os.readlink("/proc/self/ns/mnt")
        wait_for(lambda: self._ns() not in (None, own), 30, what="the private mount namespace")
        etc = scratch / "etc"
        etc.mkdir()
        self.run(f"cp -a /etc/. {etc}/ && mount --bind {etc} /etc")
        for d in ("/srv", "/opt", "/var/lib", "/home", "/run/user"):
            self.run(f"mount -t tmpfs -o mode=0755 tmpfs {d}")
        self.run(f"mkdir /opt/handwatch && mount --bind {REPO} /opt/handwatch && mount -o remount,bind,ro /opt/handwatch")
        self.expose(Path(os.path.realpath(sys.base_prefix)), scratch / "stash")

    def expose(self, path: Path, stash: Path) -> None:
        """Let other users reach `path` (the Python the venv was made from may live in root's 0700 home,
        as it does with pyenv; on Debian it is /usr): mount it into an open tmpfs over the closed folder."""
        closed = next((p for p in reversed(path.parents) if not os.stat(p).st_mode & 0o001), None)
        if closed is None:
            return
        stash.mkdir()
        self.run(
            f"mount --bind {path} {stash} && mount -t tmpfs -o mode=0755 tmpfs {closed} "
            f"&& mkdir -p {path} && mount --move {stash} {path}"
        )

    def _ns(self) -> str | None:
        try:
            return os.readlink(f"/proc/{self.pid}/ns/mnt")
        except OSError:
            return None

    @property
    def pid(self) -> int:
        """The `sleep` inside unshare (sudo and unshare exec, so it is the holder itself)."""
        return self.holder.pid

    def argv(self, command: str, user: str | None = None, cwd: str = "/") -> list[str]:
        command = f"cd {shlex.quote(cwd)} && {command}"  # nsenter's --wd would be looked up outside
        inner = ["bash", "-c", command] if user is None else ["runuser", "-u", user, "--", "bash", "-c", command]
        return [*ROOT, "nsenter", "-t", str(self.pid), "-m", "--", *inner]

    def run(
        self,
        command: str,
        user: str | None = None,
        cwd: str = "/",
        check: bool = True,
        stdin: bytes | None = None,
        env: dict | None = None,
    ) -> subprocess.CompletedProcess:
        res = subprocess.run(
            self.argv(command, user, cwd), capture_output=True, input=stdin, timeout=300, env={**os.environ, **(env or {})}
        )
        if check:
            assert res.returncode == 0, f"{command}\n{res.stdout.decode()}\n{res.stderr.decode()}"
        return res

    def exists(self, path: str) -> bool:
        return self.run(f"test -e '{path}'", check=False).returncode == 0

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


@pytest.fixture
def ns(tmp_path):
    n = Namespace(tmp_path)
    yield n
    n.close()


@pytest.fixture
def reading_model(fake_openai):
    """A model server that really reads its picture (Tesseract on the request image), as `check` asks it to."""
    import pytesseract

    fake_openai.default = lambda req: {
        "content": pytesseract.image_to_string(req.image, config="--psm 7 -c tessedit_char_whitelist=0123456789")
        if "number" in req.prompt
        else "a transcription"
    }
    return fake_openai


def play(
    ns: Namespace, lines: list[str], edits: dict[str, str], user: str | None = None, start: str = "/", prefix: str = ""
) -> dict[str, subprocess.CompletedProcess]:
    """Each line as written (after `prefix`); `cd` carries over; lines needing systemd are skipped; `edits`
    replaces the editor steps. Returns each line's result."""
    cwd, out = start, {}
    for line in lines:
        if line.startswith(NEEDS_SYSTEMD + DONE_BY_THE_TEST) or " && systemctl " in line:
            continue
        if line.startswith("cd "):
            cwd = ns.run(f"{prefix}{line} && pwd", user=user, cwd=cwd).stdout.decode().strip()
            continue
        command = edits[line] if line.split()[0] in ("sudoedit", "editor") else line
        out[line] = ns.run(prefix + command, user=user, cwd=cwd)
    return out


def test_the_documented_steps_install_the_system_service(ns, reading_model, tmp_path):
    lines = install_block("## Run it as a service", 0)
    skipped = [x for x in lines if x.startswith(NEEDS_SYSTEMD + DONE_BY_THE_TEST) or " && systemctl " in x]
    assert skipped == [
        "git clone <this repo> /opt/handwatch",
        "make setup",
        "systemctl daemon-reload && systemctl enable --now handwatch",
        "systemctl status handwatch",
        "journalctl -u handwatch -f",
        "systemctl reload handwatch",
    ]
    # The world before the install steps: a sync tool's user who owns the synced folders.
    ns.run("useradd --create-home syncthing")
    ns.run(
        "mkdir -p /srv/sync/Camera /srv/sync/Scans/Recipes /srv/sync/Scans/Letters /srv/sync/Scans/Printed "
        "&& chown -R syncthing:syncthing /srv/sync"
    )
    edit = f"sed -i 's#http://127.0.0.1:1234/v1#{reading_model.url}#' /etc/handwatch/config.yaml"
    results = play(ns, lines, {"sudoedit /etc/handwatch/config.yaml": edit})

    check = results["runuser -u handwatch -- /opt/handwatch/.venv/bin/handwatch -c /etc/handwatch/config.yaml check"]
    assert "checking /etc/handwatch/config.yaml" in check.stdout.decode()
    assert "reads images" in check.stdout.decode() and "ok    tesseract: tesseract-" in check.stdout.decode()
    verify = results["systemd-analyze verify handwatch.service"]
    assert verify.stderr == b"" and verify.stdout == b""
    ids = (
        ns.run("id handwatch; getent passwd handwatch; stat -c '%U:%G %a' /etc/handwatch/config.yaml /srv/sync/Camera")
        .stdout.decode()
        .splitlines()
    )
    assert "sync" in ids[0]
    assert ids[1].endswith(":/var/lib/handwatch:/usr/sbin/nologin")
    assert ids[2:] == ["root:handwatch 640", "syncthing:sync 2775"]
    dropin = ns.run("cat /etc/systemd/system/handwatch.service.d/folders.conf").stdout.decode()
    assert "ReadWritePaths=-/srv/sync/Camera" in dropin and "SupplementaryGroups=sync" in dropin

    # The service, started the way the unit starts it (StateDirectory= made first, as systemd does).
    ns.run("install -d -o handwatch -g handwatch -m 0700 /var/lib/handwatch")
    listener = NotifyListener()
    log = tmp_path / "service.log"
    unit = "/etc/systemd/system/handwatch.service"
    start = (
        f"umask 0077; export STATE_DIRECTORY=/var/lib/handwatch CONFIGURATION_DIRECTORY=/etc/handwatch "
        f"NOTIFY_SOCKET={listener.address} WATCHDOG_USEC=2000000; "
        f"exec setpriv --reuid=handwatch --regid=handwatch --init-groups "
        f"{PY} /opt/handwatch/tests/support/sandbox.py {unit} /opt/handwatch/.venv/bin/handwatch run"
    )
    service = subprocess.Popen(ns.argv(start), stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        wait_for(lambda: "READY=1" in listener.lines() or service.poll() is not None, 60, what="READY=1")
        assert service.poll() is None, log.read_text()
        photo, printed = io.BytesIO(), io.BytesIO()
        inked((64, 48)).save(photo, "JPEG")
        draw_page(["Printed page"], size=(900, 300)).save(printed, "PNG")
        ns.run("cat > /srv/sync/Camera/IMG_1.jpg", user="syncthing", stdin=photo.getvalue())
        ns.run("cat > /srv/sync/Scans/Printed/scan.png", user="syncthing", stdin=printed.getvalue())
        wait_for(
            lambda: ns.exists("/srv/sync/Camera/IMG_1.md") and ns.exists("/srv/sync/Scans/Printed/scan.md"),
            60,
            interval=0.25,
            what="Markdown in the synced folders",
        )
        wait_for(lambda: ns.exists("/srv/sync/Scans/Printed/done/scan.png"), 30, interval=0.25, what="moved original")
        md = (
            ns.run("stat -c '%U:%G %a' /srv/sync/Camera/IMG_1.md /srv/sync/Scans/Printed/done /var/lib/handwatch/state.sqlite3")
            .stdout.decode()
            .splitlines()
        )
        assert md[0] == "handwatch:sync 644" and md[1] == "handwatch:sync 2775"
        assert md[2].startswith("handwatch:handwatch 6")  # the state: private
        assert "transcription" in ns.run("cat /srv/sync/Camera/IMG_1.md", user="syncthing").stdout.decode()
        ns.run("touch /srv/sync/Scans/Printed/done/written-by-syncthing", user="syncthing")  # still theirs to use
        status = ns.run("/opt/handwatch/.venv/bin/handwatch -c /etc/handwatch/config.yaml status", user="handwatch")
        assert "\npending 0  running 0  done 1  failed 0" in status.stdout.decode()  # a moved one leaves no job
        service.send_signal(signal.SIGHUP)
        wait_for(
            lambda: listener.index("READY=1", after=listener.index("RELOADING=1")) > 0 and listener.index("RELOADING=1") >= 0,
            30,
            what="a reload",
        )
        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0, log.read_text()
        assert "STOPPING=1" in listener.lines()
    finally:
        service.kill()
        service.wait()
        listener.close()


def test_the_documented_steps_install_the_user_service(ns, reading_model):
    lines = install_block("## Run it as a service", 1)
    ns.run("useradd --create-home --shell /bin/bash alice")
    uid = ns.run("id -u alice").stdout.decode().strip()
    ns.run(
        f"mkdir -p /home/alice/handwatch /home/alice/Sync/Camera && chown -R alice: /home/alice "
        f"&& mount --bind {REPO} /home/alice/handwatch && mount -o remount,bind,ro /home/alice/handwatch "
        f"&& install -d -o alice -g alice -m 0700 /run/user/{uid}"
    )
    config = f"endpoints:\\n  - url: {reading_model.url}\\nfolders:\\n  - path: ~/Sync/Camera\\n"
    edit = f"printf '{config}' > ~/.config/handwatch/config.yaml"
    results = play(
        ns,
        lines,
        {"editor ~/.config/handwatch/config.yaml": edit},
        user="alice",
        start="/home/alice",
        prefix=f"export HOME=/home/alice XDG_RUNTIME_DIR=/run/user/{uid}; ",
    )
    check = results["~/handwatch/.venv/bin/handwatch check"].stdout.decode()
    assert "checking /home/alice/.config/handwatch/config.yaml" in check  # found without -c
    assert "ok    folder /home/alice/Sync/Camera: " in check and "reads images" in check
    verify = results["systemd-analyze verify --user handwatch.service"]
    assert verify.stderr == b""
    assert ns.exists("/home/alice/.config/systemd/user/handwatch.service")

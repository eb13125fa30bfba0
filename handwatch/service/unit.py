"""`handwatch unit`: the parts of the system unit that depend on the configuration, as a systemd drop-in.

systemd/handwatch.service makes the whole file system read-only (ProtectSystem=strict) and hides
/home (ProtectHome=yes); the watched folders must be named in the unit to be writable, the groups that
own them given to the service, and the program's own path must be right. Written from the config, so
the unit and the config cannot drift apart unnoticed: run it again after changing the folders."""

from __future__ import annotations

import grp
import os
import shutil
import sys
from pathlib import Path

from handwatch.config.schema import Config

SERVICE_CONFIG = Path("/etc/handwatch/config.yaml")  # what the unit's ConfigurationDirectory= gives
SERVICE_STATE = Path("/var/lib/handwatch")  # StateDirectory=handwatch
SERVICE_GROUP = "handwatch"
HOMES = (Path("/home"), Path("/root"), Path("/run/user"))  # what ProtectHome=yes hides


def program() -> list[str]:
    """How systemd should start this very installation of handwatch."""
    script = Path(sys.executable).parent / "handwatch"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("handwatch")
    return [found] if found else [sys.executable, "-m", "handwatch"]


def _under(path: Path, roots) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _quote(path: Path | str) -> str:
    """A path as one word of a systemd directive (spaces and quotes escaped the way systemd reads them,
    `%` doubled so it is not read as a specifier: `%o` is the OS's name); a `-` prefix goes inside the quotes."""
    text = str(path).replace("%", "%%")
    if any(c in text for c in " \"'\\\t"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _bind(path: Path) -> str:
    """One BindPaths= entry: systemd splits it at `:` (source:destination), so a colon in the folder's name is
    written `\\:` (read so, quoted or not)."""
    return _quote(f"-{path}").replace(":", "\\:")


def drop_in(cfg: Config) -> str:
    source = Path(cfg.source).resolve() if cfg.source != "<defaults>" else None
    folders = [f.path for f in cfg.folders]
    lines = [
        f"# Drop-in for handwatch.service, written by `handwatch unit` for {source or 'the built-in defaults'}.",
        "# Install:  sudo mkdir -p /etc/systemd/system/handwatch.service.d",
        "#           handwatch unit | sudo tee /etc/systemd/system/handwatch.service.d/folders.conf",
        "#           sudo systemctl daemon-reload && sudo systemctl restart handwatch",
        "# Run it again and restart after adding a folder: a reload cannot open the sandbox to a new folder.",
        "[Service]",
        "# This installation of handwatch.",
        "ExecStart=",
    ]
    start = program() + ([] if source in (None, SERVICE_CONFIG) else ["-c", str(source)]) + ["run"]
    lines.append("ExecStart=" + " ".join(_quote(Path(p)).replace("$", "$$") for p in start))  # `$X` would be a variable
    lines += [
        "# The watched folders, writable ('-': a folder not there yet, a share not mounted, is no error).",
        "ReadWritePaths=",
    ]
    writable = [p for p in folders if not _under(p, HOMES)]
    notes = []
    if _under(cfg.state_dir, HOMES):  # the default ~/.local/state/handwatch of whoever ran this
        notes.append(
            f"# state_dir {cfg.state_dir} is in a home directory; a config without state_dir uses "
            f"{SERVICE_STATE} (StateDirectory=) under the unit."
        )
    elif not _under(cfg.state_dir, [SERVICE_STATE]):
        writable.append(cfg.state_dir)  # a state_dir outside StateDirectory=: create it, owned by handwatch
    lines += [f"ReadWritePaths={_quote(f'-{p}')}" for p in writable]
    homes = [p for p in folders if _under(p, HOMES)]
    if homes:
        lines += ["# Folders in home directories: an empty /home with only these folders mounted in.", "ProtectHome=tmpfs"]
        lines += [f"BindPaths={_bind(p)}" for p in homes]
    groups = []
    for p in folders:
        try:
            gid = os.stat(p).st_gid
            name = grp.getgrgid(gid).gr_name
        except (OSError, KeyError):
            notes.append(f"# {p} does not exist yet (or is not visible to whoever ran this): give it a group listed here.")
            continue
        if gid == 0:
            notes.append(f"# {p} belongs to the group root: give it a group of its own (chgrp -R sync {p}).")
        elif name not in groups and name != SERVICE_GROUP:
            groups.append(name)
    if groups:
        lines += [
            "# The groups that own the folders: handwatch reads and writes through them (g+rwX).",
            "SupplementaryGroups=",
            "SupplementaryGroups=" + " ".join(groups),
        ]
    lines += notes
    remote = [ep.url for ep in cfg.endpoints if ep.allow_remote]
    if remote or cfg.notify is not None:
        why = "endpoints with allow_remote: true" if remote else "notifications through services on the internet"
        lines += [f"# {why}: addresses beyond the local network are allowed.", "IPAddressDeny="]
    return "\n".join(lines) + "\n"

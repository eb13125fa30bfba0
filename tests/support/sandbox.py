"""Run a command under the seccomp filters systemd would install for systemd/handwatch.service.

There is no systemd in the test container, so this builds the same kernel filters with libseccomp
(the library systemd itself uses) and then execs the command, as systemd does just before it starts
the service:
- SystemCallFilter=@system-service, ~@privileged @resources, SystemCallErrorNumber=EPERM: an allow
  list read from `systemd-analyze syscall-filter` (the sets of the installed systemd), EPERM otherwise;
- MemoryDenyWriteExecute=yes: mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding
  PROT_EXEC and shmat with SHM_EXEC fail with EPERM (systemd's seccomp_memory_deny_write_execute);
- RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6: socket() of any other family fails with
  EAFNOSUPPORT;
- NoNewPrivileges=yes (libseccomp sets it when loading a filter).
The settings are read from the unit file, so the test follows the unit.

Usage: python tests/support/sandbox.py UNIT-FILE PROGRAM [ARG...]"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import subprocess
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_MASKED_EQ = 4, 5, 7
SHM_EXEC = 0o100000
AF_MAX = 46


def errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _lib():
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    return lib


def unit_settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in open(unit, encoding="utf-8"):
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def syscall_set(name: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd set (`@system-service`), nested sets expanded."""
    seen = set() if seen is None else seen
    if name in seen:
        return set()
    seen.add(name)
    text = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    calls: set[str] = set()
    for line in text.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        calls |= syscall_set(word, seen) if word.startswith("@") else {word}
    return calls


def _rule(lib, ctx, action: int, call: str, *cmps: ArgCmp) -> None:
    nr = lib.seccomp_syscall_resolve_name(call.encode())
    if nr < 0:
        return  # not a system call on this architecture
    arr = (ArgCmp * len(cmps))(*cmps) if cmps else None
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    if rc < 0:
        raise OSError(-rc, f"seccomp_rule_add {call}: {os.strerror(-rc)}")


def _load(lib, ctx) -> None:
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def install(unit: str) -> list[str]:
    """Load the filters the unit asks for; returns what was applied."""
    s = unit_settings(unit)
    lib = _lib()
    applied = []
    if s.get("MemoryDenyWriteExecute", ["no"])[-1] in ("yes", "true", "1"):
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        wx = mmap.PROT_WRITE | mmap.PROT_EXEC
        for call in ("mmap", "mmap2"):
            _rule(lib, ctx, errno_action(errno.EPERM), call, ArgCmp(2, SCMP_CMP_MASKED_EQ, wx, wx))
        for call in ("mprotect", "pkey_mprotect"):
            _rule(lib, ctx, errno_action(errno.EPERM), call, ArgCmp(2, SCMP_CMP_MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC))
        _rule(lib, ctx, errno_action(errno.EPERM), "shmat", ArgCmp(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        _load(lib, ctx)
        applied.append("MemoryDenyWriteExecute")
    families = s.get("RestrictAddressFamilies", [])
    if families:
        allowed = {getattr(socket, name) for value in families for name in value.split()}
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        for fam in range(AF_MAX):
            if fam not in allowed:
                _rule(lib, ctx, errno_action(errno.EAFNOSUPPORT), "socket", ArgCmp(0, SCMP_CMP_EQ, fam, 0))
        _rule(lib, ctx, errno_action(errno.EAFNOSUPPORT), "socket", ArgCmp(0, SCMP_CMP_GE, AF_MAX, 0))
        _load(lib, ctx)
        applied.append(f"RestrictAddressFamilies: {sorted(allowed)}")
    # Last, as systemd does: the allow list refuses seccomp() itself, so nothing could be loaded after it.
    allow: set[str] = set()
    deny: set[str] = set()
    for value in s.get("SystemCallFilter", []):
        negate = value.startswith("~")
        for word in value.lstrip("~").split():
            calls = syscall_set(word) if word.startswith("@") else {word}
            (deny if negate else allow).update(calls)
    if allow:
        code = getattr(errno, s.get("SystemCallErrorNumber", ["EPERM"])[-1])
        ctx = lib.seccomp_init(errno_action(code))
        for call in sorted(allow - deny):
            _rule(lib, ctx, SCMP_ACT_ALLOW, call)
        _load(lib, ctx)
        applied.append(f"SystemCallFilter: {len(allow - deny)} system calls allowed")
    return applied


if __name__ == "__main__":
    unit, program = sys.argv[1], sys.argv[2:]
    install(unit)
    os.execvp(program[0], program)

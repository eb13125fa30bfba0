"""PDF pages through poppler (`pdfinfo`, `pdftoppm`), each run under a time and memory limit."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from handwatch.errors import InputError
from handwatch.prepare import notices

MEMORY = 2 << 30  # address space for each poppler process
TIMEOUT_S = 120
HEADER_WITHIN = 1024  # readers (poppler, Acrobat) accept %PDF- anywhere in the first 1,024 bytes


def header_offset(head: bytes) -> int | None:
    """Where `%PDF-` starts: scanners and mail gateways sometimes put bytes before it."""
    at = head.find(b"%PDF-", 0, HEADER_WITHIN + 5)
    return at if 0 <= at <= HEADER_WITHIN else None


def limited(cmd: list[str], memory: int = MEMORY) -> list[str]:
    """`cmd` run through prlimit, which sets the limit on itself and then execs the command.

    Not `preexec_fn`: Python runs it between fork and exec, which its documentation warns can
    deadlock the child when other threads exist (they do: workers, the watchdog), and which also
    forces the slow fork path instead of vfork/posix_spawn. prlimit is util-linux (essential on
    Debian); the exec keeps the pid, so a timeout's kill reaches poppler itself."""
    return ["prlimit", f"--as={memory}", "--", *cmd]


def run(cmd: list[str], memory: int = MEMORY, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    tool = cmd[0]
    for needed in ("prlimit", tool):
        if shutil.which(needed) is None:
            package = "util-linux" if needed == "prlimit" else "poppler-utils"
            raise InputError(f"cannot read PDFs: {needed} ({package}) is not installed")
    try:
        return subprocess.run(limited(cmd, memory), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InputError(f"PDF: {tool} took longer than {timeout:g} s") from None


def _said(stderr: bytes) -> list[str]:
    """poppler's messages, without its "Syntax Error: " style prefixes, each once."""
    lines = [
        re.sub(r"^(Syntax |Command Line |Internal )?(Error|Warning)( \(\d+\))?: ", "", line).strip()
        for line in stderr.decode(errors="replace").splitlines()
    ]
    return list(dict.fromkeys(line for line in lines if line))


def _why(proc: subprocess.CompletedProcess) -> str:
    said = _said(proc.stderr)
    if said:
        return notices.summary(said[-2:])
    if proc.returncode < 0:
        return f"killed by signal {-proc.returncode} (out of memory under the {MEMORY >> 30} GiB limit?)"
    return f"exit code {proc.returncode} and no message"


def page_count(path: Path, max_pages: int, memory: int = MEMORY) -> int:
    """From pdfinfo; a PDF that needs a password to open fails here, owner-only restrictions do not."""
    proc = run(["pdfinfo", str(path)], memory)
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace")
        if "Incorrect password" in text or "encrypted" in text.lower():
            raise InputError("encrypted PDF: save an unprotected copy to transcribe it")
        raise InputError(f"corrupt PDF: {_why(proc)}")
    found = re.search(rb"^Pages:\s+(\d+)", proc.stdout, re.MULTILINE)
    count = int(found.group(1)) if found else 0
    if count < 1:
        raise InputError("PDF has no pages")
    if count > max_pages:
        raise InputError(f"PDF has {count} pages, over the max_pages limit of {max_pages}")
    for line in _said(proc.stderr):
        notices.say(f"pdfinfo: {line}")
    return count


def render_page(path: Path, n: int, max_side: int, tmp: Path, memory: int = MEMORY) -> np.ndarray:
    """Render straight to the target size (`-scale-to`), not a fixed DPI."""
    prefix = tmp / f"p{n}"
    # PPM, not PNG: uncompressed output is written and read in ~40 ms a page against ~115 ms.
    proc = run(
        ["pdftoppm", "-f", str(n), "-l", str(n), "-scale-to", str(max_side), "-singlefile", str(path), str(prefix)], memory
    )
    out = prefix.with_suffix(".ppm")
    if proc.returncode != 0 or not out.exists():
        raise InputError(f"PDF page {n} cannot be rendered: {_why(proc)}")
    for line in _said(proc.stderr):
        notices.say(f"pdftoppm: {line}")
    page = cv2.imread(str(out), cv2.IMREAD_COLOR_RGB)
    if page is None:
        raise InputError(f"PDF page {n}: pdftoppm wrote an unreadable image")
    # pdftoppm exits 0 with a 1x1 image when a page is broken, absurdly large, or its pixels do
    # not fit in the memory limit.
    if min(page.shape[:2]) < 16:
        raise InputError(f"PDF page {n} rendered to {page.shape[1]}x{page.shape[0]} px: the page is broken or absurdly large")
    return page

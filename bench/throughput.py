"""Throughput, memory, latency and idle cost of the running daemon against a simulated batching server.

    python -m bench.throughput            # the full run (300 photos per burst; ~15 min on 2 cores)
    python -m bench.throughput --quick    # fewer files and seconds: a smoke run
    python -m bench.throughput --only burst,latency,idle,rescan

- burst: N generated phone photos (JPEG, some HEIC, a few multi-page PDFs) dropped at once into the
  watched folder of a real `handwatch run` subprocess whose endpoint is `bench/batching.py` with C
  slots of 0.5 s (capacity C / 0.5 pages/s, less the 0.1 s of a slot each camera-roll question
  takes) and `max_concurrency: C`. Pages/s from the first request
  to the last reply, as a share of capacity and of what two cores can prepare (2 / client CPU-s per
  page, measured in the same run from /proc), peak RSS; and the baseline in the same run: one request
  at a time (C = 1) on the first files of the same set.
- latency: files renamed into place one at a time; rename → the request reaching the server.
- idle: the daemon over done files, with `rescan_s` 600 (default) and 5 (the minimum): CPU share of a
  core, CPU per rescan, RSS.
- rescan: the start-up walk over many done files: its time, the process's CPU and peak RSS."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bench import gen
from bench.batching import BatchingServer

SIZES = {"1600x1200": (1600, 1200), "12MP": (4032, 3024)}
TICK = os.sysconf("SC_CLK_TCK")
CACHE = Path(os.environ.get("HANDWATCH_BENCH_CACHE", Path(tempfile.gettempdir()) / "handwatch-bench"))


# --- inputs -------------------------------------------------------------------------------------------


def _stamp(im: Image.Image, i: int) -> Image.Image:
    """A number in the corner: every file has bytes of its own (the same bytes would reuse a text)."""
    im = im.copy()
    f = ImageFont.truetype(gen.FONTS["print"], max(14, im.size[0] // 60))
    ImageDraw.Draw(im).text((im.size[0] // 40, im.size[1] - im.size[1] // 20), f"#{i}", font=f, fill=(40, 40, 40))
    return im


def photos(size_name: str, n: int, pdfs: int = 4, pdf_pages: int = 5) -> list[tuple[str, bytes]]:
    """(name, bytes): `n` files, of which `pdfs` are PDFs of `pdf_pages` scanned pages and one in ten
    of the rest HEIC; cached on disk, since a 12 MP HEIC takes seconds to encode."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    size = SIZES[size_name]
    cache = CACHE / f"{size_name}-{n}-{pdfs}x{pdf_pages}"
    if (cache / "done").exists():
        return [(p.name, p.read_bytes()) for p in sorted(cache.iterdir()) if p.name != "done"]
    cache.mkdir(parents=True, exist_ok=True)
    notes = [
        gen.NOTE,
        ["Dentist Tuesday 3 pm", "Pick up the parcel", "Water the tomatoes"],
        gen.RECIPE,
        ["Meeting notes", "Budget approved", "Next review in May", "Ask Sam about the van"],
    ]
    bases = [gen.phone_photo(lines, size=size, degrees=3.0 + 2 * k) for k, lines in enumerate(notes)]
    scans = [gen.page(lines, size=(1700, 2200), font="humor", font_size=64) for lines in notes]
    out = []
    for i in range(n):
        if i < pdfs:
            pages = [_stamp(scans[(i + k) % len(scans)], 1000 * i + k) for k in range(pdf_pages)]
            buf = io.BytesIO()
            pages[0].save(buf, "PDF", save_all=True, append_images=pages[1:], resolution=200, quality=85)
            name = f"scan-{i:03d}.pdf"
        elif i % 10 == 5:
            buf = io.BytesIO()
            _stamp(bases[i % len(bases)], i).save(buf, "HEIF", quality=60)
            name = f"IMG_{i:04d}.HEIC"
        else:
            buf = io.BytesIO()
            _stamp(bases[i % len(bases)], i).save(buf, "JPEG", quality=88)
            name = f"IMG_{i:04d}.jpg"
        (cache / name).write_bytes(buf.getvalue())
        out.append((name, buf.getvalue()))
    (cache / "done").touch()
    return sorted(out)


def pages_of(files: list[tuple[str, bytes]], pdf_pages: int) -> int:
    return sum(pdf_pages if name.endswith(".pdf") else 1 for name, _ in files)


# --- the daemon ---------------------------------------------------------------------------------------


class Daemon:
    def __init__(
        self, root: Path, url: str, slots: int, settle_s: float = 1.0, rescan_s: float = 600.0, code: Path | None = None
    ):
        self.inbox = root / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "daemon.log"
        cfg = root / "config.yaml"
        self.web = f"127.0.0.1:{free_port()}"  # its /metrics says where the CPU went, stage by stage
        cfg.write_text(
            f"state_dir: {root / 'state'}\nrescan_s: {rescan_s}\nlog_level: info\n"
            f"endpoints:\n  - url: {url}\n    model: sim-vl\n    max_concurrency: {slots}\n    timeout_s: 120\n"
            f"    confidence: 'off'\n"
            f"defaults:\n  settle_s: {settle_s}\nfolders:\n  - path: {self.inbox}\nweb:\n  listen: {self.web}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANDWATCH")}
        if code is not None:  # another build of handwatch: the baseline's
            env["PYTHONPATH"] = str(code)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "handwatch", "-c", str(cfg), "run"],
            env=env,
            cwd=root,  # not the checkout's: `-m` puts the working directory ahead of PYTHONPATH
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "wb"),
            stdin=subprocess.DEVNULL,
        )
        wait(lambda: self.count("daemon.ready") or self.proc.poll() is not None, 60, "daemon ready")
        if self.proc.poll() is not None:
            raise SystemExit(f"the daemon did not start:\n{self.log_path.read_text()[-3000:]}")

    def events(self, name: str) -> list[dict]:
        out = []
        with open(self.log_path, "rb") as f:
            for line in f:
                if name.encode() in line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        return [e for e in out if e.get("event") == name]

    def count(self, name: str) -> int:
        return len(self.events(name))

    def _ticks(self, first: int, last: int) -> float:
        """Seconds from fields `first`..`last` (after the name) of /proc/PID/stat: 11-12 the process's own
        user and system time, 13-14 its waited-for children's."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[first : last + 1]) / TICK

    def cpu_s(self) -> float:
        """User + system CPU of the daemon and its waited-for children (pdftoppm, pdfinfo)."""
        return self._ticks(11, 14)

    def children_cpu_s(self) -> float:
        """The waited-for children's part of `cpu_s` (poppler rendering PDF pages)."""
        return self._ticks(13, 14)

    def stage_cpu_s(self) -> dict[tuple[str, str], float]:
        """{(stage, kind): CPU seconds} from the daemon's own `handwatch_cpu_seconds` counter."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"http://{self.web}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "handwatch_cpu_seconds":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        out[(sample.labels["stage"], sample.labels["kind"])] = sample.value
        return out

    def cpu_wait_s(self) -> float:
        """Seconds the daemon's threads spent runnable but waiting for a core (/proc schedstat): CPU it
        wanted and the other processes had. A thread waiting for the GIL sleeps and is not counted."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                pass  # a thread that ended meanwhile
        return total / 1e9

    def memory_mb(self) -> tuple[float, float]:
        """(RSS now, peak RSS) in MB."""
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_busy_s() -> float:
    """CPU-seconds every process on the machine has used (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def wait(cond, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def drop(files: list[tuple[str, bytes]], root: Path, inbox: Path) -> None:
    """Written beside the folder, then renamed in: every file appears whole, all at once."""
    staging = root / "staging"
    staging.mkdir(exist_ok=True)
    for name, data in files:
        (staging / name).write_bytes(data)
    for name, _ in files:
        os.rename(staging / name, inbox / name)


# --- the measurements ---------------------------------------------------------------------------------


def burst(files: list[tuple[str, bytes]], pages: int, slots: int, seconds: float, code: Path | None = None) -> dict:
    server = BatchingServer(slots, seconds).start()
    root = Path(tempfile.mkdtemp(prefix="hw-burst-"))
    d = Daemon(root, server.url, slots, code=code)
    try:
        drop(files, root, d.inbox)
        wait(lambda: server.arrived, 120, "the first request")
        cpu0, busy0, queued0 = d.cpu_s(), machine_busy_s(), d.cpu_wait_s()
        stages0, children0 = d.stage_cpu_s(), d.children_cpu_s()
        peak_rss = 0.0
        deadline = time.monotonic() + 60 + pages * seconds * 3
        while len(server.replied) < pages:
            peak_rss = max(peak_rss, d.memory_mb()[1])
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(server.replied)} of {pages} pages answered")
            time.sleep(0.05)
        cpu1, busy1, queued1 = d.cpu_s(), machine_busy_s(), d.cpu_wait_s()
        stages1, children1 = d.stage_cpu_s(), d.children_cpu_s()
        wait(lambda: d.count("file.transcribed") >= len(files), 60, "every Markdown")
        span = server.replied[-1] - server.arrived[0]
        time.sleep(3)  # the monitor hands the free heap back once the work has run out
        rss, peak = d.memory_mb()
        rate = len(server.replied) / span
        cpu_page = (cpu1 - cpu0) / len(server.replied)
        # The server's capacity in pages/s, its slots also answering the camera roll's question about each photo.
        looks = len(server.looked) / len(server.replied)
        capacity = slots / (seconds + looks * server.look_seconds)
        return {
            "slots": slots,
            "files": len(files),
            "pages": len(server.replied),
            "seconds": span,
            "pages_s": rate,
            "capacity": rate / capacity,
            "looks": looks,
            "cpu_page_ms": 1000 * cpu_page,
            "prep_bound": 2 / cpu_page,
            "of_prep": rate / (2 / cpu_page),
            "busy_peak": server.busy_peak,
            "peak_rss_mb": peak,
            "rss_after_mb": rss,
            "cores": (cpu1 - cpu0) / span,
            "others": (busy1 - busy0 - (cpu1 - cpu0)) / span,
            # cores' worth of CPU its threads were ready to use and did not get: with `cores`, what it asked for
            "queued": (queued1 - queued0) / span,
            "split": split(files, len(server.replied), stages0, stages1, children1 - children0, cpu1 - cpu0),
        }
    finally:
        d.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


STAGES = ("intake", "gate", "decode", "prepare", "ink", "encode", "request", "publish")
KINDS = {".jpg": "jpeg", ".HEIC": "heif", ".pdf": "pdf"}


def split(files: list[tuple[str, bytes]], n: int, before: dict, after: dict, children: float, total: float) -> dict:
    """The burst's client CPU per page, stage by stage (the daemon's own counters over the same span):
    {"all": {stage: ms}, "jpeg"/"heif"/"pdf": {stage: ms per page of that kind}}. Poppler's children are
    the PDF pages' decoding; *other* is what no stage counted (threads waiting, watching, logging, the GC)."""
    spent = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    pages = {kind: sum(KINDS[Path(name).suffix] == kind for name, _ in files) for kind in ("jpeg", "heif")}
    pages["pdf"] = n - sum(pages.values())  # `n` pages in all
    out: dict = {"all": {st: 1000 * sum(v for (s, _), v in spent.items() if s == st) / n for st in STAGES}}
    out["all"]["poppler"] = 1000 * children / n
    out["all"]["other"] = 1000 * total / n - sum(out["all"].values())
    for kind, count in pages.items():
        if count:
            row = {st: 1000 * spent.get((st, kind), 0.0) / count for st in STAGES}
            row["poppler"] = 1000 * children / count if kind == "pdf" else 0.0
            out[kind] = row
    out["pages"] = pages
    return out


def latency(files: list[tuple[str, bytes]], settle_s: float, seconds: float) -> dict:
    server = BatchingServer(8, seconds).start()
    root = Path(tempfile.mkdtemp(prefix="hw-latency-"))
    d = Daemon(root, server.url, 8, settle_s=settle_s)
    staging = root / "staging"
    staging.mkdir()
    delays = []
    try:
        for i, (name, data) in enumerate(files):
            (staging / name).write_bytes(data)
            t0 = time.monotonic()
            os.rename(staging / name, d.inbox / name)
            wait(lambda t0=t0: [t for t in server.first if t >= t0], 60, f"the request for {name}", every=0.005)
            delays.append(min(t for t in server.first if t >= t0) - t0)  # its first: the camera roll's question
            wait(lambda i=i: len(server.replied) > i, 60, f"the reply for {name}", every=0.01)
            time.sleep(0.2)  # one at a time: nothing else in flight when the next file arrives
    finally:
        d.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    delays.sort()
    p90 = delays[max(0, int(round(0.9 * len(delays))) - 1)]
    return {
        "files": len(delays),
        "settle_s": settle_s,
        "p50": statistics.median(delays),
        "p90": p90,
        "max": delays[-1],
        "p90_beyond": p90 - settle_s,
    }


def done_files(root: Path, n: int) -> Path:
    """`n` small files recorded as done in the state database, as a daemon that transcribed them leaves them."""
    from handwatch.safefs import file_sig
    from handwatch.store.jobs import JobQueue
    from handwatch.store.state import StateDB

    inbox = root / "inbox"
    db = StateDB(root / "state")
    q = JobQueue(db)
    with db.transaction():
        for i in range(n):
            d = inbox / f"{i // 1000:03d}"
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"IMG_{i:06d}.jpg"
            data = b"\xff\xd8\xff" + i.to_bytes(8, "big") * 8
            p.write_bytes(data)
            (d / f"IMG_{i:06d}.md").write_text("---\n---\ntext\n")
            q.record(p, hashlib.sha256(data).hexdigest(), file_sig(p), "done", d / f"IMG_{i:06d}.md")
    db.close()
    return inbox


def idle(n: int, watch_s: float) -> dict:
    """The same done files watched twice: with the default rescan_s (600 s: no walk in the window) and
    with the minimum (5 s); the difference per walk is what a rescan costs."""
    out = {"files": n, "seconds": watch_s}
    for rescan_s in (600, 5):
        server = BatchingServer(4, 0.5).start()
        root = Path(tempfile.mkdtemp(prefix="hw-idle-"))
        done_files(root, n)
        d = Daemon(root, server.url, 4, rescan_s=rescan_s)
        try:
            wait(lambda d=d: d.count("rescan.done"), 300, "the start-up walk")
            time.sleep(3)
            cpu0, t0, scans0 = d.cpu_s(), time.monotonic(), d.count("rescan.done")
            time.sleep(watch_s)
            cpu1, t1, scans1 = d.cpu_s(), time.monotonic(), d.count("rescan.done")
            share = (cpu1 - cpu0) / (t1 - t0)
            if rescan_s == 600:
                out.update(idle_share=share, rss_mb=d.memory_mb()[0])
            else:
                out.update(
                    rescans=scans1 - scans0,
                    rescan_cpu_s=max(0.0, (share - out["idle_share"]) * (t1 - t0)) / max(1, scans1 - scans0),
                    walk_ms=statistics.median(e.get("duration_ms", 0) for e in d.events("rescan.done")[1:]),
                    share_5s=share,
                    rss_5s_mb=d.memory_mb()[0],
                )
        finally:
            d.stop()
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
    out["share_default"] = out["idle_share"] + out["rescan_cpu_s"] / 600
    return out


def rescan(n: int) -> dict:
    server = BatchingServer(4, 0.5).start()
    root = Path(tempfile.mkdtemp(prefix="hw-rescan-"))
    done_files(root, n)
    d = Daemon(root, server.url, 4)
    try:
        cpu_start = d.cpu_s()
        ev = wait(lambda: d.events("rescan.done"), 600, "the start-up walk", every=0.2)[0]
        cpu = d.cpu_s() - cpu_start
        rss, peak = d.memory_mb()
        return {
            "files": n,
            "walk_s": ev.get("duration_ms", 0) / 1000,
            "cpu_s": cpu,
            "rss_mb": rss,
            "peak_rss_mb": peak,
            "queued": ev.get("queued"),
            "requests": len(server.arrived),
        }
    finally:
        d.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- the report ---------------------------------------------------------------------------------------


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return f"{os.cpu_count()} cores ({model}), load average before the run {os.getloadavg()[0]:.2f}"


def checkout(ref: str) -> Path:
    """The handwatch package of commit `ref`, unpacked beside the bench's cache: the baseline's code."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], capture_output=True, text=True, check=True).stdout.strip()
    out = CACHE / f"code-{sha}"
    if not (out / "handwatch").exists():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "handwatch"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def print_split(runs: list[tuple[str, str, dict]]) -> None:
    """Where each burst's client CPU went, ms per page: every page, then the pages of each kind
    (whose rows leave out intake, publishing and *other*, which are a file's, not a kind's)."""
    cols = (*STAGES, "poppler", "other")
    print("\n| photos | C | pages of | pages | " + " | ".join(cols) + " | total |")
    print("|---|---|---|---|" + "---|" * (len(cols) + 1))
    for size, label, r in runs:
        sp = r["split"]
        if not sum(sp["all"][st] for st in STAGES):
            continue  # a build without the counters (the baseline's)
        for kind in ("all", "jpeg", "heif", "pdf"):
            if kind not in sp or (kind != "all" and not sp["pages"].get(kind)):
                continue
            row = sp[kind]
            n = r["pages"] if kind == "all" else sp["pages"][kind]
            cells = " | ".join(f"{row[c]:.0f}" if c in row else "" for c in cols)
            print(f"| {size} | {label} | {kind} | {n} | {cells} | {sum(row.values()):.0f} |")
    print(flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer files and shorter waits")
    ap.add_argument("--only", default="burst,latency,idle,rescan")
    ap.add_argument("--sizes", default="1600x1200,12MP")
    ap.add_argument("--slots", default="8,32")
    ap.add_argument("--seconds", type=float, default=0.5, help="each request's time on the server")
    ap.add_argument("--baseline", metavar="REF", help="also run each burst with the handwatch of this commit (e.g. 98d85c3)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    q = args.quick
    print(f"# machine: {machine()}\n")
    if "burst" in only:
        n, pdfs, pdf_pages = (60, 2, 3) if q else (300, 4, 5)
        print(
            "| photos | C | files | pages | pages/s | of capacity | client CPU/page | 2 cores prepare | of that "
            "| slots busy (peak) | cores used | other processes | cores it waited for | peak RSS | RSS 3 s after |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        splits = []
        for size in args.sizes.split(","):
            files = photos(size, n, pdfs, pdf_pages)
            pages = pages_of(files, pdf_pages)
            base_files = files[pdfs : pdfs + (8 if q else 20)]
            runs = [burst(base_files, len(base_files), 1, args.seconds)]
            runs += [burst(files, pages, int(c), args.seconds) for c in args.slots.split(",")]
            labels = ["baseline: one at a time"] + args.slots.split(",")
            if args.baseline:
                old = checkout(args.baseline)
                runs += [burst(files, pages, int(c), args.seconds, old) for c in args.slots.split(",")]
                labels += [f"{c}, baseline: {args.baseline}" for c in args.slots.split(",")]
            for label, r in zip(labels, runs, strict=True):
                print(
                    f"| {size} | {label} | {r['files']} | {r['pages']} | {r['pages_s']:.2f} | {r['capacity']:.0%} "
                    f"| {r['cpu_page_ms']:.0f} ms | {r['prep_bound']:.1f}/s | {r['of_prep']:.0%} | {r['busy_peak']} "
                    f"| {r['cores']:.2f} | {r['others']:.2f} cores | {r['queued']:.2f} | {r['peak_rss_mb']:.0f} MB | {r['rss_after_mb']:.0f} MB |",
                    flush=True,
                )
                splits.append((size, label, r))
        print_split(splits)
    if "latency" in only:
        files = photos("1600x1200", 60, 0, 0)[: 15 if q else 50]
        r = latency(files, 1.0, args.seconds)
        print("| files, one at a time | settle_s | rename → request p50 | p90 | max | p90 beyond settle_s |")
        print("|---|---|---|---|---|---|")
        print(
            f"| {r['files']} | {r['settle_s']:.1f} s | {r['p50']:.3f} s | {r['p90']:.3f} s | {r['max']:.3f} s "
            f"| {r['p90_beyond']:.3f} s |\n",
            flush=True,
        )
    if "idle" in only:
        r = idle(2000 if q else 10_000, 20 if q else 60)
        print(
            "| done files | idle CPU (no walk) | CPU per rescan | walk (median) | idle CPU, rescan_s 600 (default) "
            "| idle CPU, rescan_s 5 (minimum) | RSS |"
        )
        print("|---|---|---|---|---|---|---|")
        print(
            f"| {r['files']} | {r['idle_share']:.2%} of a core | {r['rescan_cpu_s']:.2f} s | {r['walk_ms']:.0f} ms "
            f"| {r['share_default']:.2%} | {r['share_5s']:.2%} | {r['rss_mb']:.0f} MB |\n",
            flush=True,
        )
    if "rescan" in only:
        r = rescan(20_000 if q else 100_000)
        print("| done files | start-up walk | daemon CPU until it ends | RSS | peak RSS | files queued |")
        print("|---|---|---|---|---|---|")
        print(
            f"| {r['files']} | {r['walk_s']:.1f} s | {r['cpu_s']:.1f} s | {r['rss_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB "
            f"| {r['queued']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""The camera roll's document check (transcribe/gate.py), measured on real photos and hard generated pages.

    python -m bench.gate                       # local look; whole gate against the scripted server; CPU per skipped photo
    python -m bench.gate --endpoint URL --model M   # the whole gate against a real model instead

Sets, each labelled document / photo / blank:
  real      bench/data/gate (labels.csv, PROVENANCE.md): phone and camera photos from public repositories' test
            folders — notebooks, whiteboards, faint pencil, colour casts, paper on a table; pets, food, travel
  skimage   the photos scikit-image ships in its wheel (astronaut, coffee, cat, rocket, …), when it is installed
            (`pip install scikit-image`: a bench-only dependency; absent, the set is left out and said so)
  generated bench/gen.py's hard pages (tilt, shadow, uneven light, lined and coloured paper, a sticky note, a
            whiteboard, a small note in a large frame, faint pencil), a garden, a blank sheet; scans and a PDF

Three tables, each against a named baseline in the same run:
  1. the local look alone: documents wrongly skipped (target 0) and photos caught without any request, beside
     the ink measure that used to drop pages ("blank page") before this check existed
  2. the whole gate against the scripted server answering by label: requests and image tokens per photo and
     per document, and the extra tokens a document costs against no gate (`documents_only: false`)
  3. client CPU per skipped photo against a full preparation of the same photo (decode, prepare, encode)
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image

from bench import gen

DATA = Path(__file__).parent / "data" / "gate"
MODES = {"none": False, "auto": "auto", "true": True}  # documents_only in each run of table 2
PAGE_REPLY_TOKENS = 250  # a handwritten page's transcription, ~180 words: what a document costs besides its image
# scikit-image's own photos (skimage/data, in the wheel) and what they are; its coffee, chelsea, camera, page and
# text are in the real set already (bench/data/gate, as committed copies).
SKIMAGE = {
    "astronaut": "photo",
    "rocket": "photo",
    "hubble_deep_field": "photo",
    "coins": "photo",
    "moon": "photo",
    "grass": "photo",
    "gravel": "photo",
    "brick": "photo",
    "clock": "photo",
    "retina": "photo",
    "immunohistochemistry": "photo",
}


@dataclass(frozen=True)
class Item:
    path: Path
    label: str  # document | photo | blank
    group: str  # real | skimage | generated


def real_items() -> list[Item]:
    with open(DATA / "labels.csv", newline="") as f:
        return [Item(DATA / row["file"], row["label"], "real") for row in csv.DictReader(f)]


def skimage_items(folder: Path) -> list[Item]:
    try:
        from skimage import data
    except ImportError:
        return []
    out = []
    for name, label in SKIMAGE.items():
        arr = getattr(data, name)()
        im = Image.fromarray(arr)
        path = folder / f"skimage-{name}.jpg"  # as a camera folder receives them
        im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode).save(path, quality=92)
        out.append(Item(path, label, "skimage"))
    return out


def generated_items(folder: Path) -> list[Item]:
    """Pages photographed the hard ways, two scenes with no words, and what a scanner drops."""
    size = (2400, 1800)
    note = gen.page(gen.NOTE, size=size, font="dkg")
    photos = {
        "tilted.jpg": gen.tilt(note, 7),
        "shadow.jpg": gen.shadow(gen.page(gen.RECIPE, size=size)),
        "uneven-light.jpg": gen.hard_shadow(note),
        "lined.jpg": gen.perspective(gen.page(gen.NOTE, size=size, rules="ruled")),
        "coloured-paper.jpg": gen.on_table(gen.page(gen.RECIPE, size=size, paper=(246, 226, 170))),
        "sticky-note.jpg": _small_on_table(gen.page(["Milk", "Eggs", "Call Tom"], (700, 700), "dkg", 90, (255, 236, 120))),
        "whiteboard.jpg": gen.whiteboard(),
        "small-note-large-frame.jpg": _small_on_table(gen.page(["back at 5"], (520, 300), "dkg", 60), frame=(4032, 3024)),
        "faint-pencil.jpg": gen.low_contrast(gen.page(gen.NOTE, size=size, ink=(120, 120, 125)), 0.4),
        "card-on-table.jpg": gen.card_on_table(),
    }
    out = []
    for name, im in photos.items():
        im.convert("RGB").save(folder / f"gen-{name}", quality=88)
        out.append(Item(folder / f"gen-{name}", "document", "generated"))
    gen.garden().save(folder / "gen-garden.jpg", quality=88)
    out.append(Item(folder / "gen-garden.jpg", "photo", "generated"))
    gen.noise(Image.new("RGB", (1600, 1200), (236, 232, 222)), 3).save(folder / "gen-blank-sheet.jpg", quality=88)
    out.append(Item(folder / "gen-blank-sheet.jpg", "blank", "generated"))
    gen.page(gen.RECIPE, size=(1700, 2200), font="print", font_size=48).save(folder / "gen-scan.png")
    out.append(Item(folder / "gen-scan.png", "document", "generated"))
    gen.page(gen.NOTE, size=(1700, 2200)).save(folder / "gen-scan.pdf", resolution=200)
    out.append(Item(folder / "gen-scan.pdf", "document", "generated"))
    return out


def _small_on_table(card: Image.Image, frame=(1600, 1200)) -> Image.Image:
    table = gen.wood(frame)
    table.paste(card, ((frame[0] - card.width) // 2, (frame[1] - card.height) // 2))
    return gen.noise(table, 4)


# --- 1. the local look ----------------------------------------------------------------------------------------


def local_look(items: list[Item]) -> list[tuple]:
    """Per item: (item, empty by the look at its own preview, blank by the old ink measure, look CPU ms, empty by the
    look at a reduced copy of the page's decode)."""
    from handwatch.config.preprocess import Preprocess
    from handwatch.prepare import inputs, preprocess
    from handwatch.transcribe import doubt, gate

    opts = preprocess.for_engine(Preprocess(), "vlm")
    rows = []
    for it in items:
        ref = inputs.open_pages(it.path, opts.max_side or 1288, 100, 50)[0]
        t = time.process_time()
        empty = gate.empty(ref.preview(gate.LOOK_SIDE, gate.LEAST_SIDE).image)
        look_ms = (time.process_time() - t) * 1000
        page = ref.load()
        # What the daemon looks at when the file carries no thumbnail: a reduced copy of the page's own decode.
        from_page = gate.empty(page.reduced(gate.LOOK_SIDE).image)
        old_blank = doubt.measure_ink(preprocess.prepare(page.image, opts, page.photo)).blank
        rows.append((it, empty, old_blank, look_ms, from_page))
    return rows


def print_local_look(rows: list[tuple]) -> None:
    print("\n## 1. The local look alone (no request) — baseline: the ink measure that dropped pages before\n")
    print(
        "| set | documents | wrongly skipped by the look | called blank by the ink measure | photos | caught by the look "
        "| from the page's decode: skipped documents, caught photos |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for group in ("real", "skimage", "generated", "all"):
        sel = [r for r in rows if group in ("all", r[0].group)]
        if not sel:
            continue
        docs = [r for r in sel if r[0].label == "document"]
        photos = [r for r in sel if r[0].label != "document"]
        print(
            f"| {group} | {len(docs)} | {sum(r[1] for r in docs)} | {sum(r[2] for r in docs)} | {len(photos)} | "
            f"{sum(r[1] for r in photos)} ({_share(sum(r[1] for r in photos), len(photos))}) | "
            f"{sum(r[4] for r in docs)}, {sum(r[4] for r in photos)} |"
        )
    wrong = [r[0].path.name for r in rows if r[0].label == "document" and r[1]]
    inked = [r[0].path.name for r in rows if r[0].label == "document" and r[2]]
    print(f"\ndocuments the look would skip: {wrong or 'none'}")
    print(f"documents the ink measure called blank (dropped before this check): {inked or 'none'}")


def _share(k: int, n: int) -> str:
    return f"{100 * k / n:.0f} %" if n else "-"


# --- 2. the whole gate against a server -------------------------------------------------------------------------


def image_tokens(size: tuple[int, int] | None) -> int:
    """What a Qwen2.5-VL server counts for an image: one token per 28x28 patch (two 14 px patches merged each way)."""
    if not size:
        return 0
    return math.ceil(size[0] / 28) * math.ceil(size[1] / 28)


def whole_gate(items: list[Item], url: str | None, model: str | None) -> dict:
    """Every item through the real pipeline three times — documents_only false (no gate), auto (what a camera
    folder gets: camera formats only) and true (every file checked) — with the scripted server answering
    classification requests by the item's label, or a real server. A throwaway page goes first in each mode, so
    no file pays for the one-time imports and connection."""
    from handwatch.config import loader
    from handwatch.errors import HandwatchError, NotADocument
    from handwatch.service.pipeline import Pipeline
    from handwatch.store.state import StateDB
    from tests.support.fakeopenai import FakeOpenAI, kind_reply

    fake = None if url else FakeOpenAI().start()
    results: dict = {mode: [] for mode in MODES}
    try:
        for mode, documents_only in MODES.items():
            with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
                root = Path(tmp)
                cfg_path = root / "config.yaml"
                endpoint = {"url": url or fake.url, "model": model or "fake-vl-7b", "allow_remote": bool(url)}  # type: ignore[union-attr]
                cfg_path.write_text(
                    yaml.safe_dump(
                        {
                            "state_dir": str(root / "state"),
                            "endpoints": [endpoint],
                            "defaults": {"documents_only": documents_only},
                        }
                    )
                )
                cfg = loader.load(cfg_path)
                pipeline = Pipeline(cfg, StateDB(cfg.state_dir))
                warm = root / "warm-up.jpg"
                gen.page(gen.NOTE, size=(800, 600)).save(warm, quality=85)
                pipeline.process(warm)
                for it in items:
                    copy = root / it.path.name
                    shutil.copyfile(it.path, copy)
                    if fake is not None:
                        fake.classify = kind_reply({"document": "note", "photo": "photo", "blank": "blank"}[it.label])
                        fake.requests.clear()
                        fake.classifications.clear()
                    t = time.process_time()
                    try:
                        pipeline.process(copy)
                        outcome = "transcribed"
                    except NotADocument as e:
                        outcome = f"skipped ({e.kind})"
                    except HandwatchError as e:
                        outcome = f"failed ({e})"
                    cpu_ms = (time.process_time() - t) * 1000
                    if fake is not None:
                        sent = [image_tokens(r.image_size) for r in fake.requests]
                        asked = [image_tokens(r.image_size) for r in fake.classifications]
                        prompt = sum(len(r.prompt) // 4 for r in fake.requests + fake.classifications)
                    else:
                        sent, asked, prompt = [], [], 0
                    results[mode].append((it, outcome, len(sent), len(asked), sum(sent), sum(asked), prompt, cpu_ms))
    finally:
        if fake is not None:
            fake.stop()
    return results


def print_whole_gate(results: dict) -> None:
    print("\n## 2. The whole gate against the scripted server (answers by label) — baseline: no gate\n")
    print(
        "| files | mode | transcribed | skipped | requests per file | image tokens per file | + text, a reply of "
        f"{PAGE_REPLY_TOKENS} per transcribed page |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    totals = {}
    for label in ("document", "photo"):
        for mode in MODES:
            rows = [r for r in results[mode] if (r[0].label == "document") == (label == "document")]
            if not rows:
                continue
            n = len(rows)
            requests = sum(r[2] + r[3] for r in rows) / n
            image = sum(r[4] + r[5] for r in rows) / n
            total = sum(r[4] + r[5] + r[6] + PAGE_REPLY_TOKENS * r[2] + 15 * r[3] for r in rows) / n
            totals[(label, mode)] = total
            done = sum(r[1] == "transcribed" for r in rows)
            print(f"| {label}s ({n}) | {mode} | {done} | {n - done} | {requests:.2f} | {image:.0f} | {total:.0f} |")
    for mode in ("auto", "true"):
        extra = totals[("document", mode)] / totals[("document", "none")] - 1
        saved = 1 - totals[("photo", mode)] / totals[("photo", "none")]
        wrong = [r[0].path.name for r in results[mode] if r[0].label == "document" and r[1] != "transcribed"]
        print(
            f"\ndocuments_only {mode}: a document costs {100 * extra:+.1f} % tokens (target <= 15 %); a non-document "
            f"saves {100 * saved:.0f} %; documents not transcribed: {wrong or 'none'}"
        )


# --- 3. client CPU per skipped photo ----------------------------------------------------------------------------


def full_preparation_ms(path: Path, repeat: int) -> float:
    """The baseline: what transcribing the photo would cost this machine before any request (decode at the model's
    size, even the light, straighten, encode the JPEG)."""
    from handwatch.config.preprocess import Preprocess
    from handwatch.prepare import inputs, preprocess

    opts = preprocess.for_engine(Preprocess(), "vlm")
    times = []
    for _ in range(repeat):
        t = time.process_time()
        for ref in inputs.open_pages(path, opts.max_side or 1288, 100, 50):
            page = ref.load()
            preprocess.encode_jpeg(preprocess.prepare(page.image, opts, page.photo), 90)
        times.append((time.process_time() - t) * 1000)
    return statistics.median(times)


def print_cpu(results: dict, repeat: int) -> None:
    print("\n## 3. Client CPU per skipped photo — baseline: a full preparation of the same photo\n")
    print("| photo | megapixels | skipped with the gate, ms | full preparation, ms | ratio (target <= 1/5 at 12 MP) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    skipped = [r for r in results["true"] if r[1].startswith("skipped")]
    ratios = []
    for r in sorted(skipped, key=lambda r: -_megapixels(r[0].path))[:12]:
        base = full_preparation_ms(r[0].path, repeat)
        ratios.append(r[7] / base)
        print(f"| {r[0].path.name} | {_megapixels(r[0].path):.1f} | {r[7]:.0f} | {base:.0f} | {r[7] / base:.2f} |")
    if ratios:
        print(f"\nmedian ratio over these photos: {statistics.median(ratios):.2f}")


def _megapixels(path: Path) -> float:
    from handwatch.prepare import decode

    decode.ensure_heif()
    with Image.open(path) as im:
        return im.width * im.height / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", help="a real OpenAI-compatible server for table 2 instead of the scripted one")
    ap.add_argument("--model")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each full preparation (the median is shown)")
    args = ap.parse_args()
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
    from handwatch import log

    log.setup("warning")
    with tempfile.TemporaryDirectory(prefix="bench-gate-items-") as tmp:
        items = real_items() + skimage_items(Path(tmp)) + generated_items(Path(tmp))
        if not any(i.group == "skimage" for i in items):
            print("scikit-image is not installed: its photos are left out (pip install scikit-image)")
        counts = {g: sum(i.group == g for i in items) for g in ("real", "skimage", "generated")}
        print(f"# bench.gate: {len(items)} files ({', '.join(f'{k} {v}' for k, v in counts.items())})")
        print_local_look(local_look(items))
        results = whole_gate(items, args.endpoint, args.model)
        print_whole_gate(results)
        print_cpu(results, args.repeat)
        table = [
            (r[0].path.name, r[0].label, r[1]) for r in results["true"] if (r[0].label == "document") != (r[1] == "transcribed")
        ]
        print(f"\nfiles documents_only true judged against their label: {table or 'none'}")


if __name__ == "__main__":
    main()

"""Originals as a browser can show them: each page (PDF, HEIC, TIFF …) decoded by handwatch's own reader, sent as JPEG."""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from handwatch.prepare import inputs

FULL_SIDE, THUMB_SIDE = 2400, 320
SMALL_SIDE = 256  # the skipped view's thumbnails: many on one page, each only needs to be recognised
MAX_MEGAPIXELS, MAX_PAGES = 200.0, 500


class Renderer:
    """A small LRU of rendered pages, keyed by the file's size and mtime, so a changed original is rendered anew."""

    def __init__(self, capacity: int = 96):
        self.capacity = capacity
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def page_count(self, path: Path) -> int:
        """Raises InputError (with handwatch's usual reason) for a file that cannot be shown."""
        return len(inputs.open_pages(path, THUMB_SIDE, MAX_MEGAPIXELS, MAX_PAGES))

    def jpeg(self, path: Path, number: int, max_side: int) -> bytes | None:
        """Page `number` (from 1) no larger than `max_side`; None when there is no such page."""
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns, number, max_side)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        refs = inputs.open_pages(path, max_side, MAX_MEGAPIXELS, MAX_PAGES)
        if not 1 <= number <= len(refs):
            return None
        page = refs[number - 1].load()
        if page.image is None:  # load() always decodes; a page without pixels has nothing to show
            return None
        im = Image.fromarray(page.image)
        if max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.convert("RGB" if im.mode not in ("RGB", "L") else im.mode).save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return data

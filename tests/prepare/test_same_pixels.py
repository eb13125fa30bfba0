"""No page reads worse: the preparation, made cheaper, stays close to what it made before, on the bench's
generated pages. The references are the grey levels of the same pages prepared by handwatch at commit ce98ca4,
before issue #25 changed any pixel (tests/data/prepared/PROVENANCE.md).

SSIM (scikit-image's structural similarity, on grey levels) at least 0.995 on every page. Why that floor
(docs/develop/benchmarks.md, "Same pixels"): the changes made for speed stay at 0.9975 or above, and every page
bench.legibility reads is byte for byte what ce98ca4 made; whatever else was tried and rejected falls below it
on at least one page: no denoise 0.955 (sensor noise that CLAHE amplifies, 2.5x the JPEG bytes), a 3x3 median
instead of the bilateral filter 0.827 (the squared paper's thin lines erased), a 3x3 Gaussian 0.974, a smaller
bilateral filter 0.985, plain bilinear shrinking 0.992 (moire on the 12 MP page).

The pages are drawn with Pillow's BASIC text layout and the fonts .ci/run installs; a new Pillow whose FreeType
draws glyphs differently may need the references made again: `python -m bench.samepixels --baseline ce98ca4
--save tests/data/prepared` (which draws them with the current Pillow and ce98ca4's preparation)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from bench import pages

REFERENCES = Path(__file__).parent.parent / "data" / "prepared"
FLOOR = 0.995


@pytest.mark.parametrize("name", pages.NAMES)
def test_the_prepared_page_stays_close_to_the_old_preparation(name, tmp_path):
    grey = pages.prepared(name, tmp_path)
    before = np.asarray(Image.open(REFERENCES / f"{name}.png"))
    assert grey.shape == before.shape
    assert structural_similarity(before, grey, data_range=255) >= FLOOR

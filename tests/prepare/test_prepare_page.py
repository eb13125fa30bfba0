"""`prepare_page` hands the ink measure the prepared pixels as an array, so it need not copy them back out of
Pillow (issue #25): the array must be the very page that is sent, and measure the same ink."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handwatch.config.preprocess import Preprocess
from handwatch.prepare import pixels, preprocess
from handwatch.transcribe.doubt import measure_ink

PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"


@pytest.mark.parametrize(
    "name", ["document-notebook-lined-blue-ink.jpg", "document-sticky-note-iphone6.jpg", "document-handwritten-math-angle.png"]
)
@pytest.mark.parametrize("sharpen", [False, True])
def test_the_array_is_the_page_sent_and_measures_the_same_ink(name, sharpen):
    opts = preprocess.for_engine(Preprocess(sharpen=sharpen), "vlm")
    with Image.open(PHOTOS / name) as im:
        source = pixels.pixels(im)
    image, arr = preprocess.prepare_page(source, opts, photo=True)
    assert np.array_equal(pixels.luma(pixels.pixels(image)), pixels.luma(arr))
    assert measure_ink(arr) == measure_ink(image)
    assert np.array_equal(np.asarray(preprocess.prepare(source, opts, photo=True)), np.asarray(image))


def test_a_turned_colour_page_keeps_three_channels():
    """The warp takes RGB as it is (quicker than padding to RGBX with OpenCV 5): no fourth channel appears."""
    opts = preprocess.for_engine(Preprocess(), "vlm")
    with Image.open(PHOTOS / "document-handwritten-math-angle.png") as im:
        source = pixels.pixels(im.convert("RGB"))
    image, arr = preprocess.prepare_page(source, opts, photo=True)
    assert arr.ndim == 3 and arr.shape[2] == 3 and image.mode == "RGB"

"""Photos that are not (only) documents: the clean-up finds the paper and leaves the rest alone.

Each photo is generated (bench/gen.py): a handwritten card on a dark wooden table, a garden
with no text, a whiteboard on a wall, a label on a jam jar."""

import numpy as np
import pytest

from bench import gen
from handwatch.config.preprocess import Preprocess
from handwatch.prepare import paper, pixels, preprocess, skew

OPTS = preprocess.for_engine(Preprocess(), "vlm")  # the defaults: deskew on, contrast on for photos


def prepared(im) -> np.ndarray:
    out = preprocess.prepare(im, OPTS, photo=True)
    return np.asarray(out.convert("RGB"))


def resized(im) -> np.ndarray:
    return pixels.fit_array(np.asarray(im), OPTS.max_side, OPTS.max_pixels)


def region_luma(arr: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Mean luma of a box given as fractions of the picture (x0, y0, x1, y1)."""
    h, w = arr.shape[:2]
    x0, y0, x1, y1 = box
    return float(pixels.luma(np.ascontiguousarray(arr[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)])).mean())


@pytest.mark.parametrize("seed", [2, 5, 9])
def test_a_garden_with_no_text_is_only_resized(seed):
    im = gen.garden(seed=seed)
    assert paper.find(pixels.luma(resized(im))) is None
    out = prepared(im)
    base = resized(im)
    assert out.shape == base.shape  # not turned
    assert np.abs(out.astype(int) - base).max() == 0  # not washed out: the very same pixels
    assert np.array_equal(preprocess.contrast_array(base), base)


def test_a_dark_wooden_table_alone_is_left_alone():
    im = gen.wood(seed=4)
    out, base = prepared(im), resized(im)
    assert out.shape == base.shape and np.abs(out.astype(int) - base).max() == 0


def test_a_card_on_a_dark_table_is_straightened_and_cleaned_but_the_table_stays_dark():
    im = gen.card_on_table(seed=1, degrees=4.0)
    base = resized(im)
    angle = skew.estimate_skew(pixels.luma(base), where=paper.find(pixels.luma(base)))
    assert angle is not None and abs(angle - 4.0) < 1.0  # read off the card's lines, not the wood grain
    out = prepared(im)
    for box in [(0.05, 0.1, 0.25, 0.9), (0.75, 0.1, 0.95, 0.9)]:  # table left and right of the card
        assert abs(region_luma(out, box) - region_luma(base, box)) < 8, box  # was turned white (69 -> 234)
    card = (0.42, 0.42, 0.58, 0.58)
    assert region_luma(out, card) >= region_luma(base, card) - 2  # the card's paper is not darkened


def test_a_whiteboard_is_cleaned_and_the_wall_around_it_kept():
    im = gen.whiteboard()
    base, out = resized(im), prepared(im)
    assert out.shape == base.shape  # its text is straight: not turned
    wall = (0.0, 0.0, 1.0, 0.06)
    assert abs(region_luma(out, wall) - region_luma(base, wall)) < 5
    board_corner = (0.7, 0.65, 0.85, 0.8)  # empty board in the darker (shadowed) corner
    assert region_luma(out, board_corner) > region_luma(base, board_corner) + 15  # evened out
    # The marker colours stay: the red line is still red, the blue still blue.
    h, w = out.shape[:2]
    words = out[int(0.12 * h) : int(0.75 * h), int(0.1 * w) : int(0.9 * w)].reshape(-1, 3).astype(int)
    red = words[(words[:, 0] - words[:, 1] > 80)]
    blue = words[(words[:, 2] - words[:, 0] > 80)]
    assert len(red) > 500 and len(blue) > 500


def test_a_jar_label_is_cleaned_and_the_kitchen_kept():
    im = gen.jar_label()
    base, out = resized(im), prepared(im)
    assert abs(out.shape[1] - base.shape[1]) <= 0.02 * base.shape[1]  # at most a slight turn for a curved label
    for box in [(0.02, 0.05, 0.25, 0.6), (0.75, 0.05, 0.98, 0.6), (0.35, 0.2, 0.65, 0.35), (0.05, 0.8, 0.95, 0.95)]:
        assert abs(region_luma(out, box) - region_luma(base, box)) < 6, box  # tiles, jam, counter: as they were


def test_documents_are_still_cleaned():
    """The same defaults still straighten and even out a phone photo of a page."""
    im = gen.phone_photo()
    base, out = resized(im), prepared(im)
    assert out.shape != base.shape  # turned by its 6 degrees
    dark_corner = (0.8, 0.8, 0.95, 0.95)  # the gradient darkens this corner of the page
    assert region_luma(out, dark_corner) > region_luma(base, dark_corner) + 30

"""Where the paper is: the smooth, bright regions of a photo that carry ink, found on a small
copy. Deskew reads text lines only there and contrast only changes it, so a card on a dark
table keeps its table, and a photo with no page at all (a garden, a face) is left alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from handwatch.prepare.pixels import shrink_by

WORK_PX = 256  # long side of the working copy: paper is a large-scale property
SMOOTH = 6.0  # grey levels of local spread (5x5, ink closed away) that paper stays under
INK_LEVEL, INK_SHARE = 20, 0.2  # ink: darker than the paper around it (closed away) by this much and this share
CLEAN_LEVEL, CLEAN = 12, 0.75  # and most of paper is clean: measured >= 0.84 on pages, <= 0.48 on a lawn
MIN_SHARE = 0.02  # a paper region covers at least this much of the frame
MIN_INK, MAX_INK = 0.003, 0.35  # ink on paper: some (one word on a page: 0.005; tiles, walls: 0), not texture everywhere
MIN_LEVEL = 0.4  # paper is at least this bright against the brightest paper: a hard shadow leaves ~0.45


@dataclass(frozen=True)
class Paper:
    weight: np.ndarray  # float32 in [0, 1] at the working size: 1 on paper, 0 elsewhere, feathered
    share: float  # how much of the frame is paper

    def at(self, shape: tuple[int, int]) -> np.ndarray:
        """The weight map resized to an image of `shape` (rows, columns)."""
        return cv2.resize(self.weight, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)

    def turned(self, angle: float) -> Paper:
        """The map of a picture turned counter-clockwise by `angle` onto a canvas grown to hold its
        corners, as `skew.rotate_fit_array` does: cheaper than looking for the paper again."""
        h, w = self.weight.shape
        rad = math.radians(angle)
        cw, ch = abs(w * math.cos(rad)) + abs(h * math.sin(rad)), abs(w * math.sin(rad)) + abs(h * math.cos(rad))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        m[0, 2] += cw / 2 - w / 2
        m[1, 2] += ch / 2 - h / 2
        weight = cv2.warpAffine(self.weight, m, (round(cw), round(ch)), flags=cv2.INTER_LINEAR, borderValue=0)
        return Paper(weight, float((weight >= 0.5).mean()))


def find(gray: np.ndarray) -> Paper | None:
    """The paper in a grey image, or None when there is none (no smooth bright region with ink)."""
    small = shrink_by(gray, max(1, round(max(gray.shape) / WORK_PX)))
    k = max(3, (min(small.shape) // 40) | 1)
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    depth = cv2.subtract(closed, small)
    ink = (depth > np.maximum(INK_LEVEL, INK_SHARE * closed)).astype(np.float32)
    clean = (depth < CLEAN_LEVEL).astype(np.float32)
    c = closed.astype(np.float32)
    mean = cv2.blur(c, (5, 5))
    spread = np.sqrt(np.maximum(cv2.blur(c * c, (5, 5)) - mean * mean, 0))
    smooth = (spread < SMOOTH).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(smooth, connectivity=4)
    if count < 2:
        return None
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    flat = labels.ravel()
    level = np.bincount(flat, c.ravel(), count) / np.maximum(areas, 1)
    # Ink counted away from each region's rim: where a bright region meets a dark one (a sky
    # and a hedge), the rim's pixels look like ink.
    inner = cv2.erode(smooth, np.ones((5, 5), np.uint8)).ravel().astype(bool)
    inner_areas = np.maximum(np.bincount(flat[inner], None, count), 1)
    density = np.bincount(flat[inner], ink.ravel()[inner], count) / inner_areas
    cleanness = np.bincount(flat[inner], clean.ravel()[inner], count) / inner_areas
    big = areas >= MIN_SHARE * small.size
    big[0] = False  # the background label: everything that is not smooth
    if not big.any():
        return None
    top = float(level[big].max())
    keep = big & (level >= MIN_LEVEL * top) & (density >= MIN_INK) & (density <= MAX_INK) & (cleanness >= CLEAN)
    if not keep.any():
        return None
    mask = keep[labels].astype(np.uint8)
    # Whatever lies inside a paper region (a drawing, a thick stroke, a stamp) is on the paper.
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(mask, contours, -1, 1, thickness=cv2.FILLED)
    share = float(mask.mean())
    weight = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
    return Paper(weight, share)

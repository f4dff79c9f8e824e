"""Pure pixel functions for showing predictions: colour, overlay, class filters, disagreement.

All take RGB uint8 HxWx3 images and trainId uint8 HxW label maps and work by lookup tables on
the whole array at once, so re-rendering after a change of transparency or classes is cheap.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from engine.classes import CATEGORIES, NUM_CLASSES, colorize

DISAGREE_COLOR = np.array([255, 0, 255], np.uint8)  # magenta: no Cityscapes class uses it


def visible_lut(visible: Iterable[int] | None = None) -> np.ndarray:
    """bool[256]: True for the trainIds to draw (None = all 19)."""
    lut = np.zeros(256, bool)
    lut[list(range(NUM_CLASSES)) if visible is None else [int(c) for c in visible]] = True
    return lut


def classes_in(*groups: str) -> list[int]:
    """trainIds of the official category groups (flat, construction, object, nature, sky, human, vehicle)."""
    unknown = set(groups) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; known: {sorted(CATEGORIES)}")
    return sorted(c for g in groups for c in CATEGORIES[g])


def mask_only(labels: np.ndarray, visible: Iterable[int] | None = None) -> np.ndarray:
    """The label map in the official colours; hidden classes are black."""
    return np.where(visible_lut(visible)[labels][..., None], colorize(labels), np.uint8(0))


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, visible: Iterable[int] | None = None) -> np.ndarray:
    """Blend the class colours over the image with opacity `alpha`; hidden classes show the image."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    alpha_lut = (visible_lut(visible) * float(np.clip(alpha, 0.0, 1.0))).astype(np.float32)
    a = alpha_lut[labels][..., None]
    out = image.astype(np.float32) * (1 - a) + colorize(labels).astype(np.float32) * a
    return np.rint(out).astype(np.uint8)


def disagreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bool HxW: where two label maps differ."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in size: {a.shape} vs {b.shape}")
    return a != b


def disagreement_image(image: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """The image in grey, with the pixels where the two models disagree in magenta."""
    grey = image.astype(np.float32).mean(axis=2, keepdims=True).repeat(3, axis=2)
    where = disagreement(a, b)[..., None]
    out = np.where(where, grey * (1 - alpha) + DISAGREE_COLOR * alpha, grey)
    return np.rint(out).astype(np.uint8)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two images of the same height next to each other with a white gap."""
    if left.shape[0] != right.shape[0]:
        raise ValueError(f"heights differ: {left.shape[0]} vs {right.shape[0]}")
    spacer = np.full((left.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([left, spacer, right], axis=1)

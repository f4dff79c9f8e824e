"""Pure pixel functions for showing predictions: colour, overlay, class filters, disagreement.

All take RGB uint8 HxWx3 images and trainId uint8 HxW label maps and work by lookup tables on
the whole array at once (plus OpenCV's saturating blend), so re-rendering after a change of
transparency or classes is cheap: a 2048x1024 overlay takes a few tens of milliseconds.
"""
from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from engine.classes import IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_TO_COLOR, colorize


def visible_lut(visible: Iterable[int] | None = None) -> np.ndarray:
    """bool[256]: True for the trainIds to draw (None = all 19)."""
    lut = np.zeros(256, bool)
    lut[list(range(NUM_CLASSES)) if visible is None else [int(c) for c in visible]] = True
    return lut


def mask_only(labels: np.ndarray, visible: Iterable[int] | None = None) -> np.ndarray:
    """The label map in the official colours; hidden classes are black."""
    lut = np.where(visible_lut(visible)[:, None], TRAIN_ID_TO_COLOR, np.uint8(0))
    return np.take(lut, labels, axis=0)


def _blend(image: np.ndarray, labels: np.ndarray, alpha: float, shown: np.ndarray) -> np.ndarray:
    """Class colours blended over `image` with opacity alpha where `shown` (bool HxW), the image elsewhere."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    alpha = float(np.clip(alpha, 0.0, 1.0))
    image = np.ascontiguousarray(image)
    out = cv2.addWeighted(image, 1.0 - alpha, colorize(labels), alpha, 0.0)
    cv2.copyTo(image, (~shown).view(np.uint8), out)
    return out


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, visible: Iterable[int] | None = None) -> np.ndarray:
    """Blend the class colours over the image with opacity `alpha`; hidden classes show the image."""
    return _blend(image, labels, alpha, np.take(visible_lut(visible), labels))


def grey(image: np.ndarray) -> np.ndarray:
    """The image in grey, still HxWx3."""
    return cv2.cvtColor(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def disagreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bool HxW: where two label maps differ."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in size: {a.shape} vs {b.shape}")
    return a != b


def disagreement_overlay(image: np.ndarray, labels: np.ndarray, other: np.ndarray, alpha: float = 0.5,
                         visible: Iterable[int] | None = None) -> np.ndarray:
    """What one model says where it disagrees with the other: its class colours over the grey image
    on the contested (and visible) pixels only."""
    shown = disagreement(labels, other) & np.take(visible_lut(visible), labels)
    return _blend(grey(image), labels, alpha, shown)


def errors(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """bool HxW: where a prediction differs from the ground truth (ignored pixels never count)."""
    if labels.shape != truth.shape:
        raise ValueError(f"prediction {labels.shape} and ground truth {truth.shape} differ in size")
    return (labels != truth) & (truth != IGNORE_INDEX)


def error_overlay(image: np.ndarray, labels: np.ndarray, truth: np.ndarray, alpha: float = 0.5,
                  visible: Iterable[int] | None = None) -> np.ndarray:
    """The pixels a model gets wrong, in the colour of what it predicted there, over the grey image
    (right and ignored pixels stay grey); `visible`: only wrong pixels predicted as these classes."""
    return _blend(grey(image), labels, alpha, errors(labels, truth) & np.take(visible_lut(visible), labels))


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two images of the same height next to each other with a white gap."""
    if left.shape[0] != right.shape[0]:
        raise ValueError(f"heights differ: {left.shape[0]} vs {right.shape[0]}")
    spacer = np.full((left.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([left, spacer, right], axis=1)


VIEW_MODES = {"overlay": "Overlay", "mask": "Mask only", "disagreement": "Where the models disagree"}


def render_view(mode: str, image: np.ndarray, labels: np.ndarray, other: np.ndarray | None = None,
                alpha: float = 0.5, visible: Iterable[int] | None = None) -> np.ndarray:
    """One model's output as shown on screen: `overlay`, `mask` (only the label colours) or
    `disagreement` (its colours only where it differs from the `other` model's labels)."""
    if mode == "overlay":
        return overlay(image, labels, alpha, visible)
    if mode == "mask":
        return mask_only(labels, visible)
    if mode == "disagreement":
        if other is None:
            raise ValueError("the disagreement view needs the other model's labels")
        return disagreement_overlay(image, labels, other, alpha, visible)
    raise ValueError(f"unknown view mode {mode!r}; expected one of {list(VIEW_MODES)}")

"""The Cityscapes class table, built from the official `cityscapesscripts.helpers.labels`.

Inside the engine label maps are trainIds (0-18, 255 = ignore); label ids only appear at
the file boundary (reading ground truth, writing predictions for the official evaluator).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from cityscapesscripts.helpers.labels import labels as _OFFICIAL_LABELS

from engine.errors import UsageError

IGNORE_INDEX = 255

# The 19 evaluated classes, ordered by trainId.
TRAIN_LABELS = sorted((l for l in _OFFICIAL_LABELS if 0 <= l.trainId < IGNORE_INDEX), key=lambda l: l.trainId)
NUM_CLASSES = len(TRAIN_LABELS)
CLASS_NAMES: list[str] = [l.name for l in TRAIN_LABELS]
CLASS_CATEGORIES: list[str] = [l.category for l in TRAIN_LABELS]
PALETTE = np.array([l.color for l in TRAIN_LABELS], dtype=np.uint8)  # (19, 3) RGB
CATEGORIES: dict[str, list[int]] = {}
for _l in TRAIN_LABELS:
    CATEGORIES.setdefault(_l.category, []).append(_l.trainId)

# Every label id that may appear in a gtFine *_labelIds.png (0..33; license plate is -1 and never stored).
VALID_LABEL_IDS = frozenset(l.id for l in _OFFICIAL_LABELS if l.id >= 0)
LABEL_ID_TO_NAME = {l.id: l.name for l in _OFFICIAL_LABELS if l.id >= 0}
NAME_TO_LABEL_ID = {l.name: l.id for l in _OFFICIAL_LABELS if l.id >= 0}

# labelId -> trainId lookup (uint8, 256 entries; every non-evaluated id maps to 255).
LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _l in _OFFICIAL_LABELS:
    if _l.id >= 0:
        LABEL_ID_TO_TRAIN_ID[_l.id] = _l.trainId if 0 <= _l.trainId < IGNORE_INDEX else IGNORE_INDEX

# trainId -> labelId lookup (uint8, 256 entries; 255 maps to 0 = unlabeled).
TRAIN_ID_TO_LABEL_ID = np.zeros(256, dtype=np.uint8)
for _l in TRAIN_LABELS:
    TRAIN_ID_TO_LABEL_ID[_l.trainId] = _l.id

# trainId -> color lookup (256 entries; ignore is black), for colouring a whole label map at once.
TRAIN_ID_TO_COLOR = np.zeros((256, 3), dtype=np.uint8)
TRAIN_ID_TO_COLOR[:NUM_CLASSES] = PALETTE


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a label-id map (any integer dtype, values 0..255) to trainIds."""
    return LABEL_ID_TO_TRAIN_ID[label_ids.astype(np.uint8, copy=False)]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    return TRAIN_ID_TO_LABEL_ID[train_ids.astype(np.uint8, copy=False)]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """HxW trainIds -> HxWx3 RGB uint8 in the official colors."""
    return np.take(TRAIN_ID_TO_COLOR, train_ids.astype(np.uint8, copy=False), axis=0)  # 2x faster than [ids]


def class_ids(names: Iterable[str]) -> list[int]:
    """Names of classes and/or official categories (flat, construction, object, nature, sky, human,
    vehicle) -> their trainIds, sorted; UsageError for a name that is neither."""
    ids: set[int] = set()
    for name in names:
        if name in CATEGORIES:
            ids |= set(CATEGORIES[name])
        elif name in CLASS_NAMES:
            ids.add(CLASS_NAMES.index(name))
        else:
            raise UsageError(f"unknown class or category {name!r}; classes: {', '.join(CLASS_NAMES)}; "
                             f"categories: {', '.join(CATEGORIES)}")
    return sorted(ids)

"""Read Cityscapes in its official layout (or the synthetic scenes written in the same layout).

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png   (or _gtFine_labelTrainIds.png)

Every problem is a `DatasetError` whose message names the file; nothing is skipped silently.
What every layout shares (samples, pairing, checked decoding, the cached dataset) is in `base`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine import settings
import engine.data.base as base
from engine.data.base import DatasetError, Pairing, Sample, SegmentationDataset, read_image  # noqa: F401 (re-exported)

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
# every file a gtFine/<split>/<city>/ folder may hold (the official ones, and cityscapesscripts' trainId conversions)
GT_SUFFIXES = (LABEL_ID_SUFFIX, TRAIN_ID_SUFFIX, "_gtFine_instanceIds.png", "_gtFine_instanceTrainIds.png",
               "_gtFine_color.png", "_gtFine_polygons.json")


def dataset_name(root: str | os.PathLike) -> str:
    """'synthetic' for scenes written by `engine synth`, else 'cityscapes'."""
    return base.dataset_name(root, "cityscapes")


def gt_path(image: Path, suffix: str) -> Path:
    """Where the gtFine file of `image` (root/leftImg8bit/split/city/stem_leftImg8bit.png) with `suffix` belongs."""
    return image.parents[3] / "gtFine" / image.parent.parent.name / image.parent.name / \
        f"{image.name[: -len(IMAGE_SUFFIX)]}{suffix}"


def pair_files(root: str | os.PathLike, split: str) -> Pairing:
    """Pair a split's images and labels without raising on what cannot be paired (`find_samples`
    raises on it); a missing root or split folder is a DatasetError."""
    root = Path(root)
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {root} does not exist. Set CITYSCAPES_DATASET to a Cityscapes download "
            f"(with leftImg8bit/ and gtFine/) or write the synthetic scenes with `python -m engine synth`."
        )
    for d in (image_dir, label_dir):
        base.require_dir(d, f"expected the official Cityscapes layout under {root}")
    return base.pair_nested(image_dir, label_dir, IMAGE_SUFFIX, ((TRAIN_ID_SUFFIX, True), (LABEL_ID_SUFFIX, False)),
                            GT_SUFFIXES, split)


def find_samples(root: str | os.PathLike, split: str) -> list[Sample]:
    return base.require_pairs(pair_files(root, split), (LABEL_ID_SUFFIX, TRAIN_ID_SUFFIX))


def remedy(sample: Sample) -> str:
    """What to do with a trainId map under the labelIds name, or the reverse."""
    if sample.train_ids:
        return (f"a *_labelIds map saved under the _labelTrainIds name; rename it to "
                f"{sample.stem}{LABEL_ID_SUFFIX}.")
    return (f"a *_labelTrainIds map saved under the _labelIds name; rename it to {sample.stem}{TRAIN_ID_SUFFIX}, "
            f"or write label ids.")


def read_label(sample: Sample) -> np.ndarray:
    """trainIds uint8 HxW (255 = ignore), checked against what the file claims to hold."""
    return base.read_label(sample, remedy)


class CityscapesDataset(SegmentationDataset):
    """(image, trainIds) pairs from the official layout (see `SegmentationDataset`: transform, cache).
    The default root is $CITYSCAPES_DATASET when set, else the synthetic dataset."""

    remedy = staticmethod(remedy)

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", transform=None,
                 cache: bool = False):
        root = settings.data_root(root)
        super().__init__(find_samples(root, split), root=root, split=split, name=dataset_name(root),
                         transform=transform, cache=cache)

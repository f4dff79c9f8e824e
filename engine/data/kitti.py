"""KITTI semantic segmentation (cvlibs.net/datasets/kitti, "semantics"): 200 labelled frames with
Cityscapes' 19 classes, the labels in Cityscapes label ids:

    training/image_2/{n}_10.png
    training/semantic/{n}_10.png        (also instance/, semantic_rgb/: not read)

Only `training/` has labels (`testing/` has none), so every split asked for ("train", "val", ...)
reads `training/`, and the dataset's `split` says so: "training".
"""
from __future__ import annotations

import os
from pathlib import Path

from engine import settings
import engine.data.base as base
from engine.data.base import DatasetError, Pairing, Sample, SegmentationDataset

SPLIT = "training"  # the only split with labels
SPLITS = (SPLIT,)  # what check-data looks at by default
SUFFIX = ".png"  # of images and labels alike


def split_folder(split: str) -> str:
    """'training' for any split but a test split (no labels in KITTI's testing/)."""
    if split in ("test", "testing"):
        raise DatasetError(f"KITTI's {split!r} split has no labels; only {SPLIT}/ (200 frames) can be evaluated")
    return SPLIT


def pair_files(root: str | os.PathLike, split: str = SPLIT) -> Pairing:
    root, split = Path(root), split_folder(split)
    base.require_root(root, "kitti", "KITTI semantics download (with training/image_2/ and training/semantic/)")
    image_dir, label_dir = root / split / "image_2", root / split / "semantic"
    for d in (image_dir, label_dir):
        base.require_dir(d, f"expected the KITTI semantics layout under {root} (training/image_2/ and "
                            f"training/semantic/)")
    return base.pair_flat(image_dir, label_dir, (SUFFIX,), SUFFIX, False, split)


def remedy(sample: Sample) -> str:
    return ("KITTI's semantic/ holds Cityscapes label ids, not trainIds; write label ids "
            "(engine.classes.train_ids_to_label_ids).")


class KITTIDataset(SegmentationDataset):
    """KITTI's labelled frames (see `SegmentationDataset`); `split` is always 'training' (see above). The
    default root is $KITTI_DATASET, else the synthetic copy."""

    remedy = staticmethod(remedy)

    def __init__(self, root: str | os.PathLike | None = None, split: str = "val", transform=None, *,
                 cache: bool = False):
        root = settings.dataset_root("kitti", root)
        super().__init__(base.require_pairs(pair_files(root, split)), root=root, split=split_folder(split),
                         name=base.dataset_name(root, "kitti"), transform=transform, cache=cache)

"""ACDC (Adverse Conditions Dataset with Correspondences; acdc.vision.ee.ethz.ch): Cityscapes' 19
classes in fog, night, rain and snow. A dataset is one condition:

    rgb_anon/{condition}/{split}/{sequence}/{sequence}_frame_{n}_rgb_anon.png
    gt/{condition}/{split}/{sequence}/{sequence}_frame_{n}_gt_labelIds.png    (Cityscapes label ids)

Splits: train, val (and test, without public labels). The clear-weather references
(`rgb_anon/{condition}/{split}_ref/`) are not read.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine import settings
import engine.data.base as base
from engine.data.base import DatasetError, Pairing, Sample, SegmentationDataset

CONDITIONS = ("fog", "night", "rain", "snow")
IMAGE_SUFFIX = "_rgb_anon.png"
LABEL_ID_SUFFIX = "_gt_labelIds.png"
GT_SUFFIXES = (LABEL_ID_SUFFIX, "_gt_labelTrainIds.png", "_gt_labelColor.png", "_gt_invIds.png")
SPLITS = ("train", "val")  # what check-data looks at by default (test has no public labels)


def check_condition(condition: str | None) -> str:
    if condition not in CONDITIONS:
        raise DatasetError(f"ACDC condition {condition!r} is not one of {', '.join(CONDITIONS)}"
                           + (" (one dataset is one condition; --condition all loops over them)"
                              if condition in (None, "", "all") else ""))
    return condition


def pair_files(root: str | os.PathLike, split: str, condition: str) -> Pairing:
    root, condition = Path(root), check_condition(condition)
    base.require_root(root, "acdc", "ACDC download (with rgb_anon/ and gt/)")
    image_dir, label_dir = root / "rgb_anon" / condition / split, root / "gt" / condition / split
    for d in (image_dir, label_dir):
        base.require_dir(d, f"expected the ACDC layout under {root} (rgb_anon/ and gt/, "
                            f"each {{condition}}/{{split}}/{{sequence}}/)")
    return base.pair_nested(image_dir, label_dir, IMAGE_SUFFIX, ((LABEL_ID_SUFFIX, False),), GT_SUFFIXES, split,
                            folder_word="sequence")


def remedy(sample: Sample) -> str:
    return f"ACDC's *{LABEL_ID_SUFFIX} hold Cityscapes label ids; write label ids (engine.classes.train_ids_to_label_ids)."


class ACDCDataset(SegmentationDataset):
    """One ACDC condition's split (see `SegmentationDataset`); the default root is $ACDC_DATASET,
    else the synthetic copy."""

    remedy = staticmethod(remedy)

    def __init__(self, root: str | os.PathLike | None = None, split: str = "val", transform=None, *,
                 condition: str, cache: bool = False):
        root = settings.dataset_root("acdc", root)
        super().__init__(base.require_pairs(pair_files(root, split, condition), (LABEL_ID_SUFFIX,)), root=root,
                         split=split, name=base.dataset_name(root, "acdc"), transform=transform, cache=cache,
                         condition=condition)

"""BDD100K semantic segmentation (bdd-data.berkeley.edu, doc.bdd100k.com): the 10K images labelled
with Cityscapes' 19 classes, the masks already in trainIds (255 = ignore):

    images/10k/{split}/{name}.jpg
    labels/sem_seg/masks/{split}/{name}.png

Splits: train (7000), val (1000); test (2000) has no public labels.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine import settings
import engine.data.base as base
from engine.data.base import Pairing, Sample, SegmentationDataset

IMAGE_SUFFIXES = (".jpg", ".jpeg")
LABEL_SUFFIX = ".png"
SPLITS = ("train", "val")  # what check-data looks at by default


def folders(root: Path, split: str) -> tuple[Path, Path]:
    return root / "images" / "10k" / split, root / "labels" / "sem_seg" / "masks" / split


def pair_files(root: str | os.PathLike, split: str) -> Pairing:
    root = Path(root)
    base.require_root(root, "bdd100k", "BDD100K download (with images/10k/ and labels/sem_seg/masks/)")
    for d in folders(root, split):
        base.require_dir(d, f"expected the BDD100K sem_seg layout under {root} (images/10k/{{split}}/*.jpg and "
                            f"labels/sem_seg/masks/{{split}}/*.png)")
    return base.pair_flat(*folders(root, split), IMAGE_SUFFIXES, LABEL_SUFFIX, True, split)


def remedy(sample: Sample) -> str:
    return ("BDD100K's sem_seg masks hold trainIds (0-18, 255), not Cityscapes label ids; convert it with "
            "engine.classes.label_ids_to_train_ids (the colour maps are in labels/sem_seg/colormaps/).")


class BDD100KDataset(SegmentationDataset):
    """A BDD100K sem_seg split (see `SegmentationDataset`); the default root is $BDD100K_DATASET, else the
    synthetic copy."""

    remedy = staticmethod(remedy)

    def __init__(self, root: str | os.PathLike | None = None, split: str = "val", transform=None, *,
                 cache: bool = False):
        root = settings.dataset_root("bdd100k", root)
        super().__init__(base.require_pairs(pair_files(root, split)), root=root, split=split,
                         name=base.dataset_name(root, "bdd100k"), transform=transform, cache=cache)

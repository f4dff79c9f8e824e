"""A city's own photos with their labels, matched by name (as CVAT exports them in Cityscapes format):

    images/{name}.{jpg,png,...}      any format engine.images reads
    labels/{name}.png                label_format "labelIds" (Cityscapes label ids, the default) or "trainIds"

Splits: when images/{split}/ exists, images/{split}/ with labels/{split}/; otherwise the flat folders
are the whole dataset, whatever split is asked for, and the dataset's `split` is "all".
"""
from __future__ import annotations

import os
from pathlib import Path

from engine import images, settings
import engine.data.base as base
from engine.data.base import DatasetError, Pairing, Sample, SegmentationDataset

LABEL_FORMATS = ("labelIds", "trainIds")
LABEL_SUFFIX = ".png"
FLAT = "all"  # the split of a folder without split subfolders


def label_format(value: str | None) -> str:
    value = value or LABEL_FORMATS[0]
    if value not in LABEL_FORMATS:
        raise DatasetError(f"label format {value!r} is not one of {', '.join(LABEL_FORMATS)}")
    return value


def split_folder(root: Path, split: str) -> str:
    """`split` when images/{split}/ exists, else FLAT (the flat folders)."""
    return split if split and split != FLAT and (root / "images" / split).is_dir() else FLAT


def splits(root: str | os.PathLike) -> tuple[str, ...]:
    """The split folders under images/, or (FLAT,) for a flat folder (what check-data looks at)."""
    found = tuple(p.name for p in sorted((Path(root) / "images").glob("*")) if p.is_dir() and not p.name.startswith("."))
    return found or (FLAT,)


def pair_files(root: str | os.PathLike, split: str = FLAT, fmt: str | None = None) -> Pairing:
    root, fmt = Path(root), label_format(fmt)
    base.require_root(root, "folder", "folder with images/ and labels/")
    sub = split_folder(root, split)
    image_dir, label_dir = (root / "images", root / "labels") if sub == FLAT else \
        (root / "images" / sub, root / "labels" / sub)
    for d in (image_dir, label_dir):
        base.require_dir(d, f"expected images/ and labels/ under {root} (label PNGs named as their images; "
                            f"or images/{{split}}/ and labels/{{split}}/)")
    return base.pair_flat(image_dir, label_dir, images.SUFFIXES, LABEL_SUFFIX, fmt == "trainIds", sub)


def remedy(sample: Sample) -> str:
    other = "labelIds" if sample.train_ids else "trainIds"
    return f"read the folder with --label-format {other} (label_format={other!r})."


class FolderDataset(SegmentationDataset):
    """Images and labels matched by name (see `SegmentationDataset`); the default root is
    $SEGBENCH_FOLDER_DATASET, else the synthetic copy."""

    remedy = staticmethod(remedy)

    def __init__(self, root: str | os.PathLike | None = None, split: str = "val", transform=None, *,
                 label_format: str | None = None, cache: bool = False):
        root = settings.dataset_root("folder", root)
        super().__init__(base.require_pairs(pair_files(root, split, label_format)), root=root,
                         split=split_folder(root, split), name=base.dataset_name(root, "folder"),
                         transform=transform, cache=cache)

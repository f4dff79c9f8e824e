"""One entry point to every dataset with Cityscapes' 19 classes, each in its official layout:

    ds = open_dataset("acdc", root, "val", EvalTransform(size), condition="fog")
    ds.name, ds.split, ds.condition, len(ds), ds[i] -> transform(image, trainIds)

    cityscapes  leftImg8bit/ + gtFine/ (label ids or trainIds)    engine.data.cityscapes
    acdc        rgb_anon/ + gt/, one of four conditions (label ids) engine.data.acdc
    bdd100k     images/10k/ + labels/sem_seg/masks/ (trainIds)    engine.data.bdd100k
    kitti       training/image_2/ + training/semantic/ (label ids) engine.data.kitti
    folder      images/ + labels/ matched by name                 engine.data.folder

The default root of each is its variable (`settings.DATASET_VARS`), else its synthetic copy
(`data/synthetic-<kind>`, written by `ensure_layout` or `python -m engine synth --layout <kind>`).
Real data is named by its kind, the synthetic copies 'synthetic' / 'synthetic-<kind>'.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine import settings
import engine.data.acdc as acdc
import engine.data.base as base
import engine.data.bdd100k as bdd100k
import engine.data.cityscapes as cityscapes
import engine.data.folder as folder
import engine.data.kitti as kitti
import engine.data.synthetic_layouts as synthetic_layouts
from engine.data.base import DatasetError, Pairing, Sample, SegmentationDataset

DATASETS = ("cityscapes", "acdc", "bdd100k", "kitti", "folder")
ACDC_CONDITIONS = acdc.CONDITIONS
LABEL_FORMATS = folder.LABEL_FORMATS


def check_kind(kind: str) -> str:
    if kind not in DATASETS:
        raise DatasetError(f"unknown dataset {kind!r}; choose one of {', '.join(DATASETS)}")
    return kind


def _check_options(kind: str, condition: str | None, label_format: str | None) -> None:
    if kind != "acdc" and condition:
        raise DatasetError(f"{kind} has no conditions (only acdc has: {', '.join(ACDC_CONDITIONS)}); "
                           f"got condition {condition!r}")
    if kind != "folder" and label_format:
        raise DatasetError(f"a label format applies to the folder dataset only; {kind}'s is fixed (got {label_format!r})")


def conditions(kind: str, condition: str | None) -> list[str | None]:
    """The conditions to loop over: ACDC's four for None, "" or "all", else [condition]; [None] for a
    dataset without conditions. A DatasetError names the choices for anything else."""
    check_kind(kind)
    if condition in (None, "", "all"):
        return list(ACDC_CONDITIONS) if kind == "acdc" else [None]
    _check_options(kind, condition, None)
    if condition not in ACDC_CONDITIONS:
        raise DatasetError(f"unknown ACDC condition {condition!r}; choose one of {', '.join(ACDC_CONDITIONS)} or all")
    return [condition]


def default_root(kind: str = "cityscapes") -> Path:
    """$CITYSCAPES_DATASET, $ACDC_DATASET, ... (settings.DATASET_VARS), else the synthetic copy."""
    return settings.dataset_root(check_kind(kind))


def open_dataset(kind: str = "cityscapes", root: str | os.PathLike | None = None, split: str = "val",
                 transform=None, *, condition: str | None = None, label_format: str | None = None,
                 cache: bool = False) -> SegmentationDataset:
    """The split of a dataset of `kind` (DATASETS) at `root` (default: `default_root(kind)`): samples,
    name, root, split, condition, len, [i] -> transform(image, trainIds), load(i). ACDC needs one
    `condition`; the folder dataset takes `label_format` ("labelIds", the default, or "trainIds")."""
    _check_options(check_kind(kind), condition, label_format)
    if kind == "cityscapes":
        return cityscapes.CityscapesDataset(root, split, transform, cache)
    if kind == "acdc":
        return acdc.ACDCDataset(root, split, transform, condition=condition, cache=cache)
    if kind == "bdd100k":
        return bdd100k.BDD100KDataset(root, split, transform, cache=cache)
    if kind == "kitti":
        return kitti.KITTIDataset(root, split, transform, cache=cache)
    return folder.FolderDataset(root, split, transform, label_format=label_format, cache=cache)


def pair_files(kind: str, root: str | os.PathLike, split: str, *, condition: str | None = None,
               label_format: str | None = None) -> Pairing:
    """The reader's pairing of a split, raising only for a missing root or folder (`check-data`)."""
    _check_options(check_kind(kind), condition, label_format)
    if kind == "cityscapes":
        return cityscapes.pair_files(root, split)
    if kind == "acdc":
        return acdc.pair_files(root, split, condition)
    if kind == "bdd100k":
        return bdd100k.pair_files(root, split)
    if kind == "kitti":
        return kitti.pair_files(root, split)
    return folder.pair_files(root, split, label_format)


def default_splits(kind: str, root: str | os.PathLike) -> tuple[str, ...]:
    """The splits `check-data` looks at by default (those with labels; Cityscapes' test when present)."""
    if kind == "cityscapes":
        return ("train", "val") + (("test",) if any((Path(root) / d / "test").is_dir()
                                                    for d in ("leftImg8bit", "gtFine")) else ())
    return {"acdc": acdc.SPLITS, "bdd100k": bdd100k.SPLITS, "kitti": kitti.SPLITS}.get(kind) or folder.splits(root)


def remedy(kind: str):
    """The reader's advice for a label map in the wrong format (`base.read_label`)."""
    return {"cityscapes": cityscapes.remedy, "acdc": acdc.remedy, "bdd100k": bdd100k.remedy, "kitti": kitti.remedy,
            "folder": folder.remedy}[check_kind(kind)]


def dataset_name(kind: str, root: str | os.PathLike) -> str:
    return base.dataset_name(root, check_kind(kind))


def ensure_layout(kind: str = "cityscapes", root: str | os.PathLike | None = None) -> Path:
    """The root to read (`root`, else `default_root(kind)`); when it is the default synthetic copy of
    `kind` and not written yet (no README.txt), write it first (the built-in scenes' size)."""
    root = settings.dataset_root(check_kind(kind), root)
    if root == settings.synthetic_root(kind):
        synthetic_layouts.ensure_layout(kind, root)
    return root


__all__ = ["ACDC_CONDITIONS", "DATASETS", "LABEL_FORMATS", "DatasetError", "Sample", "SegmentationDataset",
           "conditions", "default_root", "default_splits", "ensure_layout", "open_dataset", "pair_files", "remedy"]

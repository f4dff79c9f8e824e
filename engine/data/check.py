"""`python -m engine check-data`: is a dataset in the official Cityscapes layout usable as it is?

    report = check_dataset(root)            # every check; full=False: the cheap part only
    print(report); report.ok

The cheap part (what `train` runs before it starts): pairing (images without a label, gtFine files
without an image, unexpected names in the layout folders), and from the file headers alone (PIL's
`Image.open` reads no pixels) the image/label sizes and modes, and files that cannot be opened.
The full check also decodes every pair: truncated files, label values that are neither label ids
nor trainIds, and trainId maps saved under the labelIds name (`read_label` tells them apart by
their histogram). Each problem is one line naming the file; nothing here raises on a bad file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from engine import settings
from engine.data.cityscapes import (GT_SUFFIXES, IMAGE_SUFFIX, LABEL_ID_SUFFIX, TRAIN_ID_SUFFIX, DatasetError, Sample,
                                    dataset_name, gt_path, pair_files, read_image, read_label)

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")  # checked by default; "test" only when its folders exist
OFFICIAL_SIZES = {"train": 2975, "val": 500, "test": 1525}  # gtFine images per split
IMAGE_MODES = ("RGB", "RGBA", "L", "P")  # 8-bit frames read_image turns into RGB as they are
LABEL_MODES = ("L", "P")  # single channel, 8 bits


@dataclass
class Report:
    root: Path
    name: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> images, labels, pairs
    problems: list[str] = field(default_factory=list)  # one line each, naming the file
    notes: list[str] = field(default_factory=list)  # information, not problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [f"dataset {self.root} ({self.name})"]
        lines += [f"  {split:6s} {c['pairs']:6d} image/label pairs ({c['images']} images, {c['labels']} label maps)"
                  for split, c in self.counts.items()]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"problem: {p}" for p in self.problems]
        lines.append("no problems found" if self.ok else f"{len(self.problems)} problem(s) found")
        return "\n".join(lines)


def _header(path: Path, kind: str, modes: tuple[str, ...], problems: list[str]) -> tuple[int, int] | None:
    """(width, height) from the header, or None after adding the problem."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
    except Exception as e:  # noqa: BLE001 (any failure on a bad file is a problem to report, never a traceback)
        problems.append(f"{path}: cannot open the {kind} ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        return None
    if mode not in modes:
        what = ("an 8-bit RGB, RGBA, grayscale or palette image" if kind == "image" else
                "a single-channel 8-bit map (mode L), not a *_gtFine_color.png or a 16-bit PNG")
        problems.append(f"{path}: {kind} mode is {mode}; expected {what}")
        return None
    return size


def check_pair(s: Sample, full: bool = True) -> list[str]:
    """The problems of one image/label pair: headers (sizes, modes) and, when `full`, decoded pixels."""
    problems: list[str] = []
    image = _header(s.image, "image", IMAGE_MODES, problems)
    label = _header(s.label, "label", LABEL_MODES, problems)
    if image and label and image != label:
        problems.append(f"{s.image}: image is {image[0]}x{image[1]} but its label {s.label.name} "
                        f"is {label[0]}x{label[1]}")
    if full and not problems:
        for path, read in ((s.image, lambda: read_image(s.image)), (s.label, lambda: read_label(s))):
            try:
                read()
            except DatasetError as e:
                problems.append(str(e))
            except Exception as e:  # noqa: BLE001
                problems.append(f"{path}: cannot read ({type(e).__name__}: {e})")
    return problems


def check_split(root: Path, split: str, full: bool = True, progress: bool = False) -> tuple[dict, list[str]]:
    """({images, labels, pairs}, problems) of one split; raises DatasetError only for missing folders."""
    found = pair_files(root, split)
    labels = {(p.parent, p.name.rsplit("_gtFine_", 1)[0]) for p in found.orphans
              if p.name.endswith((LABEL_ID_SUFFIX, TRAIN_ID_SUFFIX))}
    counts = {"images": len(found.samples) + len(found.unlabeled), "labels": len(found.samples) + len(labels),
              "pairs": len(found.samples)}
    problems = [f"{p}: image without a label (expected {gt_path(p, LABEL_ID_SUFFIX).name} or "
                f"{gt_path(p, TRAIN_ID_SUFFIX).name} in {gt_path(p, '').parent})" for p in found.unlabeled]
    problems += [f"{p}: no image {p.name.rsplit('_gtFine_', 1)[0]}{IMAGE_SUFFIX} in "
                 f"{root / 'leftImg8bit' / split / p.parent.name}" for p in found.orphans]
    problems += [f"{p}: unexpected {'folder' if p.is_dir() else 'file'} in the layout; expected only "
                 + ("<city>/ folders" if p.parent.name == split else
                    f"*{IMAGE_SUFFIX} files" if p.parts[-4] == "leftImg8bit" else
                    "*" + ", *".join(GT_SUFFIXES) + " files") + " here" for p in found.unexpected]
    if not counts["images"]:
        problems.append(f"split {split!r} is empty: no *{IMAGE_SUFFIX} files under "
                        f"{root / 'leftImg8bit' / split}/<city>/")
    for s in tqdm(found.samples, desc=f"checking {split}", disable=None if progress else True, leave=False):
        problems += check_pair(s, full)
    return counts, problems


def check_dataset(root: str | os.PathLike, splits: tuple[str, ...] | None = None, full: bool = True,
                  progress: bool = False) -> Report:
    """Every check on `splits` (default: train and val, and test when its folders exist)."""
    root = Path(root)
    report = Report(root, dataset_name(root))
    for split in splits or SPLITS:
        if splits is None and split not in REQUIRED_SPLITS and not (root / "leftImg8bit" / split).is_dir() \
                and not (root / "gtFine" / split).is_dir():
            continue
        try:
            report.counts[split], problems = check_split(root, split, full, progress)
        except DatasetError as e:  # a missing root or split folder
            problems = [str(e)]
        report.problems += [p for p in problems if p not in report.problems]
    if report.name == "cityscapes" and report.counts:
        report.notes.append("official Cityscapes (gtFine) sizes: " + ", ".join(
            f"{split} {n}" for split, n in OFFICIAL_SIZES.items()) + "; a different size is not an error")
    return report


def require_clean(root: str | os.PathLike | None = None, splits: tuple[str, ...] = REQUIRED_SPLITS) -> None:
    """The cheap checks (pairing, names, header sizes and modes: no pixel decoded) before training;
    a DatasetError naming the first problems when anything is wrong."""
    root = settings.data_root(root)
    report = check_dataset(root, splits, full=False)
    if report.problems:
        n = len(report.problems)
        raise DatasetError(f"{n} problem(s) in the dataset: " + "; ".join(report.problems[:3])
                           + ("; ..." if n > 3 else "")
                           + f" (all of them: python -m engine check-data --data-root {root})")

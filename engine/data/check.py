"""`python -m engine check-data`: is a dataset in its official layout usable as it is? Every layout
of `engine.data.datasets` (Cityscapes, ACDC, BDD100K, KITTI, a folder), through its reader's pairing.

    report = check_dataset(root)                                   # every check; full=False: the cheap part only
    report = check_dataset(root, kind="acdc", condition="all")     # each ACDC condition
    print(report); report.ok

The cheap part (what `train` runs before it starts): pairing (images without a label, label files
without an image, unexpected names in the layout folders), and from the file headers alone (PIL's
`Image.open` reads no pixels) the image/label sizes and modes, and files that cannot be opened.
The full check also decodes every pair: truncated files, label values that are neither label ids
nor trainIds, and label maps in the other format than the layout's (`read_label` tells them apart
by their histogram). Each problem is one line naming the file; nothing here raises on a bad file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

import engine.data.datasets as datasets
from engine.data.base import DatasetError, Sample, pairing_problems, read_image, read_label

REQUIRED_SPLITS = ("train", "val")  # checked by default; "test" only when its folders exist
OFFICIAL_SIZES = {"train": 2975, "val": 500, "test": 1525}  # gtFine images per split
IMAGE_MODES = ("RGB", "RGBA", "L", "P")  # 8-bit frames read_image turns into RGB as they are (a folder: any)
LABEL_MODES = ("L", "P")  # single channel, 8 bits
EXIF_ORIENTATION = 0x0112


@dataclass
class Report:
    root: Path
    name: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split (or condition/split) -> images, labels, pairs
    problems: list[str] = field(default_factory=list)  # one line each, naming the file
    notes: list[str] = field(default_factory=list)  # information, not problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [f"dataset {self.root} ({self.name})"]
        width = max([6, *map(len, self.counts)])
        lines += [f"  {split:{width}s} {c['pairs']:6d} image/label pairs ({c['images']} images, {c['labels']} label "
                  f"maps)" for split, c in self.counts.items()]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"problem: {p}" for p in self.problems]
        lines.append("no problems found" if self.ok else f"{len(self.problems)} problem(s) found")
        return "\n".join(lines)


def _header(path: Path, kind: str, modes: tuple[str, ...] | None, problems: list[str]) -> tuple[int, int] | None:
    """(width, height) from the header (upright, as `read_image` turns a photo with an EXIF rotation), or
    None after adding the problem. `modes`: those accepted (None: any `read_image` decodes)."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            if kind == "image" and im.format in ("JPEG", "MPO", "TIFF", "WEBP") \
                    and im.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # turned by 90 degrees (header EXIF)
                size = size[::-1]
    except Exception as e:  # noqa: BLE001 (any failure on a bad file is a problem to report, never a traceback)
        problems.append(f"{path}: cannot open the {kind} ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        return None
    if modes is not None and mode not in modes:
        what = ("an 8-bit RGB, RGBA, grayscale or palette image" if kind == "image" else
                "a single-channel 8-bit map (mode L), not a *_gtFine_color.png or a 16-bit PNG")
        problems.append(f"{path}: {kind} mode is {mode}; expected {what}")
        return None
    return size


def check_pair(s: Sample, full: bool = True, remedy=None, image_modes: tuple[str, ...] | None = IMAGE_MODES
               ) -> list[str]:
    """The problems of one image/label pair: headers (sizes, modes) and, when `full`, decoded pixels
    (`remedy`: the reader's advice for a label map in the other format; `image_modes`: see `_header`)."""
    problems: list[str] = []
    image = _header(s.image, "image", image_modes, problems)
    label = _header(s.label, "label", LABEL_MODES, problems)
    if image and label and image != label:
        problems.append(f"{s.image}: image is {image[0]}x{image[1]} but its label {s.label.name} "
                        f"is {label[0]}x{label[1]}")
    if full and not problems:
        for path, read in ((s.image, lambda: read_image(s.image)), (s.label, lambda: read_label(s, remedy))):
            try:
                read()
            except DatasetError as e:
                problems.append(str(e))
            except Exception as e:  # noqa: BLE001
                problems.append(f"{path}: cannot read ({type(e).__name__}: {e})")
    return problems


def check_split(root: Path, split: str, full: bool = True, progress: bool = False, *, kind: str = "cityscapes",
                condition: str | None = None, label_format: str | None = None) -> tuple[dict, list[str]]:
    """({images, labels, pairs}, problems) of one split; raises DatasetError only for missing folders."""
    found = datasets.pair_files(kind, root, split, condition=condition, label_format=label_format)
    counts = {"images": len(found.samples) + len(found.unlabeled), "labels": found.labels, "pairs": len(found.samples)}
    problems = pairing_problems(found)
    if not counts["images"]:
        problems.append(found.empty)
    remedy = datasets.remedy(kind)
    where = f"{condition}/{split}" if condition else split
    for s in tqdm(found.samples, desc=f"checking {where}", disable=None if progress else True, leave=False):
        problems += check_pair(s, full, remedy, None if kind == "folder" else IMAGE_MODES)
    return counts, problems


def check_dataset(root: str | os.PathLike, splits: tuple[str, ...] | None = None, full: bool = True,
                  progress: bool = False, *, kind: str = "cityscapes", condition: str | None = None,
                  label_format: str | None = None) -> Report:
    """Every check on `splits` (default: those with labels, `datasets.default_splits`; Cityscapes: train
    and val, and test when its folders exist), for each of `datasets.conditions(kind, condition)`."""
    root = Path(root)
    report = Report(root, datasets.dataset_name(kind, root))
    for c in datasets.conditions(kind, condition):
        for split in splits or datasets.default_splits(kind, root):
            key = f"{c}/{split}" if c else split
            try:
                report.counts[key], problems = check_split(root, split, full, progress, kind=kind, condition=c,
                                                           label_format=label_format)
            except DatasetError as e:  # a missing root or split folder
                problems = [str(e)]
            report.problems += [p for p in problems if p not in report.problems]
    if report.name == "cityscapes" and report.counts:
        report.notes.append("official Cityscapes (gtFine) sizes: " + ", ".join(
            f"{split} {n}" for split, n in OFFICIAL_SIZES.items()) + "; a different size is not an error")
    return report


def require_clean(root: str | os.PathLike | None = None, splits: tuple[str, ...] = REQUIRED_SPLITS, *,
                  kind: str = "cityscapes", condition: str | None = None, label_format: str | None = None) -> None:
    """The cheap checks (pairing, names, header sizes and modes: no pixel decoded) before training;
    a DatasetError naming the first problems when anything is wrong."""
    root = datasets.default_root(kind) if root is None else Path(root)
    report = check_dataset(root, splits, full=False, kind=kind, condition=condition, label_format=label_format)
    if report.problems:
        n = len(report.problems)
        flags = "" if kind == "cityscapes" else f" --dataset {kind}"
        raise DatasetError(f"{n} problem(s) in the dataset: " + "; ".join(report.problems[:3])
                           + ("; ..." if n > 3 else "")
                           + f" (all of them: python -m engine check-data{flags} --data-root {root})")

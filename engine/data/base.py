"""What every dataset reader shares: samples, pairing images with labels, the checked decoding of
both, and the dataset (with its in-memory cache) that training and evaluation iterate.

A reader (cityscapes, acdc, bdd100k, kitti, folder) only says where its files are: it pairs them
with `pair_nested` or `pair_flat` and hands the samples to `SegmentationDataset`. Labels come out
as trainIds (0-18, 255 = ignore) whatever the file holds. Every problem is a `DatasetError` whose
one-line message names the file; nothing is skipped silently.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine import classes, images, settings
from engine.errors import UserError

SYNTH_MARKER = "python -m engine synth"  # in the README.txt every synthetic writer leaves

_VALID_LABEL_ID = np.zeros(256, dtype=bool)
_VALID_LABEL_ID[list(classes.VALID_LABEL_IDS)] = True
_VALID_TRAIN_ID = np.zeros(256, dtype=bool)
_VALID_TRAIN_ID[: classes.NUM_CLASSES] = True
_VALID_TRAIN_ID[classes.IGNORE_INDEX] = True


class DatasetError(UserError, ValueError):
    """The dataset on disk is not usable; the message names the offending file or folder."""


@dataclass(frozen=True)
class Sample:
    stem: str  # the name shared by the image and its label (Cityscapes: {city}_{seq}_{frame})
    image: Path
    label: Path
    train_ids: bool  # True when `label` holds trainIds, False for Cityscapes label ids
    folder: str = ""  # nested layouts: the folder both sit in (Cityscapes: the city; ACDC: the sequence)


@dataclass
class Pairing:
    """A split's files as found on disk: the pairs, and what could not be paired."""
    samples: list[Sample]
    unlabeled: list[Path]  # images without a label
    orphans: list[Path]  # label-side files whose image is missing
    unexpected: list[Path]  # files and folders that are not part of the layout
    expected: dict[Path, list[Path]] = field(default_factory=dict)  # unlabeled -> its label(s); orphan -> its image
    allowed: dict[Path, str] = field(default_factory=dict)  # unexpected -> what belongs there ("*.png files")
    empty: str = ""  # the problem when the split holds no image: where images were looked for
    labels: int = 0  # label maps found, paired or not


def is_synthetic(dataset: str) -> bool:
    """Whether a dataset name (`dataset_name`) is one of the synthetic copies."""
    return dataset == "synthetic" or dataset.startswith("synthetic-")


def dataset_name(root: str | os.PathLike, kind: str = "cityscapes") -> str:
    """`kind` for real data; for scenes written by `engine synth` (its README.txt says so) 'synthetic'
    (the Cityscapes layout) or 'synthetic-<kind>', so no table mixes real and synthetic images."""
    readme = Path(root) / "README.txt"
    if readme.is_file() and SYNTH_MARKER in readme.read_text(errors="ignore"):
        return "synthetic" if kind == "cityscapes" else f"synthetic-{kind}"
    return kind


def require_root(root: Path, kind: str, layout: str) -> None:
    """A DatasetError naming the variable to set when `root` is not a folder."""
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist. Set {settings.DATASET_VARS[kind]} (or --data-root) "
                           f"to a {layout} or write the synthetic scenes with "
                           f"`python -m engine synth --layout {kind}`.")


def require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{path} is missing: {what}")


def _visible(folder: Path) -> list[Path]:
    """The folder's entries, sorted, without hidden files such as .DS_Store."""
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]


def layout_files(split_dir: Path, suffixes: tuple[str, ...], unexpected: list[Path], allowed: dict[Path, str],
                 folder_word: str = "city") -> dict[tuple, Path]:
    """{(folder, stem, suffix): path} for split_dir/<folder>/<stem><suffix>; anything else goes to
    `unexpected`, with what belongs there in `allowed` (hidden files are left alone)."""
    found = {}
    for folder in _visible(split_dir):
        if not folder.is_dir():
            unexpected.append(folder)
            allowed[folder] = f"<{folder_word}>/ folders"
            continue
        for p in _visible(folder):
            suffix = next((s for s in suffixes if p.name.endswith(s) and p.name != s), None)
            if suffix is None or not p.is_file():
                unexpected.append(p)
                allowed[p] = "*" + ", *".join(suffixes) + " files"
            else:
                found[folder.name, p.name[: -len(suffix)], suffix] = p
    return found


def pair_nested(image_dir: Path, label_dir: Path, image_suffix: str, label_suffixes: tuple[tuple[str, bool], ...],
                gt_suffixes: tuple[str, ...] = (), split: str = "", folder_word: str = "city") -> Pairing:
    """image_dir/<folder>/<stem><image_suffix> with label_dir/<folder>/<stem><label suffix> (Cityscapes: a
    folder per city, ACDC: per sequence). `label_suffixes`: (suffix, holds trainIds) in order of preference;
    `gt_suffixes`: every file the label folders may hold (label maps, colour maps, instances, polygons)."""
    unexpected: list[Path] = []
    allowed: dict[Path, str] = {}
    imgs = {(f, stem): p for (f, stem, _), p in
            layout_files(image_dir, (image_suffix,), unexpected, allowed, folder_word).items()}
    label_names = tuple(s for s, _ in label_suffixes)
    gt = layout_files(label_dir, tuple(dict.fromkeys((*gt_suffixes, *label_names))), unexpected, allowed, folder_word)
    samples, unlabeled, expected = [], [], {}
    for (folder, stem), image in sorted(imgs.items(), key=lambda kv: kv[0][1]):
        suffix = next((s for s in label_names if (folder, stem, s) in gt), None)
        if suffix:
            samples.append(Sample(stem, image, gt[folder, stem, suffix], dict(label_suffixes)[suffix], folder))
        else:
            unlabeled.append(image)
            expected[image] = [label_dir / folder / f"{stem}{s}" for s in reversed(label_names)]
    orphans = [p for (folder, stem, _), p in sorted(gt.items()) if (folder, stem) not in imgs]
    for (folder, stem, _), p in gt.items():
        if (folder, stem) not in imgs:
            expected[p] = [image_dir / folder / f"{stem}{image_suffix}"]
    labels = len(samples) + len({(f, stem) for (f, stem, s) in gt if s in label_names and (f, stem) not in imgs})
    return Pairing(samples, unlabeled, orphans, unexpected, expected, allowed,
                   f"split {split!r} is empty: no *{image_suffix} files under {image_dir}/<{folder_word}>/", labels)


def pair_flat(image_dir: Path, label_dir: Path, image_suffixes: tuple[str, ...], label_suffix: str, train_ids: bool,
              split: str = "") -> Pairing:
    """image_dir/<stem><any of image_suffixes> with label_dir/<stem><label_suffix> (BDD100K, KITTI, a folder)."""
    unexpected: list[Path] = []
    allowed: dict[Path, str] = {}
    image_kinds = "*" + ", *".join(image_suffixes) + " files"
    imgs: dict[str, Path] = {}
    for p in _visible(image_dir):
        if p.is_file() and p.suffix.lower() in image_suffixes and p.stem not in imgs:
            imgs[p.stem] = p
        else:
            unexpected.append(p)
            allowed[p] = image_kinds + (", one per name" if p.stem in imgs else "")
    labels: dict[str, Path] = {}
    for p in _visible(label_dir):
        if p.is_file() and p.name.endswith(label_suffix) and p.name != label_suffix:
            labels[p.name[: -len(label_suffix)]] = p
        else:
            unexpected.append(p)
            allowed[p] = f"*{label_suffix} label maps"
    samples = [Sample(stem, imgs[stem], labels[stem], train_ids) for stem in sorted(imgs) if stem in labels]
    unlabeled = [imgs[stem] for stem in sorted(imgs) if stem not in labels]
    orphans = [labels[stem] for stem in sorted(labels) if stem not in imgs]
    expected = {p: [label_dir / f"{p.stem}{label_suffix}"] for p in unlabeled}
    any_image = image_suffixes[0] if len(image_suffixes) == 1 else ".*"
    expected.update({p: [image_dir / f"{p.name[: -len(label_suffix)]}{any_image}"] for p in orphans})
    return Pairing(samples, unlabeled, orphans, unexpected, expected, allowed,
                   f"split {split!r} is empty: no {image_kinds} in {image_dir}", len(labels))


def pairing_problems(found: Pairing) -> list[str]:
    """One line per unpaired or unexpected file, naming it (what `check-data` prints)."""
    problems = [f"{p}: image without a label (expected {' or '.join(e.name for e in found.expected[p])} in "
                f"{found.expected[p][0].parent})" for p in found.unlabeled]
    problems += [f"{p}: no image {found.expected[p][0].name} in {found.expected[p][0].parent}" for p in found.orphans]
    problems += [f"{p}: unexpected {'folder' if p.is_dir() else 'file'} in the layout; expected only "
                 f"{found.allowed[p]} here" for p in found.unexpected]
    return problems


def require_pairs(found: Pairing, label_suffixes: Iterable[str] | None = None) -> list[Sample]:
    """The samples, or a DatasetError naming the first file that could not be paired (an empty split,
    a label without an image, an image without a label). Unexpected files are `check-data`'s.
    `label_suffixes`: only orphans with these suffixes count (Cityscapes: colour maps without an image
    are not read)."""
    if not found.samples and not found.unlabeled:
        raise DatasetError(found.empty)
    orphans = [p for p in found.orphans if label_suffixes is None or p.name.endswith(tuple(label_suffixes))]
    if orphans:
        p = orphans[0]
        raise DatasetError(f"{len(orphans)} label(s) in {p.parent} have no image, e.g. {p.name} "
                           f"(expected {found.expected[p][0]})")
    if found.unlabeled:
        image = found.unlabeled[0]
        first, *others = found.expected[image]
        raise DatasetError(f"{image} has no label: expected {first}"
                           + (f" (or {', '.join(o.name for o in others)})" if others else ""))
    return found.samples


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 HxWx3 (`engine.images`: the decoder of every image users give us)."""
    try:
        return images.read_image(path)
    except images.ImageError as e:
        raise DatasetError(str(e)) from None


def _generic_remedy(sample: Sample) -> str:
    return ("this reader expects trainIds here." if sample.train_ids else
            "this reader expects Cityscapes label ids here (engine.classes.train_ids_to_label_ids converts).")


def read_label(sample: Sample, remedy: Callable[[Sample], str] | None = None) -> np.ndarray:
    """trainIds uint8 HxW (255 = ignore), checked against what the file claims to hold. `remedy(sample)`:
    what to do when the map holds the other kind (label ids for trainIds, or the reverse)."""
    path = sample.label
    try:
        with Image.open(path) as im:
            label = np.array(im)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read label ({e})") from None
    if label.ndim != 2:
        raise DatasetError(f"{path}: a label map must be single-channel, this one has shape {label.shape} "
                           f"(a colour map such as *_gtFine_color.png cannot be used as labels)")
    if label.dtype != np.uint8:
        if label.min() < 0 or label.max() > 255:
            raise DatasetError(f"{path}: values outside 0..255 ({label.min()}..{label.max()}); not a label map")
        label = label.astype(np.uint8)
    valid = _VALID_TRAIN_ID if sample.train_ids else _VALID_LABEL_ID
    bad = ~valid[label]
    if not bad.any():
        return label if sample.train_ids else classes.label_ids_to_train_ids(label)
    # the histogram tells the two kinds apart: 255 (ignore) is in every trainId map of a Cityscapes frame
    # (ego vehicle, out of roi...) and never a label id; label ids of most things (vegetation 21, sky 23,
    # person 24, car 26...) are above the last trainId (18)
    present = np.unique(label).tolist()
    values = sorted(set(np.unique(label[bad]).tolist()))
    remedy = remedy or _generic_remedy
    if sample.train_ids:
        hint = f" It looks like a label-id map (values up to 33, no 255): {remedy(sample)}" if max(present) <= 33 else ""
        raise DatasetError(f"{path}: values {values} are not trainIds (0-18, 255).{hint}")
    hint = f" It looks like a trainId map (only 0-18 and 255): {remedy(sample)}" \
        if values == [classes.IGNORE_INDEX] and max(present[:-1], default=0) < classes.NUM_CLASSES else ""
    raise DatasetError(f"{path}: values {values} are not Cityscapes label ids (0-33).{hint}")


class _CacheColumn:
    """One field of the cached samples: a single preallocated block while every sample has the same
    shape (one allocation, shared page for page with forked workers), else a list of tensors."""

    def __init__(self, n: int):
        self.n, self.block, self.items = n, None, None

    def put(self, i: int, x: torch.Tensor) -> None:  # filled in index order
        if self.items is None:
            if self.block is None:
                self.block = torch.empty((self.n, *x.shape), dtype=x.dtype)
            if x.shape == self.block.shape[1:] and x.dtype == self.block.dtype:
                self.block[i] = x
                return
            self.items, self.block = [self.block[j] for j in range(i)] + [None] * (self.n - i), None
        self.items[i] = x

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.block[i] if self.items is None else self.items[i]

    @property
    def nbytes(self) -> int:
        parts = [self.block] if self.items is None else self.items
        return sum(t.numel() * t.element_size() for t in parts if t is not None)


class _Prepared(torch.utils.data.Dataset):
    """The dataset's deterministic stage only (what the cache stores), for building it with workers."""

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset.prepare(index)


class SegmentationDataset(torch.utils.data.Dataset):
    """(image, trainIds) pairs from `samples`, whichever layout they were found in.

    `transform(image, label)` receives RGB uint8 HxWx3 and trainIds uint8 HxW numpy arrays; without
    one, `dataset[i]` is that pair. `name` says what the data is ('cityscapes', 'acdc', ... or
    'synthetic...'), `split` the split read and `condition` the ACDC condition ('' when none).
    `remedy(sample)`: the advice a wrong label format gets (see `read_label`).

    `cache=True` keeps every sample decoded, checked and already passed through the transform's
    deterministic `prepare` stage (resized to the base size, uint8) in memory, built once by
    `build_cache()` in the main process (DataLoader workers forked afterwards share it
    copy-on-write; it is never written to). Each access then only runs the transform's random
    `finish` stage: exactly the tensors the uncached path gives, without decoding a PNG. Memory:
    N x (W*H*3 + W*H) bytes for training at [W, H] (2975 Cityscapes train images at 512x256:
    ~1.6 GB); for evaluation the label stays at full resolution (500 val images: ~0.2 GB of
    images at 512x256 + ~1.0 GB of 2048x1024 labels). A cache not built yet is built on first
    access in the main process; a DataLoader worker that finds it unbuilt reads from disk.
    """

    remedy: Callable[[Sample], str] | None = None  # a staticmethod in subclasses

    def __init__(self, samples: list[Sample], *, root: str | os.PathLike, split: str, name: str, transform=None,
                 cache: bool = False, condition: str = ""):
        self.samples, self.root, self.split, self.name, self.condition = samples, Path(root), split, name, condition
        self.transform = transform
        if cache and not (hasattr(transform, "prepare") and hasattr(transform, "finish")):
            raise ValueError("cache=True needs a transform with prepare/finish stages (TrainTransform, EvalTransform)")
        self.cache = cache
        self._cache: tuple[_CacheColumn, _CacheColumn] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded, checked pair: RGB uint8 HxWx3 and trainIds uint8 HxW."""
        sample = self.samples[index]
        image, label = read_image(sample.image), read_label(sample, self.remedy)
        if image.shape[:2] != label.shape:
            raise DatasetError(f"{sample.image}: image is {image.shape[1]}x{image.shape[0]} but its label "
                               f"{sample.label.name} is {label.shape[1]}x{label.shape[0]}")
        return image, label

    def prepare(self, index: int):
        """What the cache stores for `index`: the transform's deterministic stage."""
        return self.transform.prepare(*self.load(index))

    @property
    def cache_built(self) -> bool:
        return self._cache is not None

    @property
    def cache_bytes(self) -> int:
        return sum(c.nbytes for c in self._cache) if self._cache else 0

    def build_cache(self, workers: int = 0) -> None:
        """Decode and prepare every sample once (with `workers` processes; 0 = here). No-op when built
        or when the dataset was made without cache=True."""
        if not self.cache or self._cache is not None:
            return
        columns = (_CacheColumn(len(self)), _CacheColumn(len(self)))
        if workers > 0:
            # its own generator: building the cache must not draw from the global RNG (exact resume)
            items = torch.utils.data.DataLoader(_Prepared(self), batch_size=None, num_workers=min(workers, len(self)),
                                                generator=torch.Generator())
        else:
            items = (self.prepare(i) for i in range(len(self)))
        for i, (image, label) in enumerate(items):
            columns[0].put(i, image)
            columns[1].put(i, label)
        self._cache = columns

    def __getitem__(self, index: int):
        if self.cache:
            if self._cache is None and torch.utils.data.get_worker_info() is None:
                self.build_cache()
            if self._cache is not None:
                return self.transform.finish(self._cache[0][index], self._cache[1][index])
            return self.transform.finish(*self.prepare(index))
        image, label = self.load(index)
        return self.transform(image, label) if self.transform else (image, label)

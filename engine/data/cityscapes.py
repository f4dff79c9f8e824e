"""Read Cityscapes in its official layout (or the synthetic scenes written in the same layout).

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png   (or _gtFine_labelTrainIds.png)

Every problem is a `DatasetError` whose message names the file; nothing is skipped silently.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine import classes, images, settings
from engine.errors import UserError

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
# every file a gtFine/<split>/<city>/ folder may hold (the official ones, and cityscapesscripts' trainId conversions)
GT_SUFFIXES = (LABEL_ID_SUFFIX, TRAIN_ID_SUFFIX, "_gtFine_instanceIds.png", "_gtFine_instanceTrainIds.png",
               "_gtFine_color.png", "_gtFine_polygons.json")

_VALID_LABEL_ID = np.zeros(256, dtype=bool)
_VALID_LABEL_ID[list(classes.VALID_LABEL_IDS)] = True
_VALID_TRAIN_ID = np.zeros(256, dtype=bool)
_VALID_TRAIN_ID[: classes.NUM_CLASSES] = True
_VALID_TRAIN_ID[classes.IGNORE_INDEX] = True


class DatasetError(UserError, ValueError):
    """The dataset on disk is not usable; the message names the offending file or folder."""


@dataclass(frozen=True)
class Sample:
    stem: str  # {city}_{seq}_{frame}
    image: Path
    label: Path
    train_ids: bool  # True when `label` is a *_labelTrainIds.png


def dataset_name(root: str | os.PathLike) -> str:
    """'synthetic' for scenes written by `engine synth`, else 'cityscapes'."""
    readme = Path(root) / "README.txt"
    return "synthetic" if readme.is_file() and "python -m engine synth" in readme.read_text(errors="ignore") else "cityscapes"


@dataclass
class Pairing:
    """A split's files as found on disk: the pairs, and what could not be paired."""
    samples: list[Sample]
    unlabeled: list[Path]  # images with neither *_labelIds.png nor *_labelTrainIds.png beside them in gtFine
    orphans: list[Path]  # gtFine files (any of GT_SUFFIXES) whose image is missing
    unexpected: list[Path]  # files and folders that are not part of the layout


def gt_path(image: Path, suffix: str) -> Path:
    """Where the gtFine file of `image` (root/leftImg8bit/split/city/stem_leftImg8bit.png) with `suffix` belongs."""
    return image.parents[3] / "gtFine" / image.parent.parent.name / image.parent.name / \
        f"{image.name[: -len(IMAGE_SUFFIX)]}{suffix}"


def _layout_files(split_dir: Path, suffixes: tuple[str, ...], unexpected: list[Path]) -> dict[tuple, Path]:
    """{(city, stem, suffix): path} for split_dir/<city>/<stem><suffix>; anything else goes to `unexpected`
    (hidden files such as .DS_Store are left alone)."""
    found = {}
    for city in sorted(split_dir.iterdir()):
        if city.name.startswith("."):
            continue
        if not city.is_dir():
            unexpected.append(city)
            continue
        for p in sorted(city.iterdir()):
            if p.name.startswith("."):
                continue
            suffix = next((s for s in suffixes if p.name.endswith(s) and p.name != s), None)
            if suffix is None or not p.is_file():
                unexpected.append(p)
            else:
                found[city.name, p.name[: -len(suffix)], suffix] = p
    return found


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
        if not d.is_dir():
            raise DatasetError(f"{d} is missing: expected the official Cityscapes layout under {root}")
    unexpected: list[Path] = []
    images = {(city, stem): p for (city, stem, _), p in _layout_files(image_dir, (IMAGE_SUFFIX,), unexpected).items()}
    gt = _layout_files(label_dir, GT_SUFFIXES, unexpected)
    samples, unlabeled = [], []
    for (city, stem), image in sorted(images.items(), key=lambda kv: kv[0][1]):
        if (city, stem, TRAIN_ID_SUFFIX) in gt:
            samples.append(Sample(stem, image, gt[city, stem, TRAIN_ID_SUFFIX], True))
        elif (city, stem, LABEL_ID_SUFFIX) in gt:
            samples.append(Sample(stem, image, gt[city, stem, LABEL_ID_SUFFIX], False))
        else:
            unlabeled.append(image)
    orphans = [p for (city, stem, _), p in sorted(gt.items()) if (city, stem) not in images]
    return Pairing(samples, unlabeled, orphans, unexpected)


def find_samples(root: str | os.PathLike, split: str) -> list[Sample]:
    found = pair_files(root, split)
    image_dir, label_dir = Path(root) / "leftImg8bit" / split, Path(root) / "gtFine" / split
    if not found.samples and not found.unlabeled:
        raise DatasetError(f"split {split!r} is empty: no *{IMAGE_SUFFIX} files under {image_dir}/<city>/")
    orphans = sorted({p.name.rsplit("_gtFine_", 1)[0] for p in found.orphans
                      if p.name.endswith((LABEL_ID_SUFFIX, TRAIN_ID_SUFFIX))})
    if orphans:
        raise DatasetError(f"{len(orphans)} label(s) in {label_dir} have no image, e.g. {orphans[0]} "
                           f"(expected {image_dir}/<city>/{orphans[0]}{IMAGE_SUFFIX})")
    if found.unlabeled:
        image = found.unlabeled[0]
        raise DatasetError(f"{image} has no label: expected {gt_path(image, LABEL_ID_SUFFIX)} "
                           f"(or {gt_path(image, TRAIN_ID_SUFFIX).name})")
    return found.samples


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 HxWx3 (`engine.images`: the decoder of every image users give us)."""
    try:
        return images.read_image(path)
    except images.ImageError as e:
        raise DatasetError(str(e)) from None


def read_label(sample: Sample) -> np.ndarray:
    """trainIds uint8 HxW (255 = ignore), checked against what the file claims to hold."""
    path = sample.label
    try:
        with Image.open(path) as im:
            label = np.array(im)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read label ({e})") from None
    if label.ndim != 2:
        raise DatasetError(f"{path}: a label map must be single-channel, this one has shape {label.shape} "
                           f"(a *_gtFine_color.png cannot be used as labels)")
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
    if sample.train_ids:
        hint = (f" It looks like a label-id map (values up to 33, no 255): a *_labelIds map saved under the "
                f"_labelTrainIds name; rename it to {sample.stem}{LABEL_ID_SUFFIX}.") \
            if max(present) <= 33 else ""
        raise DatasetError(f"{path}: values {values} are not trainIds (0-18, 255).{hint}")
    hint = (f" It looks like a trainId map (only 0-18 and 255): a *_labelTrainIds map saved under the _labelIds "
            f"name; rename it to {sample.stem}{TRAIN_ID_SUFFIX}, or write label ids.") \
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

    def __init__(self, dataset: CityscapesDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset.prepare(index)


class CityscapesDataset(torch.utils.data.Dataset):
    """(image, trainIds) pairs from the official layout.

    `transform(image, label)` receives RGB uint8 HxWx3 and trainIds uint8 HxW numpy arrays.
    The default root is $CITYSCAPES_DATASET when set, else the synthetic dataset.

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

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", transform=None,
                 cache: bool = False):
        self.root = settings.data_root(root)
        self.split = split
        self.samples = find_samples(self.root, split)
        self.transform = transform
        self.name = dataset_name(self.root)
        if cache and not (hasattr(transform, "prepare") and hasattr(transform, "finish")):
            raise ValueError("cache=True needs a transform with prepare/finish stages (TrainTransform, EvalTransform)")
        self.cache = cache
        self._cache: tuple[_CacheColumn, _CacheColumn] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded, checked pair: RGB uint8 HxWx3 and trainIds uint8 HxW."""
        sample = self.samples[index]
        image, label = read_image(sample.image), read_label(sample)
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

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

from engine import classes, settings

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"

_VALID_LABEL_ID = np.zeros(256, dtype=bool)
_VALID_LABEL_ID[list(classes.VALID_LABEL_IDS)] = True
_VALID_TRAIN_ID = np.zeros(256, dtype=bool)
_VALID_TRAIN_ID[: classes.NUM_CLASSES] = True
_VALID_TRAIN_ID[classes.IGNORE_INDEX] = True


class DatasetError(ValueError):
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


def find_samples(root: str | os.PathLike, split: str) -> list[Sample]:
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
    images = {p.name[: -len(IMAGE_SUFFIX)]: p for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}")}
    if not images:
        raise DatasetError(f"split {split!r} is empty: no *{IMAGE_SUFFIX} files under {image_dir}/<city>/")
    label_stems = {p.name[: -len(LABEL_ID_SUFFIX)] for p in label_dir.glob(f"*/*{LABEL_ID_SUFFIX}")}
    label_stems |= {p.name[: -len(TRAIN_ID_SUFFIX)] for p in label_dir.glob(f"*/*{TRAIN_ID_SUFFIX}")}
    orphans = sorted(label_stems - set(images))
    if orphans:
        raise DatasetError(f"{len(orphans)} label(s) in {label_dir} have no image, e.g. {orphans[0]} "
                           f"(expected {image_dir}/<city>/{orphans[0]}{IMAGE_SUFFIX})")
    samples = []
    for stem, image in sorted(images.items()):
        city_dir = label_dir / image.parent.name
        train_ids, label_ids = city_dir / f"{stem}{TRAIN_ID_SUFFIX}", city_dir / f"{stem}{LABEL_ID_SUFFIX}"
        if train_ids.is_file():
            samples.append(Sample(stem, image, train_ids, True))
        elif label_ids.is_file():
            samples.append(Sample(stem, image, label_ids, False))
        else:
            raise DatasetError(f"{image} has no label: expected {label_ids} (or {train_ids.name})")
    return samples


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 HxWx3."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable: torch.from_numpy warns on read-only
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None


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
    if sample.train_ids:
        bad = ~_VALID_TRAIN_ID[label]
        if bad.any():
            raise DatasetError(f"{path}: values {sorted(set(np.unique(label[bad]).tolist()))} are not trainIds (0-18, 255)")
        return label
    bad = ~_VALID_LABEL_ID[label]
    if bad.any():
        values = sorted(set(np.unique(label[bad]).tolist()))
        hint = (" It looks like a trainId map (it contains 255): name such files *_gtFine_labelTrainIds.png,"
                " or write label ids.") if classes.IGNORE_INDEX in values else ""
        raise DatasetError(f"{path}: values {values} are not Cityscapes label ids (0-33).{hint}")
    return classes.label_ids_to_train_ids(label)


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

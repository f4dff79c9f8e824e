"""A confusion matrix over the 19 classes (255 ignored) and what derives from it, for a whole
split and for each image.

Rows are ground truth, columns predictions. IoU of class c = TP / (TP + FP + FN); a class that
occurs neither in ground truth nor in predictions has no IoU (NaN), and the mean IoU is taken
over the others, exactly as the official cityscapesscripts evaluator does (for one image too).

Boundary scoring is the trimap IoU: the same confusion counts, restricted to the pixels within
d pixels (Euclidean) of a ground-truth boundary, d = BOUNDARY_FRACTION of the image diagonal
(23 px on a 2048x1024 Cityscapes frame). A boundary pixel is one with a 4-neighbour of another
label (the ignore label included: the edge of a car against the ego vehicle is an edge). The band
depends on the ground truth alone, so two models are scored on the same pixels, and the band and
the rest of the image ("interior") partition the pixels: their counts add up to the whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from engine import distributed
from engine.classes import CLASS_NAMES, NUM_CLASSES

BOUNDARY_FRACTION = 0.01  # d of the trimap band, as a fraction of the image diagonal


@dataclass(frozen=True)
class Metrics:
    """What an evaluation measures (evaluation fills in mean_loss, num_images and, when it scores
    boundaries, boundary_confusion)."""
    miou: float
    pixel_accuracy: float
    per_class_iou: dict[str, float | None]   # class name -> IoU; None for a class in neither GT nor prediction
    mean_loss: float | None = None
    num_images: int = 0
    confusion: list[list[int]] | None = None           # 19x19 pixel counts, ground truth x prediction
    boundary_confusion: list[list[int]] | None = None  # the same within the trimap band
    boundary_fraction: float | None = None             # the band's d, as a fraction of each image's diagonal


def _cell(target: torch.Tensor, pred: torch.Tensor, n: int) -> torch.Tensor:
    """int64 cell index gt * n + pred of every pixel; n * n for a target outside 0..n-1 (ignore)."""
    target = target.to(torch.int64)
    return torch.where((target >= 0) & (target < n), target * n + pred.to(torch.int64), n * n)


def confusion(target: torch.Tensor, pred: torch.Tensor, n: int = NUM_CLASSES) -> torch.Tensor:
    """int64 n x n counts (ground truth x prediction) of the pixels whose target is a class (ignore
    and anything outside 0..n-1 dropped), on the tensors' device."""
    with torch.no_grad():
        return torch.bincount(_cell(target, pred, n).view(-1), minlength=n * n + 1)[: n * n].reshape(n, n)


def confusion_in_and_out(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                         n: int = NUM_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts over all pixels, counts where `mask`), as `confusion` gives them, in one pass."""
    with torch.no_grad():
        cells = _cell(target, pred, n) + mask.to(torch.int64) * (n * n + 1)
        both = torch.bincount(cells.view(-1), minlength=2 * (n * n + 1)).view(2, n * n + 1)[:, : n * n]
        inside = both[1].reshape(n, n)
        return both[0].reshape(n, n) + inside, inside


def iou_counts(mat) -> tuple[np.ndarray, np.ndarray]:
    """(intersection, union) per class of a confusion matrix: TP and TP + FP + FN, int64."""
    mat = np.asarray(mat, dtype=np.int64)
    tp = np.diag(mat)
    return tp, mat.sum(0) + mat.sum(1) - tp


def ious(intersection, union) -> np.ndarray:
    """float64 IoU per class; NaN where the union is 0 (the class in neither ground truth nor prediction)."""
    inter, uni = np.asarray(intersection, np.float64), np.asarray(union, np.float64)
    return np.divide(inter, uni, out=np.full(uni.shape, np.nan), where=uni > 0)


def mean_iou(intersection, union) -> float:
    """The mean over the classes that have an IoU (NaN when none has)."""
    v = ious(intersection, union)
    return float(np.nanmean(v)) if (~np.isnan(v)).any() else float("nan")


def named(values) -> dict[str, float | None]:
    """class name -> value (None for NaN)."""
    return {name: (None if math.isnan(v) else float(v)) for name, v in zip(CLASS_NAMES, values)}


def boundary_width(height: int, width: int) -> int:
    """d of the trimap band for an image of this size, in pixels (at least 1)."""
    return max(1, round(BOUNDARY_FRACTION * math.hypot(height, width)))


def boundary_band(label: np.ndarray, d: int) -> np.ndarray:
    """bool HxW: the pixels within `d` px (exact Euclidean distance) of a boundary pixel of `label`
    (a pixel with a 4-neighbour of another value)."""
    edge = np.zeros(label.shape, bool)
    horizontal = label[:, 1:] != label[:, :-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    vertical = label[1:, :] != label[:-1, :]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    if not edge.any():
        return edge
    dist = cv2.distanceTransform((~edge).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist <= d


def band_of(label: np.ndarray) -> np.ndarray:
    """The boundary band of a ground-truth label map, at its own size's width d."""
    label = label if label.dtype == np.uint8 else label.astype(np.uint8)  # trainIds and 255: faster comparisons
    return boundary_band(label, boundary_width(*label.shape))


class WithBands(torch.utils.data.Dataset):
    """A dataset of (image, label) pairs as (image, label, band): the boundary band of each label
    computed where the item is made (a DataLoader's worker processes), not in the evaluation loop."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, label, torch.from_numpy(band_of(np.asarray(label)))


@dataclass(frozen=True)
class ImageResult:
    """One image's confusion counts, over all its pixels and within its boundary band."""
    index: int            # position in the split (the order every process agrees on)
    image: str            # the file stem, e.g. frankfurt_000000_000294
    folder: str           # the city (Cityscapes) or recording sequence (ACDC); '' for flat layouts
    image_file: str       # the image, relative to the dataset root
    width: int            # of the ground truth (the resolution scored)
    height: int
    boundary_px: int      # d of its trimap band
    confusion: np.ndarray           # int64 19x19, ground truth x prediction
    boundary_confusion: np.ndarray  # int64 19x19, within the band

    @property
    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        return iou_counts(self.confusion)

    @property
    def boundary_counts(self) -> tuple[np.ndarray, np.ndarray]:
        return iou_counts(self.boundary_confusion)

    @property
    def miou(self) -> float:
        return mean_iou(*self.counts)

    @property
    def boundary_miou(self) -> float:
        return mean_iou(*self.boundary_counts)

    @property
    def pixel_accuracy(self) -> float:
        total = int(self.confusion.sum())
        return float(np.trace(self.confusion) / total) if total else float("nan")


class ImageResults:
    """Per-image confusion counts of an evaluation, in the order `add` is called: `entries` are
    (index, stem, folder, image file) of the images this process evaluates, in loader order."""

    def __init__(self, entries: list[tuple[int, str, str, str]]):
        self.entries, self.results = entries, []

    def add(self, label: torch.Tensor, pred: torch.Tensor, band: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Score the next image: its full-resolution trainIds `label` and `pred` on the model's device,
        and its boundary band (`band_of(label)`; computed here when not given, e.g. by the loader's
        workers); returns its confusion matrix on the device."""
        index, stem, folder, image_file = self.entries[len(self.results)]
        h, w = label.shape
        if band is None:
            band = band_of(label.cpu().numpy())
        band = torch.as_tensor(band)
        if band.dtype != torch.bool or band.shape != label.shape:
            raise ValueError(f"a boundary band is a bool map the size of its label {tuple(label.shape)}, "
                             f"got {band.dtype} {tuple(band.shape)}")
        band = band.to(label.device, non_blocking=True)
        full, inside = confusion_in_and_out(label, pred, band)
        both = torch.stack([full, inside]).cpu().numpy()
        self.results.append(ImageResult(index, stem, folder, image_file, w, h, boundary_width(h, w), both[0], both[1]))
        return full

    def gather(self) -> None:
        """Under torchrun: every rank's results on rank 0, in split order (the other ranks keep none)."""
        gathered = distributed.gather_to_main(self.results)
        self.results = sorted(gathered, key=lambda r: r.index) if gathered is not None else []

    def boundary_confusion(self) -> list[list[int]]:
        total = sum((r.boundary_confusion for r in self.results), np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64))
        return total.tolist()


class ConfusionMatrix:
    def __init__(self, num_classes: int = NUM_CLASSES):
        self.n = num_classes
        self.mat: torch.Tensor | None = None

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        self.add(confusion(target, pred, self.n))

    def add(self, mat: torch.Tensor) -> None:
        """Add counts already taken (e.g. one image's, from `ImageResults.add`)."""
        self.mat = mat.clone() if self.mat is None else self.mat + mat

    def reduce_from_all_processes(self, device: torch.device | str = "cpu") -> None:
        """Sum the counts over torchrun's ranks (every rank calls it; one with no images yet counts
        zeros on `device`). Integer counts: the result equals a single process's exactly."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if self.mat is None:
                self.mat = torch.zeros((self.n, self.n), dtype=torch.int64, device=device)
            torch.distributed.all_reduce(self.mat)

    def compute(self) -> Metrics:
        mat = (self.mat if self.mat is not None else torch.zeros((self.n, self.n), dtype=torch.int64)).cpu()
        inter, union = iou_counts(mat.numpy())
        total = int(mat.sum())
        return Metrics(
            miou=mean_iou(inter, union),
            pixel_accuracy=float(inter.sum() / total) if total > 0 else float("nan"),
            per_class_iou=named(ious(inter, union)),
            confusion=mat.tolist(),
        )

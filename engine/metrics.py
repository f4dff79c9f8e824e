"""A confusion matrix over the 19 classes (255 ignored) and what derives from it.

Rows are ground truth, columns predictions. IoU of class c = TP / (TP + FP + FN); a class that
occurs neither in ground truth nor in predictions has no IoU (NaN), and the mean IoU is taken
over the others, exactly as the official cityscapesscripts evaluator does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.classes import CLASS_NAMES, NUM_CLASSES


@dataclass(frozen=True)
class Metrics:
    """What an evaluation measures (evaluation fills in mean_loss and num_images)."""
    miou: float
    pixel_accuracy: float
    per_class_iou: dict[str, float | None]   # class name -> IoU; None for a class in neither GT nor prediction
    mean_loss: float | None = None
    num_images: int = 0


class ConfusionMatrix:
    def __init__(self, num_classes: int = NUM_CLASSES):
        self.n = num_classes
        self.mat: torch.Tensor | None = None

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        n = self.n
        if self.mat is None:
            self.mat = torch.zeros((n, n), dtype=torch.int64, device=target.device)
        with torch.no_grad():
            k = (target >= 0) & (target < n)
            inds = n * target[k].to(torch.int64) + pred[k].to(torch.int64)
            self.mat += torch.bincount(inds, minlength=n * n).reshape(n, n)

    def reduce_from_all_processes(self, device: torch.device | str = "cpu") -> None:
        """Sum the counts over torchrun's ranks (every rank calls it; one with no images yet counts
        zeros on `device`). Integer counts: the result equals a single process's exactly."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if self.mat is None:
                self.mat = torch.zeros((self.n, self.n), dtype=torch.int64, device=device)
            torch.distributed.all_reduce(self.mat)

    def compute(self) -> Metrics:
        mat = (self.mat if self.mat is not None else torch.zeros((self.n, self.n), dtype=torch.int64)).double().cpu()
        tp = mat.diag()
        denom = mat.sum(0) + mat.sum(1) - tp
        iou = torch.where(denom > 0, tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))
        valid = ~iou.isnan()
        total = mat.sum()
        return Metrics(
            miou=float(iou[valid].mean()) if valid.any() else float("nan"),
            pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
            per_class_iou={name: (None if math.isnan(v) else v) for name, v in zip(CLASS_NAMES, iou.tolist())},
        )

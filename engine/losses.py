"""Segmentation losses: cross-entropy and Dice, weighted by the recipe (pixels labelled 255 ignored)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.classes import IGNORE_INDEX
from engine.config import LossConfig


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Multi-class soft Dice (1 - mean over classes), over the pixels that are not ignored."""
    num_classes = logits.shape[1]
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    card = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + smooth) / (card + smooth)).mean()


class SegmentationLoss:
    def __init__(self, cfg: LossConfig, aux_weight: float = 0.4):
        self.cfg, self.aux_weight = cfg, aux_weight

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.cfg.ce:
            # sum / count rather than mean: a crop that is all padding (all 255) gives 0, not NaN,
            # without a host synchronisation.
            ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
            loss = loss + self.cfg.ce * ce / (target != IGNORE_INDEX).sum().clamp(min=1)
        if self.cfg.dice:
            loss = loss + self.cfg.dice * dice_loss(logits, target)
        return loss

    def __call__(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        loss = self.single(outputs["out"], target)
        if "aux" in outputs:
            loss = loss + self.aux_weight * self.single(outputs["aux"], target)
        return loss

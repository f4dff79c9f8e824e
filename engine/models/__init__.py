"""Segmentation models: encoder + decoder + head, one file per family.

Every model maps (N, 3, H, W) with any H, W to ``{"out": (N, num_classes, H, W)}`` logits, plus ``"aux"``
(same shape) when built with ``aux_loss=True``; ``model.classifier`` is an ``nn.Sequential`` whose last
layer is the 1x1 classifier conv, preceded by ``nn.Dropout2d(dropout)`` when ``dropout > 0``.
``head`` picks a decode head where a family has more than one (`HEADS`: DeepLabV3's torchvision or
mmsegmentation layout); None is the family's first. ``model.pad_multiple`` is the input multiple the architecture needs (1 = any size as is): the model
zero-pads its input to it and crops the logits back, and the ONNX export reads it.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .deeplab import HEADS as DEEPLAB_HEADS
from .deeplab import deeplabv3_r50, deeplabv3_r101
from .hrnet import hrnetv2_w48
from .pretrained import PretrainedWeightsUnavailable
from .unet import unet

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "deeplabv3_r50": deeplabv3_r50,
    "deeplabv3_r101": deeplabv3_r101,
    "hrnetv2_w48": hrnetv2_w48,
    "unet": unet,
}
BACKBONES: dict[str, str] = {
    "deeplabv3_r50": "resnet50",
    "deeplabv3_r101": "resnet101",
    "hrnetv2_w48": "hrnet_w48",
    "unet": "unet-64",
}

HEADS: dict[str, tuple[str, ...]] = {  # the decode heads of each family, the default first
    "deeplabv3_r50": DEEPLAB_HEADS,
    "deeplabv3_r101": DEEPLAB_HEADS,
    "hrnetv2_w48": ("hrnetv2",),
    "unet": ("unet",),
}


def build_model(arch: str, num_classes: int = 19, dropout: float = 0.0, pretrained_backbone: bool = False,
                aux_loss: bool = False, head: str | None = None) -> nn.Module:
    """Build ``arch``; raises ValueError for an unknown arch or head, PretrainedWeightsUnavailable when
    ``pretrained_backbone`` weights are neither cached nor downloadable."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(sorted(ARCHS))}")
    if head is not None and head not in HEADS[arch]:
        raise ValueError(f"{arch} has no head {head!r}; its heads: {', '.join(HEADS[arch])}")
    kwargs = {"head": head} if head is not None and len(HEADS[arch]) > 1 else {}
    return ARCHS[arch](num_classes=num_classes, dropout=dropout, pretrained_backbone=pretrained_backbone,
                       aux_loss=aux_loss, **kwargs)


__all__ = ["ARCHS", "BACKBONES", "HEADS", "build_model", "PretrainedWeightsUnavailable"]

"""DeepLabV3 (ResNet-50/101, output stride 8) from torchvision, with optional Dropout2d and FCN aux head.

Two decode heads:
- ``head="torchvision"`` (the default): torchvision's DeepLabHead (ASPP 256 ch: 1x1, rates 12/24/36,
  image pooling last; 1x1 projection with Dropout(0.5); 3x3 Conv-BN-ReLU; 1x1 classifier).
- ``head="mmseg"``: mmsegmentation's ``ASPPHead`` as its DeepLabV3 R-50/101-D8 Cityscapes models use
  it (configs/_base_/models/deeplabv3_r50-d8.py): 512 ch, image pooling branch first, rates 1/12/24/36,
  one 3x3 Conv-BN-ReLU bottleneck over the five branches, Dropout2d, 1x1 classifier. With torchvision's
  ResNet (whose keys equal mmsegmentation's ResNetV1b, "R-50b/101b") and torchvision's FCN auxiliary
  head (1024 -> 256 -> classes, as mmsegmentation's ``FCNHead`` auxiliary), those checkpoints load
  exactly (`engine.models.imports`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

from .pretrained import ensure_torchvision_weights

HEADS = ("torchvision", "mmseg")
MMSEG_CHANNELS = 512
MMSEG_RATES = (12, 24, 36)


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = 0 if kernel == 1 else dilation
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ASPPHead(nn.Module):
    """mmsegmentation's ASPPHead without its classifier: [image pool, 1x1, 3x3 rate r...] -> 3x3 bottleneck."""

    def __init__(self, in_ch: int = 2048, channels: int = MMSEG_CHANNELS, rates: tuple[int, ...] = MMSEG_RATES):
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_ch, channels, 1))
        self.aspp = nn.ModuleList([conv_bn_relu(in_ch, channels, 1)]
                                  + [conv_bn_relu(in_ch, channels, 3, dilation=r) for r in rates])
        self.bottleneck = conv_bn_relu((len(rates) + 2) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.bottleneck(torch.cat([pooled] + [branch(x) for branch in self.aspp], dim=1))


def _deeplabv3(builder, weights, num_classes, dropout, pretrained_backbone, aux_loss, head) -> nn.Module:
    if head not in HEADS:
        raise ValueError(f"DeepLabV3 head must be one of {HEADS}, got {head!r}")
    if pretrained_backbone:
        ensure_torchvision_weights(weights)
    model = builder(weights=None, weights_backbone=weights if pretrained_backbone else None,
                    num_classes=num_classes, aux_loss=aux_loss)
    if head == "mmseg":
        drop = [nn.Dropout2d(dropout)] if dropout > 0 else []
        model.classifier = nn.Sequential(ASPPHead(), *drop, nn.Conv2d(MMSEG_CHANNELS, num_classes, 1))
    elif dropout > 0:  # DeepLabHead = [ASPP, conv3x3, BN, ReLU, conv1x1]: dropout right before the last conv
        model.classifier.insert(len(model.classifier) - 1, nn.Dropout2d(dropout))
    # torchvision's DeepLabV3 already returns {"out": ..., "aux": ...} at the input size, for any H, W
    # (strided convs and a final bilinear resize, align_corners=False as mmsegmentation): no padding needed.
    model.pad_multiple = 1
    return model


def deeplabv3_r50(num_classes: int = 19, dropout: float = 0.0, pretrained_backbone: bool = False,
                  aux_loss: bool = False, head: str = "torchvision") -> nn.Module:
    return _deeplabv3(deeplabv3_resnet50, ResNet50_Weights.IMAGENET1K_V1,
                      num_classes, dropout, pretrained_backbone, aux_loss, head)


def deeplabv3_r101(num_classes: int = 19, dropout: float = 0.0, pretrained_backbone: bool = False,
                   aux_loss: bool = False, head: str = "torchvision") -> nn.Module:
    return _deeplabv3(deeplabv3_resnet101, ResNet101_Weights.IMAGENET1K_V1,
                      num_classes, dropout, pretrained_backbone, aux_loss, head)

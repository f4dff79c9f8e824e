"""DeepLabV3 (ResNet-50/101, output stride 8) from torchvision, with optional Dropout2d and FCN aux head."""
from __future__ import annotations

from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

from .pretrained import ensure_torchvision_weights


def _deeplabv3(builder, weights, num_classes, dropout, pretrained_backbone, aux_loss) -> nn.Module:
    if pretrained_backbone:
        ensure_torchvision_weights(weights)
    model = builder(weights=None, weights_backbone=weights if pretrained_backbone else None,
                    num_classes=num_classes, aux_loss=aux_loss)
    if dropout > 0:  # DeepLabHead = [ASPP, conv3x3, BN, ReLU, conv1x1]: dropout right before the last conv
        model.classifier.insert(len(model.classifier) - 1, nn.Dropout2d(dropout))
    # torchvision's DeepLabV3 already returns {"out": ..., "aux": ...} at the input size, for any H, W
    # (strided convs and a final bilinear resize): no padding needed.
    model.pad_multiple = 1
    return model


def deeplabv3_r50(num_classes: int = 19, dropout: float = 0.0, pretrained_backbone: bool = False,
                  aux_loss: bool = False) -> nn.Module:
    return _deeplabv3(deeplabv3_resnet50, ResNet50_Weights.IMAGENET1K_V1,
                      num_classes, dropout, pretrained_backbone, aux_loss)


def deeplabv3_r101(num_classes: int = 19, dropout: float = 0.0, pretrained_backbone: bool = False,
                   aux_loss: bool = False) -> nn.Module:
    return _deeplabv3(deeplabv3_resnet101, ResNet101_Weights.IMAGENET1K_V1,
                      num_classes, dropout, pretrained_backbone, aux_loss)

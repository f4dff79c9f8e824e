"""HRNetV2-W48: timm's hrnet_w48 branches (48/96/192/384 ch at strides 4/8/16/32) + the HRNetV2 head."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .pretrained import timm_weights_file

BRANCH_CHANNELS = (48, 96, 192, 384)
BRANCH_STRIDES = (4, 8, 16, 32)


def _head(in_ch: int, mid_ch: int, num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    layers = [nn.Conv2d(in_ch, mid_ch, 1, bias=False), nn.BatchNorm2d(mid_ch), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers, nn.Conv2d(mid_ch, num_classes, 1))


class HRNetV2(nn.Module):
    """Upsample all four branches to stride 4, concat (720 ch), 1x1 Conv-BN-ReLU, [Dropout2d], 1x1 classifier.

    Inputs of any size are zero-padded to a multiple of `pad_multiple` (32, the stride of the lowest
    branch: HRNet's fuse layers add upsampled branches to each other, so every branch must divide
    evenly) and cropped back.
    """
    pad_multiple = BRANCH_STRIDES[-1]

    def __init__(self, num_classes: int = 19, dropout: float = 0.0, pretrained_backbone: bool = False,
                 aux_loss: bool = False):
        super().__init__()
        kwargs = {}
        if pretrained_backbone and (path := timm_weights_file("hrnet_w48")):
            kwargs["pretrained_cfg_overlay"] = {"file": path}  # load the cached file, no hub access
        self.backbone = timm.create_model("hrnet_w48", features_only=True, feature_location="",
                                          out_indices=(1, 2, 3, 4), pretrained=pretrained_backbone, **kwargs)
        info = self.backbone.feature_info
        assert tuple(info.channels()) == BRANCH_CHANNELS and tuple(info.reduction()) == BRANCH_STRIDES, info
        width = sum(BRANCH_CHANNELS)  # 720
        self.classifier = _head(width, width, num_classes, dropout)
        self.aux_classifier = _head(width, 256, num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        ph, pw = -h % self.pad_multiple, -w % self.pad_multiple
        xp = F.pad(x, (0, pw, 0, ph)) if ph or pw else x
        feats = self.backbone(xp)
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        feats = torch.cat(feats, dim=1)

        def logits(head: nn.Module) -> torch.Tensor:
            y = F.interpolate(head(feats), size=xp.shape[-2:], mode="bilinear", align_corners=False)
            return y[..., :h, :w]

        out = {"out": logits(self.classifier)}
        if self.aux_classifier is not None:
            out["aux"] = logits(self.aux_classifier)
        return out


def hrnetv2_w48(num_classes: int = 19, dropout: float = 0.0, pretrained_backbone: bool = False,
                aux_loss: bool = False) -> nn.Module:
    return HRNetV2(num_classes, dropout, pretrained_backbone, aux_loss)

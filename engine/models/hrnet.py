"""HRNetV2-W48 for segmentation: timm's hrnet_w48 branches (48/96/192/384 ch at strides 4/8/16/32) + the HRNetV2 head.

timm's HRNet is the classification HRNet, whose fuse layers upsample the lower branches with
nearest-neighbour `nn.Upsample`. The segmentation HRNetV2 (HRNet-Semantic-Segmentation's
seg_hrnet.py, mmsegmentation's HRNet) upsamples them bilinearly, align_corners=False: `_bilinear_fuse`
swaps those modules in place (timm's code and parameter names stay; the weights are the same). With the
head (1x1 Conv-BN-ReLU 720 -> 720, 1x1 classifier) the model has the published model's 65.8M
parameters for 19 classes (HRNet-Semantic-Segmentation's README); its head conv has no bias, as
mmsegmentation's, because the BatchNorm right after it makes one redundant (an official checkpoint's
bias is folded into the BatchNorm's running mean on import, `engine.models.imports`).
"""
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


def _bilinear_fuse(backbone: nn.Module) -> None:
    """Replace every nearest-neighbour `nn.Upsample` of timm's fuse layers by a bilinear one
    (align_corners=False) of the same scale factor. With inputs padded to `pad_multiple` every branch
    divides evenly, so this equals seg_hrnet.py's `F.interpolate(..., size=x[i].shape[-2:], mode='bilinear')`."""
    for name, module in list(backbone.named_modules()):
        if isinstance(module, nn.Upsample):
            parent, _, child = name.rpartition(".")
            backbone.get_submodule(parent).add_module(child, nn.Upsample(
                scale_factor=module.scale_factor, mode="bilinear", align_corners=False))


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
        _bilinear_fuse(self.backbone)
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

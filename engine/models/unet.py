"""UNet (Ronneberger et al. 2015): 4 down / 4 up, double 3x3 Conv-BN-ReLU blocks, base 64 channels,
transposed-conv upsampling, skip connections by concatenation. No auxiliary head: aux_loss=True raises
ValueError. Inputs of any size are zero-padded to a multiple of `pad_multiple` (16: four 2x poolings)
and the logits cropped back."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """2x transposed conv (ch -> ch/2), concat with the skip (ch/2), double conv (ch -> ch/2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(ch, ch // 2, 2, stride=2)
        self.conv = double_conv(ch, ch // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    pad_multiple = 16   # four 2x max-poolings: the input must divide by 2**4

    def __init__(self, num_classes: int = 19, base: int = 64, dropout: float = 0.0):
        super().__init__()
        chs = [base * 2 ** i for i in range(5)]  # 64, 128, 256, 512, 1024
        self.inc = double_conv(3, chs[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), double_conv(chs[i], chs[i + 1]))
                                   for i in range(4))
        self.ups = nn.ModuleList(Up(chs[i]) for i in range(4, 0, -1))
        layers = [nn.Dropout2d(dropout)] if dropout > 0 else []
        self.classifier = nn.Sequential(*layers, nn.Conv2d(chs[0], num_classes, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        ph, pw = -h % self.pad_multiple, -w % self.pad_multiple
        x = F.pad(x, (0, pw, 0, ph)) if ph or pw else x
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return {"out": self.classifier(y)[..., :h, :w]}


def unet(num_classes: int = 19, dropout: float = 0.0, pretrained_backbone: bool = False,
         aux_loss: bool = False) -> nn.Module:
    if pretrained_backbone:
        raise ValueError("unet has no pretrained backbone: set `pretrained_backbone: false`")
    if aux_loss:
        raise ValueError("unet has no auxiliary head: set `aux_loss: false`")
    return UNet(num_classes, dropout=dropout)

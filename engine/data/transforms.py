"""Joint image/label transforms, built on torchvision.transforms.v2.

v2 transforms an `Image` and a `Mask` together: geometric ops move both (masks always with
nearest-neighbour), photometric ops touch only the image, and padding fills the mask with 255.

Each transform is two stages, `prepare` (deterministic: to tensors, resize to the base size; uint8)
and `finish` (the random augmentation and normalisation); `t(image, label)` is
`t.finish(*t.prepare(image, label))`. The dataset's in-memory cache (`data.cache`) stores what
`prepare` returns, so a cached sample goes through exactly the same ops as an uncached one.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from engine.classes import IGNORE_INDEX
from engine.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 HxWx3 -> normalised float CHW tensor."""
    return _normalize(tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)))


class TrainTransform:
    """Resize to the training size [W, H], then the recipe's augmentations, then normalise."""

    def __init__(self, size: list[int] | tuple[int, int], augment: AugmentConfig | None = None):
        w, h = size
        augment = augment or AugmentConfig()
        self.resize = v2.Resize((h, w), antialias=True)  # masks: nearest (v2 resizes a Mask with NEAREST)
        ops: list = []
        if augment.scale:
            ops.append(v2.ScaleJitter(target_size=(h, w), scale_range=tuple(augment.scale), antialias=True))
        if augment.crop:
            cw, ch = augment.crop
            ops.append(v2.RandomCrop((ch, cw), pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}))
        if augment.hflip:
            ops.append(v2.RandomHorizontalFlip())
        if augment.photometric:
            ops.append(v2.RandomPhotometricDistort(p=0.5))
        self.augment = v2.Compose(ops) if ops else None

    def prepare(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The deterministic stage: uint8 image 3xHxW and label 1xHxW at the training size."""
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(label))[None])
        img, mask = self.resize(img, mask)
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def finish(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The random stage on `prepare`'s output (never modified in place: it may be a cached tensor)."""
        img, mask = tv_tensors.Image(image), tv_tensors.Mask(label)
        if self.augment is not None:
            img, mask = self.augment(img, mask)
        return _normalize(img).as_subclass(torch.Tensor), mask[0].as_subclass(torch.Tensor).long()

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.finish(*self.prepare(image, label))


class EvalTransform:
    """Resize the image to the evaluation input size [W, H]; keep the label at full resolution
    (predictions are upsampled to it, as the official protocol does)."""

    def __init__(self, size: list[int] | tuple[int, int] | None):
        self.resize = v2.Resize((size[1], size[0]), antialias=True) if size else None

    def prepare(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 image 3xHxW at the eval size, uint8 label HxW at full resolution."""
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        if self.resize:
            img = self.resize(img)
        return img.as_subclass(torch.Tensor), torch.from_numpy(np.ascontiguousarray(label))

    def finish(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _normalize(tv_tensors.Image(image)).as_subclass(torch.Tensor), label.long()

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.finish(*self.prepare(image, label))


def eval_collate(batch):
    """Stack images (all at the eval size); keep labels (and anything else per item, e.g. boundary
    bands) as lists (their sizes may differ)."""
    images, labels, *more = zip(*batch)
    return torch.stack(images), list(labels), *(list(m) for m in more)

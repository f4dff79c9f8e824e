"""The one inference path: a model and normalised images -> logits or trainIds at any output size.

Evaluation, training-time validation and (later) the dashboard and CLI all go through here.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from engine import checkpoints
from engine.data.transforms import to_tensor


class DeviceUnavailable(RuntimeError):
    pass


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"--device {name} was asked for but no CUDA device is available (use --device cpu)")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def forward_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Float32 logits (N, C, H, W) at the input size."""
    with autocast(images.device):
        return model(images)["out"].float()


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of logits to (H, W) (identity when already there)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class Segmenter:
    """A trained checkpoint ready to label RGB images of any size."""

    def __init__(self, checkpoint_path, device: str | torch.device = "auto", input_size: tuple[int, int] | None = None):
        self.ckpt = checkpoints.load(checkpoint_path)
        self.device = select_device(str(device))
        self.model = checkpoints.build_from(self.ckpt).to(self.device)
        recipe = self.ckpt["recipe"]["data"]
        self.input_size = tuple(input_size or recipe.get("eval_size") or recipe["size"])  # (W, H)

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> trainIds uint8 HxW at the image's own resolution."""
        x = to_tensor(image)
        x = TF.resize(x, [self.input_size[1], self.input_size[0]], antialias=True)[None].to(self.device)
        logits = upsample(forward_logits(self.model, x), image.shape[:2])
        return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()

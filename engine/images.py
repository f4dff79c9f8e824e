"""Reading images users give us: one decoder for dashboard uploads, `segment`, `coverage` and the
dataset reader.

Whatever comes in (PNG, JPEG including phone photos with an EXIF rotation and CMYK JPEGs, WebP,
BMP, a still GIF; 8 or 16 bits; grayscale, palette, with or without alpha) comes out as an upright
RGB uint8 HxWx3 array, or as an `ImageError` whose one-line message names the file and says what is
wrong with it. The pixel count is read from the header and checked against `max_pixels()` before
anything is decoded, so a decompression bomb costs nothing; truncated and corrupt files are errors,
never half-grey images.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from engine import settings
from engine.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "BMP": "BMP", "GIF": "GIF"}

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not an image padded with grey
Image.MAX_IMAGE_PIXELS = None             # PIL's own bomb check is replaced by max_pixels(), checked first


class ImageError(UserError, ValueError):
    """A file that is not a usable image; the message names it and says why."""


def max_pixels() -> int:
    """The largest image accepted, in pixels (settings: SEGBENCH_MAX_PIXELS, default 50 million)."""
    try:
        return settings.max_pixels()
    except ValueError as e:
        raise ImageError(str(e)) from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):                    # 16-bit grayscale: scale, not clip
        gray = np.asarray(img).astype(np.float32)
        scale = 255.0 / 65535.0 if img.mode != "I" or gray.max() > 255 else 1.0
        gray = np.clip(np.rint(gray * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        raise ImageError("floating-point pixels; save the image as 8- or 16-bit")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    return np.array(img.convert("RGB"))  # a writable copy (torch.from_numpy warns on read-only arrays)


def decode_image(data: bytes, name: str, limit: int | None = None) -> np.ndarray:
    """The bytes of an image file -> RGB uint8 HxWx3, upright as a viewer shows it; `name` is only
    used in messages. Raises ImageError for anything else."""
    if not data:
        raise ImageError(f"{name}: the file is empty")
    limit = max_pixels() if limit is None else limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF / palettes; the result is what counts
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in FORMATS:
                    raise ImageError(f"{name}: a {img.format} file; use {', '.join(sorted(set(FORMATS.values())))}")
                w, h = img.size
                if w < 1 or h < 1:
                    raise ImageError(f"{name}: declares a size of {w}x{h} pixels")
                if w * h > limit:
                    raise ImageError(f"{name}: {w}x{h} is {w * h / 1e6:.1f} million pixels, over the limit of "
                                     f"{limit / 1e6:g} million (SEGBENCH_MAX_PIXELS)")
                frames = getattr(img, "n_frames", 1)
                if frames > 1 and img.format != "MPO":  # MPO: a phone JPEG with a depth/preview frame
                    raise ImageError(f"{name}: an animated image ({frames} frames); give one frame, or a video")
                img.load()
                return _to_rgb(ImageOps.exif_transpose(img))
    except ImageError as e:
        raise ImageError(str(e) if str(e).startswith(name) else f"{name}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: unreadable or corrupt image (the content is not PNG, JPEG, WebP, BMP or GIF)") from None
    except MemoryError:
        raise ImageError(f"{name}: too large to decode in the memory available") from None
    except Exception as e:  # noqa: BLE001 (any decoder failure on bad bytes: truncated, corrupt, bad EXIF)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{name}: unreadable or corrupt image ({reason})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> RGB uint8 HxWx3 (see `decode_image`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_image(data, str(path))

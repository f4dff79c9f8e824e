"""Reading images users give us: one decoder for dashboard uploads, `segment`, `coverage` and the
dataset reader.

Whatever comes in (PNG, JPEG including phone photos with an EXIF rotation and CMYK JPEGs, WebP,
BMP, a still GIF, TIFF with any of the usual compressions, strips or tiles, PNM (.ppm/.pgm/.pbm) and
JPEG 2000; 1, 8 or 16 bits; grayscale, palette, CMYK, with or without alpha) comes out as an upright
RGB uint8 HxWx3 array, or as an `ImageError` whose one-line message names the file and says what is
wrong with it. The pixel count is read from the header and checked against `max_pixels()` before
anything is decoded, so a decompression bomb costs nothing; truncated and corrupt files are errors,
never half-grey images. Animations and multi-page TIFFs are refused (one picture per file); a pyramidal
TIFF (the extra pages are reduced-resolution copies, as GIS exports and scanners write) is one picture.
`ACCEPTED` is the one list of formats: suffixes, Pillow formats and the names in messages derive from it.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError, features

from engine import settings
from engine.errors import UserError

# (the name users know, Pillow's format names, file suffixes) for every still format decoded here. Not
# here on purpose: formats Pillow hands to external programs (EPS, PDF: Ghostscript) and icons, cursors
# and the like (ICO, ICNS, ...), which are not photos of streets.
ACCEPTED: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("PNG", ("PNG",), (".png",)),
    ("JPEG", ("JPEG", "MPO"), (".jpg", ".jpeg")),  # MPO: a phone JPEG with a depth/preview frame
    ("WebP", ("WEBP",), (".webp",)),
    ("BMP", ("BMP",), (".bmp",)),
    ("GIF", ("GIF",), (".gif",)),
    ("TIFF", ("TIFF",), (".tif", ".tiff")),        # cameras, scanners, GIS exports
    ("PNM", ("PPM",), (".ppm", ".pgm", ".pbm", ".pnm")),  # raw-converter and robotics pipelines
) + ((("JPEG 2000", ("JPEG2000",), (".jp2", ".j2k")),)  # GIS orthophotos; only where Pillow has OpenJPEG
     if features.check_codec("jpg_2000") else ())
SUFFIXES = tuple(suffix for _, _, suffixes in ACCEPTED for suffix in suffixes)
FORMATS = {pil: name for name, pils, _ in ACCEPTED for pil in pils}
FORMAT_NAMES = ", ".join(name for name, _, _ in ACCEPTED)  # for messages: "PNG, JPEG, WebP, ..."
_ONE_OF = " or ".join(FORMAT_NAMES.rsplit(", ", 1))     # "PNG, JPEG, ... or JPEG 2000"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_MAX_TIFF_PAGES = 1000  # pages looked at (headers only) before a TIFF is refused as a document

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


def _to_rgb(img: Image.Image, deep: bool = False) -> np.ndarray:
    """`deep`: mode I holds 16-bit samples whatever their values (a 16-bit PNM)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):                    # 16-bit grayscale: scale, not clip
        gray = np.asarray(img).astype(np.float32)
        scale = 255.0 / 65535.0 if img.mode != "I" or deep or gray.max() > 255 else 1.0
        gray = np.clip(np.rint(gray * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        raise ImageError("floating-point pixels; save the image as 8- or 16-bit")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    return np.array(img.convert("RGB"))  # a writable copy (torch.from_numpy warns on read-only arrays)


def _check_size(img: Image.Image, limit: int) -> None:
    """The size the header declares, against `limit`: nothing is decoded yet."""
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"declares a size of {w}x{h} pixels")
    if w * h > limit:
        raise ImageError(f"{w}x{h} is {w * h / 1e6:.1f} million pixels, over the limit of "
                         f"{limit / 1e6:g} million (SEGBENCH_MAX_PIXELS)")


def _seek_tiff_picture(img: Image.Image, limit: int) -> None:
    """Select the one picture of a TIFF, reading page headers only. Pages whose NewSubfileType (tag 254)
    says reduced-resolution copy (bit 0, the levels of a pyramidal TIFF) or transparency mask (bit 2),
    or whose old SubfileType (tag 255) is 2 (reduced resolution), are not pictures of their own; more
    than one full-resolution page is a document, refused like an animation."""
    pictures, page = [], 0
    while True:
        try:
            img.seek(page)
        except EOFError:  # past the last page
            break
        if page == _MAX_TIFF_PAGES:
            raise ImageError(f"a TIFF with more than {_MAX_TIFF_PAGES} pages; give one page")
        if not (int(img.tag_v2.get(254, 0)) & 0b101 or img.tag_v2.get(255) == 2):
            pictures.append(page)
        page += 1
    if len(pictures) > 1:
        raise ImageError(f"a multi-page TIFF ({len(pictures)} pages); give one page")
    img.seek(pictures[0] if pictures else 0)
    _check_size(img, limit)  # the page decoded (page 1, unless page 1 is itself a reduced copy)


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
                    raise ImageError(f"{name}: a {img.format} file; use {FORMAT_NAMES}")
                _check_size(img, limit)  # page 1's header: before anything else is read or decoded
                if img.format == "TIFF":
                    _seek_tiff_picture(img, limit)
                else:
                    frames = getattr(img, "n_frames", 1)
                    if frames > 1 and img.format != "MPO":  # MPO: a phone JPEG with a depth/preview frame
                        raise ImageError(f"{name}: an animated image ({frames} frames); give one frame, or a video")
                if img.mode == "I" and img.format == "TIFF":
                    raise ImageError("32-bit or signed integer pixels; save the image as 8- or 16-bit")
                deep = img.mode == "I" and img.format == "PPM"  # 16-bit PGM (any maxval, scaled to 65535)
                img.load()
                return _to_rgb(ImageOps.exif_transpose(img), deep)
    except ImageError as e:
        raise ImageError(str(e) if str(e).startswith(name) else f"{name}: {e}") from None
    except UnidentifiedImageError:
        if data[:4] in _TIFF_MAGIC:  # a TIFF header, but a pixel layout Pillow has no decoder for
            raise ImageError(f"{name}: a TIFF this decoder cannot read (a pixel layout such as floating-point "
                             "colour or 32/64-bit samples, or a damaged or truncated file); "
                             "save it as 8- or 16-bit RGB") from None
        raise ImageError(f"{name}: unreadable or corrupt image (the content is not {_ONE_OF})") from None
    except MemoryError:
        raise ImageError(f"{name}: too large to decode in the memory available") from None
    except Exception as e:  # noqa: BLE001 (any decoder failure on bad bytes: truncated, corrupt, bad EXIF)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{name}: unreadable or corrupt image ({reason})") from None


def gps_tags(data: bytes, name: str) -> dict[int, object]:
    """The EXIF GPS block of an image file's bytes as Pillow reads it (tag id -> value; see
    `engine.geo.place_from_exif`), from the header alone: no pixel is decoded. {} when the file has no
    EXIF, no GPS block, or EXIF too damaged to read; ImageError when the bytes are not an image."""
    if not data:
        raise ImageError(f"{name}: the file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about odd EXIF, on opening a JPEG already
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(f"{name}: unreadable or corrupt image (the content is not {_ONE_OF})") from None
        except Exception as e:  # noqa: BLE001 (a header Pillow chokes on)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ImageError(f"{name}: unreadable or corrupt image ({reason})") from None
        with img:
            if img.format not in FORMATS:
                raise ImageError(f"{name}: a {img.format} file; use {FORMAT_NAMES}")
            try:
                return dict(img.getexif().get_ifd(ExifTags.IFD.GPSInfo))
            except Exception:  # noqa: BLE001 (damaged EXIF: no place, the picture itself may be fine)
                return {}


def read_bytes(path: str | os.PathLike) -> bytes:
    """An image file's bytes, or ImageError naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> RGB uint8 HxWx3 (see `decode_image`)."""
    return decode_image(read_bytes(path), str(path))

"""Turning uploaded files into RGB arrays, with a clear message for anything we cannot use.

Images: whatever `engine.images` decodes (its `FORMAT_NAMES`: PNG, JPEG, WebP, BMP, still GIF,
single-page or pyramidal TIFF, PNM, JPEG 2000; 1, 8 or 16 bits, any size and aspect ratio up to
SEGBENCH_MAX_PIXELS; EXIF orientation applied, alpha and palette converted to RGB); the upload
types are its `SUFFIXES`. Zips are unpacked in memory (images inside only; limits guard
against zip bombs). Videos are handed to `engine.video` through a temporary file.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import cv2
import numpy as np

from engine import images
from engine.segment import IMAGE_SUFFIXES, encode_png  # noqa: F401  (encode_png: the dashboard's PNG encoder too)
from engine.video import VIDEO_SUFFIXES

IMAGE_TYPES = [s.lstrip(".") for s in IMAGE_SUFFIXES]
VIDEO_TYPES = [s.lstrip(".") for s in VIDEO_SUFFIXES]
MAX_ZIP_FILES = 1000
MAX_ZIP_BYTES = 2 << 30       # uncompressed
PREVIEW_WIDTH = 1460          # on-screen copies: Streamlit's own widest image (2 x 730 px)


class UploadError(images.ImageError):
    """A file the dashboard cannot use; the message names it and says why."""


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix.lower()

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.data).hexdigest()


def kind_of(name: str) -> str:
    """'image', 'video', 'zip' or raises UploadError for any other file type."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix == ".zip":
        return "zip"
    raise UploadError(f"{name}: unsupported file type {suffix or '(none)'}; use an image "
                      f"({', '.join(IMAGE_TYPES)}), a video ({', '.join(VIDEO_TYPES)}) or a zip of images")


def decode_image(name: str, data: bytes) -> np.ndarray:
    """Bytes of an uploaded image -> RGB uint8 HxWx3, upright (`engine.images.decode_image`, the
    decoder `segment` and `coverage` use too); UploadError with one line if it is not usable."""
    try:
        return images.decode_image(data, name)
    except images.ImageError as e:
        raise UploadError(str(e)) from None


def expand(uploads: list[Upload]) -> tuple[list[Upload], list[str]]:
    """Images from a list of uploads, zips unpacked; returns (images, problems) where each problem
    is a one-line message about a file that was skipped."""
    images, problems = [], []
    for up in uploads:
        try:
            kind = kind_of(up.name)
        except UploadError as e:
            problems.append(str(e))
            continue
        if kind == "image":
            images.append(up)
        elif kind == "video":
            problems.append(f"{up.name}: videos are compared on the Compare page, not here")
        else:
            found, skipped = _unzip(up)
            images += found
            problems += skipped
    return images, problems


def _unzip(up: Upload) -> tuple[list[Upload], list[str]]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(up.data))
    except (zipfile.BadZipFile, OSError):
        return [], [f"{up.name}: not a readable zip file"]
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and not _hidden(m.filename)]
        if len(members) > MAX_ZIP_FILES or sum(m.file_size for m in members) > MAX_ZIP_BYTES:
            return [], [f"{up.name}: too large (at most {MAX_ZIP_FILES} files and {MAX_ZIP_BYTES >> 30} GB unpacked)"]
        found, skipped = [], []
        for m in sorted(members, key=lambda m: m.filename):
            name = f"{up.name}/{m.filename}"
            if PurePosixPath(m.filename).suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(f"{name}: not an image, skipped")
                continue
            try:
                found.append(Upload(name, zf.read(m)))
            except (zipfile.BadZipFile, OSError, RuntimeError) as e:  # CRC errors, encrypted members
                skipped.append(f"{name}: unreadable in the zip ({e})")
        if not found and not skipped:
            skipped.append(f"{up.name}: the zip holds no images")
        return found, skipped


def _hidden(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_png_or_jpeg(data: bytes, labels: bool = False) -> np.ndarray:
    """The inverse of encode_png / encode_jpeg for our own cached frames and label maps."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED if labels else cv2.IMREAD_COLOR)
    return arr if labels else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def preview_size(width: int, height: int, max_width: int = PREVIEW_WIDTH) -> tuple[int, int]:
    """(w, h) of the on-screen copy: the original size, or scaled down to max_width."""
    if width <= max_width:
        return width, height
    return max_width, max(1, round(height * max_width / width))


def preview(array: np.ndarray, max_width: int = PREVIEW_WIDTH) -> np.ndarray:
    """The on-screen copy of an image (area-averaged) or label map (nearest label) at preview_size.
    Downloads stay at the original resolution; the screen gets what Streamlit would show anyway,
    at a fraction of the cost of having st.image re-encode, decode and shrink a full-size array."""
    h, w = array.shape[:2]
    size = preview_size(w, h, max_width)
    if size == (w, h):
        return array
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA if array.ndim == 3 else cv2.INTER_NEAREST)


def app_icon(size: int = 32):
    """The dashboard's tab icon: stripes of sky, building, vegetation and road in the Cityscapes colours."""
    from PIL import Image

    from engine.classes import CLASS_NAMES, PALETTE

    rows = np.repeat([PALETTE[CLASS_NAMES.index(c)] for c in ("sky", "building", "vegetation", "road")], size // 4, axis=0)
    return Image.fromarray(np.repeat(rows[:, None, :], size, axis=1).astype(np.uint8))


# ---- Planners' surveys: samples with places, and the place files users upload ----

SAMPLE_ORIGIN = (48.7784, 9.1800)  # the sample photos and drive: a few streets of central Stuttgart


def sample_photos(n: int = 8) -> list[Upload]:
    """`n` synthetic street scenes as JPEGs carrying EXIF GPS, along two parallel streets about 60 m
    apart, for a first look at the map without photos of one's own."""
    from PIL import ExifTags, Image

    from engine.data.synthetic import render_scene
    from engine.geo import Place, exif_gps

    out = []
    for k in range(n):
        lat = SAMPLE_ORIGIN[0] - (k // 4) * 0.00054          # ~60 m between the two streets
        lon = SAMPLE_ORIGIN[1] + (k % 4) * 0.0011            # ~80 m between photos along a street
        rgb = render_scene(np.random.default_rng(100 + k), 512, 256)[0]
        exif = Image.Exif()
        exif[ExifTags.IFD.GPSInfo] = exif_gps(Place(lat, lon, 90.0))
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=90, exif=exif)
        out.append(Upload(f"sample_{k}.jpg", buf.getvalue()))
    return out


def sample_drive(seconds: float = 6.0, fps: float = 5.0) -> tuple[Upload, Upload]:
    """A synthetic dashcam clip and the GPX track of its drive (east along a street at 10 m/s)."""
    import tempfile
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    from engine.bench import synthetic_clip
    from engine.geo import EARTH_RADIUS_M, Place, gpx_text

    start = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)
    metres_per_degree = EARTH_RADIUS_M * np.pi / 180 * np.cos(np.radians(SAMPLE_ORIGIN[0]))
    points = [(start + timedelta(seconds=t), Place(SAMPLE_ORIGIN[0], SAMPLE_ORIGIN[1] + 10.0 * t / metres_per_degree))
              for t in range(int(seconds) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        clip = synthetic_clip(Path(tmp) / "sample_drive.mp4", (384, 192), frames=int(seconds * fps), fps=fps)
        video = clip.read_bytes()
    return Upload("sample_drive.mp4", video), Upload("sample_drive.gpx", gpx_text(points).encode())


def read_locations(name: str, data: bytes):
    """An uploaded places CSV (`engine.geo.read_locations`)."""
    from engine.geo import parse_locations

    return parse_locations(data.decode("utf-8-sig", errors="replace"), name)


def read_gpx(name: str, data: bytes):
    """An uploaded GPX track (`engine.geo.read_gpx`)."""
    from engine.geo import parse_gpx

    return parse_gpx(data.decode("utf-8-sig", errors="replace"), name)


def read_districts(name: str, data: bytes):
    """An uploaded GeoJSON of district polygons (`engine.geo.read_districts`)."""
    from engine.geo import parse_districts

    return parse_districts(data.decode("utf-8-sig", errors="replace"), name)

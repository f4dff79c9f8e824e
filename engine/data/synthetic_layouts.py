"""The synthetic street scenes (`synthetic.scenes`) written in the other datasets' layouts, with the
same images and labels as the Cityscapes-layout copy of the same seed and size:

    acdc      the scenes under each condition: fog, night, rain, snow (image-space shifts; labels unchanged)
    bdd100k   JPEG images (quality 90, as the real dataset), trainId masks
    kitti     train and val scenes together in training/ (KITTI has one labelled split), label ids
    folder    images/{split}/ (JPEG) and labels/{split}/ (label ids), matched by name

Each writer leaves README.txt last (the marker `base.dataset_name` reads); deterministic per seed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from engine.classes import IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID, NAME_TO_LABEL_ID
import engine.data.acdc as acdc
import engine.data.bdd100k as bdd100k
import engine.data.folder as folder
import engine.data.kitti as kitti
from engine.data.base import SYNTH_MARKER
from engine.data.synthetic import (DEFAULT_SCENES, SPLITS, _write_png, ensure_synthetic_dataset, scene_size, scenes,
                                   write_synthetic_dataset)

JPEG_FLAGS = [cv2.IMWRITE_JPEG_QUALITY, 90]
LAYOUT_FOLDERS = {"acdc": ("rgb_anon", "gt"), "bdd100k": ("images", "labels"), "kitti": ("training",),
                  "folder": ("images", "labels")}  # removed before a rewrite of an earlier synthetic copy
_ID = NAME_TO_LABEL_ID
GROUND = [_ID[n] for n in ("road", "sidewalk", "parking", "rail track", "terrain", "ground")]


# --- the conditions: image-space shifts of a scene, from its label-id map ------------------------------

def _horizon(lab: np.ndarray) -> int:
    """The row where the ground ends (the vanishing line of the flat street)."""
    rows = np.flatnonzero(np.isin(lab, GROUND).any(axis=1))
    return int(rows[0]) if rows.size else int(lab.shape[0] * 0.42)


def depth(lab: np.ndarray) -> np.ndarray:
    """Relative distance per pixel (1 at the bottom row): ground rows by their height above the horizon,
    everything standing on the ground by the ground row below it, the sky and the skyline far away."""
    h = lab.shape[0]
    hz = _horizon(lab)
    rows = np.arange(h)[:, None]
    ground_row = np.where(np.isin(lab, GROUND), rows, h)
    contact = np.minimum.accumulate(ground_row[::-1], axis=0)[::-1]  # nearest ground row at or below
    contact = np.where(contact >= h, hz, contact)
    d = (h - hz) / np.maximum(contact - hz, 1.0)
    return np.where(lab == _ID["sky"], d.max() * 2, d).astype(np.float32)


def fog(rgb: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Haze toward grey, thicker with distance (Koschmieder: t = exp(-beta d)); the sky and far rows most."""
    t = np.exp(-rng.uniform(0.3, 0.4) * depth(lab))[..., None]
    air = np.array([200, 203, 207], np.float32)
    out = rgb.astype(np.float32) * t + air * (1 - t)
    return np.clip(cv2.GaussianBlur(out, (0, 0), 0.6), 0, 255).astype(np.uint8)


def _lights(lab: np.ndarray) -> list[tuple[int, int, tuple[float, float, float]]]:
    """(x, y, colour) of the lights at night: traffic lights, a lamp atop each pole, and the head/tail
    lights of vehicles, found from the label map."""
    found = []
    for name, colour in (("traffic light", (1.0, 0.6, 0.3)), ("pole", (1.0, 0.85, 0.55)), ("car", (1.0, 0.9, 0.7)),
                         ("truck", (1.0, 0.9, 0.7)), ("bus", (1.0, 0.9, 0.7))):
        n, _, stats, _ = cv2.connectedComponentsWithStats((lab == _ID[name]).astype(np.uint8), connectivity=8)
        for x, y, w, h, area in stats[1:]:
            if area < 3:
                continue
            if name == "traffic light":
                found.append((x + w // 2, y + h // 2, colour))
            elif name == "pole":
                found.append((x + w // 2, y, colour))
            else:
                found += [(x + w // 6, y + 2 * h // 3, colour), (x + w - 1 - w // 6, y + 2 * h // 3, colour)]
    return found


def night(rgb: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark and blue-ish (gamma, gain, tint), with glowing lights where the label map has lamps,
    traffic lights and vehicles; a little sensor noise."""
    img = (rgb.astype(np.float32) / 255) ** 1.8 * rng.uniform(0.3, 0.4) * np.array([0.7, 0.82, 1.15], np.float32)
    h, w = lab.shape
    glow = np.zeros_like(img)
    radius = max(1, round(min(h, w) / 80))
    for x, y, colour in _lights(lab):
        cv2.circle(glow, (int(x), int(y)), radius, colour, -1)
    img += 0.8 * glow + 1.6 * cv2.GaussianBlur(glow, (0, 0), max(1.5, 3 * radius))
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def rain(rgb: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darker and greyer, slightly blurred, streaks of rain, and a wet road that mirrors what stands on it."""
    img = rgb.astype(np.float32)
    img = 0.72 * (0.7 * img + 0.3 * img.mean(axis=2, keepdims=True))
    h, w = lab.shape
    hz = _horizon(lab)
    mirror = img[np.clip(2 * hz - np.arange(h), 0, h - 1)]  # each row reflected about the horizon
    wet = np.isin(lab, [_ID["road"], _ID["parking"], _ID["sidewalk"]])[..., None]
    img = np.where(wet, 0.75 * img + 0.3 * mirror, img)
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    streaks = np.zeros((h, w), np.float32)
    length, slant = max(3, h // 12), rng.uniform(-0.25, 0.25)
    for _ in range(max(20, h * w // 150)):
        x, y = int(rng.integers(0, w)), int(rng.integers(-length, h))
        cv2.line(streaks, (x, y), (int(x + slant * length), y + length), 1.0, 1, cv2.LINE_AA)
    img += 70 * cv2.GaussianBlur(streaks, (0, 0), 0.5)[..., None] * rng.uniform(0.6, 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def snow(rgb: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Snow on the ground and the terrain (patchy on the road: tyre tracks), a flat, cold light, and flakes."""
    img = rgb.astype(np.float32) * 0.8 + np.array([38, 42, 50], np.float32)
    h, w = lab.shape
    patches = cv2.resize(rng.uniform(0, 1, (max(2, h // 8), max(2, w // 8))).astype(np.float32), (w, h))
    cover = np.select([np.isin(lab, [_ID["terrain"], _ID["sidewalk"], _ID["ground"], _ID["parking"]]),
                       lab == _ID["road"], lab == _ID["vegetation"]],
                      [0.85, 0.35 + 0.4 * patches, 0.3 * patches], 0.0).astype(np.float32)[..., None]
    img = img * (1 - cover) + np.array([236, 239, 245], np.float32) * cover
    flakes = np.zeros((h, w), np.float32)
    for _ in range(max(20, h * w // 120)):
        cv2.circle(flakes, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(0, 2)), 1.0, -1)
    a = cv2.GaussianBlur(flakes, (0, 0), 0.6)[..., None] * 0.9
    return np.clip(img * (1 - a) + 250 * a, 0, 255).astype(np.uint8)


CONDITION_EFFECTS = {"fog": fog, "night": night, "rain": rain, "snow": snow}
assert tuple(CONDITION_EFFECTS) == acdc.CONDITIONS


# --- the writers ---------------------------------------------------------------------------------------

def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), JPEG_FLAGS):
        raise OSError(f"could not write {path}")


def _write(path: Path, array: np.ndarray, jpeg: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (_write_jpeg if jpeg else _write_png)(path, array)


def _acdc(out: Path, seed: int, split_idx: int, i: int, split: str, city: str, stem: str, rgb, lab) -> None:
    frame = f"{city}_frame_{stem.split('_')[1]}"
    for c, condition in enumerate(acdc.CONDITIONS):
        shifted = CONDITION_EFFECTS[condition](rgb, lab, np.random.default_rng([seed, 100 + c, split_idx, i]))
        _write(out / "rgb_anon" / condition / split / city / f"{frame}{acdc.IMAGE_SUFFIX}", shifted)
        _write(out / "gt" / condition / split / city / f"{frame}{acdc.LABEL_ID_SUFFIX}", lab)


def write_layout(kind: str, out, train: int = 24, val: int = 8, size: tuple[int, int] = (512, 256),
                 seed: int = 0) -> dict[str, int]:
    """Write the synthetic scenes under `out` in the layout of `kind` (datasets.DATASETS); returns
    {"train": n, "val": n}. README.txt is removed first and written last."""
    if kind == "cityscapes":
        return write_synthetic_dataset(out, train, val, size, seed)
    if kind not in LAYOUT_FOLDERS:
        raise ValueError(f"unknown layout {kind!r}; choose one of cityscapes, {', '.join(LAYOUT_FOLDERS)}")
    width, height = scene_size(train, val, size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    readme = out / "README.txt"
    if readme.is_file() and SYNTH_MARKER in readme.read_text(errors="ignore"):  # an earlier synthetic copy
        for name in LAYOUT_FOLDERS[kind]:
            shutil.rmtree(out / name, ignore_errors=True)
    readme.unlink(missing_ok=True)
    index = {split: 0 for split in SPLITS}
    for split, city, stem, rgb, lab, _ in scenes(train, val, size, seed):
        i, split_idx = index[split], SPLITS.index(split)
        index[split] += 1
        if kind == "acdc":
            _acdc(out, seed, split_idx, i, split, city, stem, rgb, lab)
        elif kind == "bdd100k":
            image_dir, label_dir = bdd100k.folders(out, split)
            _write(image_dir / f"{stem}.jpg", rgb, jpeg=True)
            _write(label_dir / f"{stem}{bdd100k.LABEL_SUFFIX}", LABEL_ID_TO_TRAIN_ID[lab])
        elif kind == "kitti":
            name = f"{split_idx * train + i:06d}_10{kitti.SUFFIX}"  # train scenes first, then val
            _write(out / kitti.SPLIT / "image_2" / name, rgb)
            _write(out / kitti.SPLIT / "semantic" / name, lab)
        else:
            _write(out / "images" / split / f"{stem}.jpg", rgb, jpeg=True)
            _write(out / "labels" / split / f"{stem}{folder.LABEL_SUFFIX}", lab)
    labels = {"acdc": f"gt/<condition>/ *{acdc.LABEL_ID_SUFFIX} (Cityscapes label ids; the same in every condition)",
              "bdd100k": f"labels/sem_seg/masks/ *{bdd100k.LABEL_SUFFIX} (trainIds 0-18, {IGNORE_INDEX} = ignore)",
              "kitti": "training/semantic/ *.png (Cityscapes label ids); train and val scenes both in training/",
              "folder": "labels/<split>/ <name>.png (Cityscapes label ids: --label-format labelIds)"}[kind]
    tmp = out / "README.txt.tmp"
    tmp.write_text(
        f"Synthetic street scenes in the {kind} layout (NOT real {kind} data).\n"
        f"Generated by `{SYNTH_MARKER} --layout {kind}` (engine/data/synthetic_layouts.py).\n"
        f"seed: {seed}\nsize: {width}x{height} (width x height)\ntrain: {train} images\nval: {val} images\n"
        + (f"conditions: {', '.join(acdc.CONDITIONS)} (each an image-space shift of the same scenes)\n"
           if kind == "acdc" else "")
        + f"Labels: {labels}\n"
    )
    os.replace(tmp, readme)
    return {"train": int(train), "val": int(val)}


def ensure_layout(kind: str, root, **scenes_kw) -> bool:
    """Write the built-in synthetic scenes in `kind`'s layout at `root` unless already complete (README.txt
    is written last); returns True when it wrote them."""
    if kind == "cityscapes":
        return ensure_synthetic_dataset(root, **scenes_kw)
    if (Path(root) / "README.txt").is_file():
        return False
    print(f"writing the built-in synthetic street scenes ({kind} layout) to {root} ...", flush=True)
    write_layout(kind, root, **{**DEFAULT_SCENES, **scenes_kw})
    return True

"""Class coverage of predicted scenes: how much of each image is road, vegetation, people...

One tidy row per (source, model, class): columns `CSV_COLUMNS`; shares sum to 1 per image.
The dashboard's Coverage page and the command line both write these rows.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import numpy as np

from engine.classes import CATEGORIES, CLASS_CATEGORIES, CLASS_NAMES, NUM_CLASSES

CSV_COLUMNS = ("source", "model", "class_id", "class_name", "category", "pixels", "share")
SUMMARY_COLUMNS = ("source", "model", "pixels", "top_class", "top_share", *(f"share_{c}" for c in CATEGORIES))


def class_pixels(labels: np.ndarray) -> np.ndarray:
    """int64[19]: pixels of each trainId (255 and anything else out of range is not counted)."""
    flat = labels.ravel()
    return np.bincount(flat[flat < NUM_CLASSES], minlength=NUM_CLASSES).astype(np.int64)


def _rows(source: str, model: str, counts: np.ndarray) -> list[dict]:
    total = int(counts.sum())
    return [{"source": source, "model": model, "class_id": c, "class_name": CLASS_NAMES[c],
             "category": CLASS_CATEGORIES[c], "pixels": int(counts[c]),
             "share": float(counts[c] / total) if total else 0.0} for c in range(NUM_CLASSES)]


def coverage_rows(source: str, model: str, labels: np.ndarray) -> list[dict]:
    """One row per class for one predicted label map."""
    return _rows(source, model, class_pixels(labels))


def aggregate(rows: Iterable[dict], source: str = "all images") -> list[dict]:
    """Coverage over all images together, per model: pixels summed per class, shares of the total
    (so a large image weighs more than a small one). Same columns as `coverage_rows`."""
    pixels: dict[str, np.ndarray] = {}
    for r in rows:
        pixels.setdefault(r["model"], np.zeros(NUM_CLASSES, np.int64))[r["class_id"]] += r["pixels"]
    return [row for model, counts in pixels.items() for row in _rows(source, model, counts)]


def summary(rows: Iterable[dict]) -> list[dict]:
    """One row per (source, model): total pixels, the dominant class and each category's share."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["model"]), []).append(r)
    out = []
    for (source, model), rs in groups.items():
        top = max(rs, key=lambda r: r["pixels"])
        cats = {f"share_{c}": sum(r["share"] for r in rs if r["category"] == c) for c in CATEGORIES}
        out.append({"source": source, "model": model, "pixels": sum(r["pixels"] for r in rs),
                    "top_class": top["class_name"], "top_share": top["share"], **cats})
    return out


def to_csv(rows: Iterable[dict], columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()

"""Class coverage of predicted scenes and the planners' street-level indicators computed from it.

One tidy row per (source, model, class): columns `CSV_COLUMNS`; shares sum to 1 per image.
The dashboard's Coverage page and the command line both write these rows.

Indicators (`INDICATORS`, the one place they are defined) are shares of an image's labelled pixels:
- Green View Index: vegetation (trees, hedges, bushes), the segmentation form of the Green View
  Index of MIT Senseable City Lab's Treepedia (Li et al., "Assessing street-level urban greenery
  using Google Street View and a modified green view index", Urban Forestry & Urban Greening 14, 2015;
  Cai et al., "Treepedia 2.0", 2018). Terrain (grass, soil) counts only when chosen (`green_terrain`).
- sky view: sky (the street-level sky view factor as a share of the view); road; sidewalk; building;
  vehicles (car, truck, bus, train, motorcycle, bicycle); people (person, rider).
Over several images (a district, a grid cell, a route) an indicator is the mean of the images'
values: each place weighs the same, as Treepedia averages its sample points.

Every export carries its `Provenance`: the model, the evaluation that stands behind its numbers
(dataset, split, date) and that model's IoU on each class an indicator uses; numbers from a model
evaluated only on the synthetic scenes, or never evaluated, are marked not validated.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from engine.classes import CATEGORIES, CLASS_CATEGORIES, CLASS_NAMES, NUM_CLASSES
from engine.data.base import is_synthetic


@dataclass(frozen=True)
class Indicator:
    key: str                  # the column / GeoJSON property
    label: str
    classes: tuple[str, ...]  # Cityscapes class names whose pixels count
    meaning: str


INDICATORS: tuple[Indicator, ...] = (
    Indicator("green_view_index", "Green View Index", ("vegetation",),
              "share of the view that is vegetation (Treepedia's Green View Index); with terrain when chosen"),
    Indicator("sky_view", "Sky view", ("sky",), "share of the view that is open sky"),
    Indicator("road", "Road", ("road",), "share of the view that is road"),
    Indicator("sidewalk", "Sidewalk", ("sidewalk",), "share of the view that is sidewalk"),
    Indicator("building", "Building", ("building",), "share of the view that is building"),
    Indicator("vehicles", "Vehicles", ("car", "truck", "bus", "train", "motorcycle", "bicycle"),
              "share of the view that is vehicles: car, truck, bus, train, motorcycle, bicycle"),
    Indicator("people", "People", ("person", "rider"), "share of the view that is people: person, rider"),
)
INDICATOR_KEYS = tuple(i.key for i in INDICATORS)
INDICATOR_LABELS = {i.key: i.label for i in INDICATORS}
GREEN_TERRAIN_CLASS = "terrain"  # grass and soil: in the Green View Index only when chosen


def share_key(class_name: str) -> str:
    """The column / property of a class's share: 'traffic light' -> 'share_traffic_light'."""
    return "share_" + class_name.replace(" ", "_")


# What stands behind a row (`Provenance.stamp`): the evaluation, whether it is on real streets, and
# (tidy rows) the model's IoU on the row's class in that evaluation.
PROVENANCE_COLUMNS = ("evaluation", "validated")
CSV_COLUMNS = ("source", "model", "lat", "lon", "class_id", "class_name", "category", "pixels", "share",
               *PROVENANCE_COLUMNS, "class_iou")
SUMMARY_COLUMNS = ("source", "model", "pixels", "top_class", "top_share", *(f"share_{c}" for c in CATEGORIES),
                   *PROVENANCE_COLUMNS)
# One row per image for places: where it was taken and every indicator and class share.
PLACE_COLUMNS = ("source", "model", "located", "lat", "lon", "direction", "area", "time_s", "pixels",
                 *INDICATOR_KEYS, *(share_key(c) for c in CLASS_NAMES), *PROVENANCE_COLUMNS)


def class_pixels(labels: np.ndarray) -> np.ndarray:
    """int64[19]: pixels of each trainId (255 and anything else out of range is not counted)."""
    flat = labels.ravel()
    return np.bincount(flat[flat < NUM_CLASSES], minlength=NUM_CLASSES).astype(np.int64)


def class_rows(source: str, model: str, counts: np.ndarray, lat: float | None = None,
               lon: float | None = None) -> list[dict]:
    """One row per class from an image's pixels per class (`class_pixels`)."""
    total = int(counts.sum())
    return [{"source": source, "model": model, "lat": lat, "lon": lon, "class_id": c, "class_name": CLASS_NAMES[c],
             "category": CLASS_CATEGORIES[c], "pixels": int(counts[c]),
             "share": float(counts[c] / total) if total else 0.0} for c in range(NUM_CLASSES)]


def coverage_rows(source: str, model: str, labels: np.ndarray, lat: float | None = None,
                  lon: float | None = None) -> list[dict]:
    """One row per class for one predicted label map (taken at lat, lon when known)."""
    return class_rows(source, model, class_pixels(labels), lat, lon)


def indicators(counts: np.ndarray, green_terrain: bool = False) -> dict[str, float | None]:
    """Every indicator of one image from its pixels per class (`class_pixels`); None for an image
    with no labelled pixel."""
    total = int(counts.sum())
    out = {}
    for ind in INDICATORS:
        names = ind.classes + ((GREEN_TERRAIN_CLASS,) if green_terrain and ind.key == "green_view_index" else ())
        out[ind.key] = float(sum(counts[CLASS_NAMES.index(n)] for n in names) / total) if total else None
    return out


def place_row(source: str, model: str, counts: np.ndarray, *, green_terrain: bool = False, lat: float | None = None,
              lon: float | None = None, direction: float | None = None, area: str | None = None,
              time_s: float | None = None) -> dict:
    """One image (or video frame: `time_s` into the video) as `PLACE_COLUMNS`: where, and every
    indicator and class share."""
    total = int(counts.sum())
    return {"source": source, "model": model, "located": lat is not None and lon is not None, "lat": lat, "lon": lon,
            "direction": direction, "area": area, "time_s": time_s, "pixels": total,
            **indicators(counts, green_terrain),
            **{share_key(c): float(counts[k] / total) if total else None for k, c in enumerate(CLASS_NAMES)}}


def mean_indicators(rows: Iterable[dict]) -> dict[str, float | None]:
    """Each indicator's mean over images (each image weighs the same), and `images`: how many."""
    rows = list(rows)
    out: dict[str, float | None] = {"images": len(rows)}
    for key in INDICATOR_KEYS:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def by_area(rows: Iterable[dict]) -> dict[str, dict]:
    """area name -> `mean_indicators` of the rows placed in it (rows with no area left out), in order
    of first appearance."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("area") is not None:
            groups.setdefault(r["area"], []).append(r)
    return {name: mean_indicators(rs) for name, rs in groups.items()}


@dataclass(frozen=True)
class Provenance:
    """What stands behind a set of shares: the model, its evaluation and its IoU on the classes used."""
    model: str
    evaluation: dict | None   # id, dataset, condition, split, date (ISO), miou, images; None: never evaluated
    class_iou: dict[str, float | None] = field(default_factory=dict)  # class name -> IoU in that evaluation
    green_terrain: bool = False

    @property
    def validated(self) -> bool:
        return self.evaluation is not None and not is_synthetic(self.evaluation["dataset"])

    @property
    def warning(self) -> str | None:
        if self.evaluation is None:
            return (f"Not validated: {self.model} has no evaluation in the results store, so how far its shares "
                    "can be trusted is unknown.")
        if not self.validated:
            return (f"Not validated: {self.model} was evaluated only on the synthetic street scenes "
                    f"({self.evaluation['dataset']}), not on real streets; its shares are illustrations, not measurements.")
        return None

    def as_dict(self) -> dict:
        return {"model": self.model, "evaluation": self.evaluation, "validated": self.validated,
                "warning": self.warning, "green_view_index_counts_terrain": self.green_terrain,
                "class_iou": self.class_iou,
                "indicators": {i.key: {"label": i.label, "meaning": i.meaning,
                                       "class_iou": {c: self.class_iou.get(c) for c in self.indicator_classes(i)}}
                               for i in INDICATORS}}

    def indicator_classes(self, ind: Indicator) -> tuple[str, ...]:
        return ind.classes + ((GREEN_TERRAIN_CLASS,) if self.green_terrain and ind.key == "green_view_index" else ())

    @property
    def evaluation_label(self) -> str:
        """'cityscapes val, 2026-11-30 (evaluation 12)', or 'none'."""
        if self.evaluation is None:
            return "none"
        e = self.evaluation
        where = e["dataset"] + (f" ({e['condition']})" if e.get("condition") else "")
        return f"{where} {e['split']}, {e['date'][:10]} (evaluation {e['id']})"

    def stamp(self, rows: Iterable[dict]) -> list[dict]:
        """The rows with `PROVENANCE_COLUMNS` added, and `class_iou` on tidy rows (those with a class_name):
        the model's IoU on that class in the evaluation (None when not evaluated)."""
        out = []
        for r in rows:
            extra = {"evaluation": self.evaluation_label, "validated": self.validated}
            if "class_name" in r:
                extra["class_iou"] = self.class_iou.get(r["class_name"])
            out.append(r | extra)
        return out

    def line(self) -> str:
        """One line for a page or a printout."""
        if self.evaluation is None:
            return f"{self.model}: not evaluated"
        miou = self.evaluation.get("miou")
        return (f"{self.model}: evaluated on {self.evaluation_label}, {self.evaluation['images']} images"
                + (f", mIoU {miou:.3f}" if miou is not None else ""))


def provenance(model: str, evaluations: Iterable[dict], green_terrain: bool = False) -> Provenance:
    """The evaluation that stands behind `model`'s shares, from the store's evaluations of its
    checkpoint (`Store.evaluations`): one on real streets before one on synthetic scenes, the clean
    condition before corrupted ones or adverse weather, then the latest."""
    evs = list(evaluations)
    if not evs:
        return Provenance(model, None, {}, green_terrain)
    ev = max(evs, key=lambda e: (not is_synthetic(e["dataset"]), not e.get("condition"), e["id"]))
    created = ev["created_at"]
    summary = {"id": ev["id"], "dataset": ev["dataset"], "condition": ev.get("condition") or "", "split": ev["split"],
               "date": created.isoformat() if hasattr(created, "isoformat") else str(created),
               "miou": ev.get("miou"), "images": ev.get("num_images")}
    iou = ev.get("per_class_iou") or {}
    return Provenance(model, summary, {c: iou.get(c) for c in CLASS_NAMES}, green_terrain)


def aggregate(rows: Iterable[dict], source: str = "all images") -> list[dict]:
    """Coverage over all images together, per model: pixels summed per class, shares of the total
    (so a large image weighs more than a small one). Same columns as `coverage_rows`."""
    pixels: dict[str, np.ndarray] = {}
    for r in rows:
        pixels.setdefault(r["model"], np.zeros(NUM_CLASSES, np.int64))[r["class_id"]] += r["pixels"]
    return [row for model, counts in pixels.items() for row in class_rows(source, model, counts)]


def summary(rows: Iterable[dict]) -> list[dict]:
    """One row per (source, model): total pixels, the dominant class, each category's share and, for
    rows stamped with a `Provenance`, what stands behind them."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["model"]), []).append(r)
    out = []
    for (source, model), rs in groups.items():
        top = max(rs, key=lambda r: r["pixels"])
        cats = {f"share_{c}": sum(r["share"] for r in rs if r["category"] == c) for c in CATEGORIES}
        out.append({"source": source, "model": model, "pixels": sum(r["pixels"] for r in rs),
                    "top_class": top["class_name"], "top_share": top["share"], **cats,
                    **{c: rs[0].get(c) for c in PROVENANCE_COLUMNS}})  # stamped rows: their provenance
    return out


def to_csv(rows: Iterable[dict], columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()

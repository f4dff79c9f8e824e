"""Where a model fails, image by image: the queries of `python -m engine errors` and the Drill-down
page, on the per-image rows an evaluation records (`engine.store`: `image_results`).

Plain functions on the store's dicts; SQL stays in the store. A measure (`--by`) is one of
`miou` (the image's mIoU), `boundary` (its mIoU within the ground truth's boundary band) or
`class:NAME` (that class's IoU in the image; images where the class is in neither the ground truth
nor the prediction have none and are left out).
"""
from __future__ import annotations

import numpy as np

from engine.classes import CLASS_NAMES, NUM_CLASSES
from engine.errors import UsageError
from engine.metrics import iou_counts, ious, mean_iou, named

MEASURES = ("miou", "boundary", "class:NAME")


def check_measure(by: str) -> str:
    """`by` as given, or UsageError naming the measures (and the classes, for an unknown class)."""
    if by in ("miou", "boundary"):
        return by
    kind, _, name = by.partition(":")
    if kind == "class" and name in CLASS_NAMES:
        return by
    if kind == "class":
        raise UsageError(f"unknown class {name!r} in --by {by}; one of: {', '.join(CLASS_NAMES)}")
    raise UsageError(f"--by {by!r}: use miou, boundary or class:NAME (e.g. class:pole)")


def measure_label(by: str) -> str:
    return {"miou": "mIoU", "boundary": "boundary mIoU"}.get(by) or f"{by.partition(':')[2]} IoU"


def per_class_iou(row: dict, boundary: bool = False) -> dict[str, float | None]:
    """class name -> IoU in this image (None where the class is in neither ground truth nor prediction)."""
    prefix = "boundary_" if boundary else ""
    return named(ious(row[f"{prefix}intersection"], row[f"{prefix}union"]))


def measure(row: dict, by: str) -> float | None:
    """The image's value of the measure `by` (None when it has none)."""
    if by == "miou":
        return row["miou"]
    if by == "boundary":
        return row["boundary_miou"]
    c = CLASS_NAMES.index(by.partition(":")[2])
    return None if not row["union"][c] else row["intersection"][c] / row["union"][c]


def image_summary(row: dict) -> dict:
    """What `errors --json` prints for one image of one evaluation."""
    return {"image": row["image"], "folder": row["folder"], "width": row["width"], "height": row["height"],
            "miou": row["miou"], "pixel_accuracy": row["pixel_accuracy"], "boundary_miou": row["boundary_miou"],
            "per_class_iou": per_class_iou(row), "per_class_boundary_iou": per_class_iou(row, boundary=True)}


def worst(rows: list[dict], by: str = "miou", top: int | None = 10) -> list[dict]:
    """The `top` images with the lowest value of `by` (ties: by image name), each row with `value`."""
    scored = [r | {"value": v} for r in rows if (v := measure(r, by)) is not None]
    return sorted(scored, key=lambda r: (r["value"], r["image"]))[:top]


def versus(rows_a: list[dict], rows_b: list[dict], by: str = "miou", top: int | None = 10) -> list[dict]:
    """The images both evaluations scored, where B's `by` exceeds A's the most first (swap the two
    for where A beats B): dicts with `image`, `a` and `b` (the rows), `value_a`, `value_b` and
    `delta` = value_b - value_a. Images where either has no value of `by` are left out."""
    by_image = {r["image"]: r for r in rows_b}
    pairs = []
    for a in rows_a:
        b = by_image.get(a["image"])
        if b is None or (va := measure(a, by)) is None or (vb := measure(b, by)) is None:
            continue
        pairs.append({"image": a["image"], "a": a, "b": b, "value_a": va, "value_b": vb, "delta": vb - va})
    return sorted(pairs, key=lambda p: (-p["delta"], p["image"]))[:top]


def cell_pixels(row: dict, gt: int, pred: int) -> int:
    """Pixels of class `gt` predicted as `pred` in this image."""
    return next((n for g, p, n in row["confusion"] if g == gt and p == pred), 0)


def confusion_images(rows: list[dict], gt: int, pred: int, top: int | None = 10) -> list[dict]:
    """The images where ground-truth class `gt` is predicted as `pred` on the most pixels (only
    those where it happens), each row with `pixels` and `share` (of that class's ground-truth pixels)."""
    found = []
    for r in rows:
        n = cell_pixels(r, gt, pred)
        if n:
            total = sum(c for g, _, c in r["confusion"] if g == gt)
            found.append(r | {"pixels": n, "share": n / total})
    return sorted(found, key=lambda r: (-r["pixels"], r["image"]))[:top]


def confusion_matrix(rows: list[dict]) -> np.ndarray:
    """The 19x19 counts summed over per-image rows (equal to their evaluation's `confusion`)."""
    mat = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for r in rows:
        for g, p, n in r["confusion"]:
            mat[g, p] += n
    return mat


def row_normalised(mat) -> np.ndarray:
    """Each ground-truth row as shares of that class's pixels (rows of an absent class stay 0)."""
    mat = np.asarray(mat, np.float64)
    total = mat.sum(1, keepdims=True)
    return np.divide(mat, total, out=np.zeros_like(mat), where=total > 0)


def _parts(evaluation: dict) -> dict[str, np.ndarray] | None:
    """An evaluation's confusion matrices: all pixels, within the boundary band, and the interior (the rest)."""
    if evaluation.get("confusion") is None or evaluation.get("boundary_confusion") is None:
        return None
    full, band = np.asarray(evaluation["confusion"], np.int64), np.asarray(evaluation["boundary_confusion"], np.int64)
    return {"": full, "boundary_": band, "interior_": full - band}


def interior_boundary(evaluation: dict) -> list[dict] | None:
    """Per class: `iou` over all pixels, `boundary_iou` within the ground truth's boundary band and
    `interior_iou` in the rest, from an evaluation's `confusion` and `boundary_confusion` (None when
    it has none). The band and the interior partition the pixels, so their counts add up to the whole."""
    parts = _parts(evaluation)
    if parts is None:
        return None
    values = {f"{k}iou": ious(*iou_counts(mat)) for k, mat in parts.items()}
    return [{"class_id": c, "class_name": name, **{k: None if np.isnan(v[c]) else float(v[c]) for k, v in values.items()}}
            for c, name in enumerate(CLASS_NAMES)]


def interior_boundary_means(evaluation: dict) -> dict[str, float] | None:
    """`miou`, `boundary_miou` and `interior_miou` of an evaluation (None when it has no boundary counts)."""
    parts = _parts(evaluation)
    return None if parts is None else {f"{k}miou": mean_iou(*iou_counts(mat)) for k, mat in parts.items()}


def pick_evaluation(evaluations: list[dict], variant: str, *, dataset: str | None = None, condition: str = "",
                    split: str = "val", trained_on: str | None = None) -> dict | None:
    """The latest evaluation of `variant` with per-image rows on `dataset` (its name, e.g.
    'cityscapes', 'synthetic', 'acdc', or the reader's kind; default: `trained_on`, the dataset the
    model was trained on, else any), `condition` and `split`."""
    want = dataset or trained_on
    found = [e for e in evaluations if e["variant"] == variant and e["images"] and e["split"] == split
             and (e["condition"] or "") == (condition or "")
             and (want is None or want in (e["dataset"], e.get("data_kind")))]
    return found[-1] if found else None


class NoImageResults(UsageError):
    """No evaluation with per-image rows matches what was asked."""


def evaluation_of(store, variant: str, *, dataset: str | None = None, condition: str = "", split: str = "val") -> dict:
    """`pick_evaluation` from the store, or NoImageResults saying which command records one."""
    runs = [r for r in store.runs() if r["variant"] == variant]
    ev = pick_evaluation(store.evaluations(), variant, dataset=dataset, condition=condition, split=split,
                         trained_on=runs[-1]["dataset"] if runs else None)
    if ev is None:
        where = dataset or (runs[-1]["dataset"] if runs else None)
        where = f"on {where}{f'/{condition}' if condition else ''} {split} " if where else ""
        raise NoImageResults(f"no evaluation of {variant} {where}with per-image results in the store; "
                             f"record one with `python -m engine evaluate --variant {variant}"
                             + (f" --dataset {dataset}" if dataset else "") + (f" --condition {condition}" if condition else "")
                             + (f" --split {split}" if split != "val" else "") + "`")
    return ev


def find_errors(store, variant: str, *, vs: str | None = None, dataset: str | None = None, condition: str = "",
                split: str = "val", by: str = "miou", top: int | None = 10) -> dict:
    """`python -m engine errors`: the `top` worst images of `variant` by `by`, or (with `vs`) the
    images where `vs` beats `variant` the most. Returns {"a": evaluation, "b": evaluation or None,
    "by": by, "images": [one dict per image: image_summary of A (+ `value`; with `vs`: `vs` holding
    B's image_summary, `value_vs` and `delta`)]}."""
    check_measure(by)
    ev_a = evaluation_of(store, variant, dataset=dataset, condition=condition, split=split)
    rows_a = store.image_results(ev_a["id"])
    if vs is None:
        return {"a": ev_a, "b": None, "by": by,
                "images": [image_summary(r) | {"value": r["value"]} for r in worst(rows_a, by, top)]}
    ev_b = evaluation_of(store, vs, dataset=ev_a["dataset"], condition=condition, split=split)
    pairs = versus(rows_a, store.image_results(ev_b["id"]), by, top)
    return {"a": ev_a, "b": ev_b, "by": by,
            "images": [image_summary(p["a"]) | {"value": p["value_a"], "vs": image_summary(p["b"]),
                                                 "value_vs": p["value_b"], "delta": p["delta"]} for p in pairs]}

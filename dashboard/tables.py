"""Pure pandas views of the store's rows, shaped for display. Every number comes straight from
`engine.store` (leaderboard, class_iou_table, epochs; the recipe's columns from
`engine.store.recipe_columns`): nothing is recomputed here, only renamed, unit-converted (params in
millions, seconds in minutes) and filtered."""
from __future__ import annotations

import pandas as pd

from engine.classes import CLASS_NAMES

# The axes a user can put mIoU against (lower is better on each): column -> label.
EFFICIENCY_AXES = {
    "params_m": "Parameters (M)",
    "size_mb": "Checkpoint size (MB)",
    "gflops": "GFLOPs per image",
    "latency_ms": "Latency (ms per image)",
    "train_minutes": "Training time (min)",
}

LEADERBOARD_COLUMNS = {  # frame column -> heading, in the order the Leaderboard page shows them
    "variant": "Variant", "status": "Status", "miou": "mIoU", "pixel_accuracy": "Pixel acc.",
    "params_m": "Params (M)", "size_mb": "Size (MB)", "gflops": "GFLOPs", "latency_ms": "Latency (ms)",
    "train_minutes": "Train time (min)", "dataset": "Dataset", "arch": "Architecture", "backbone": "Backbone",
    "optimizer": "Optimizer", "lr": "LR", "weight_decay": "Weight decay", "dropout": "Dropout",
    "batch_size": "Batch", "train_size": "Train size", "epochs_label": "Epochs", "profile": "Profile",
    "images_per_second": "Train img/s", "latency_setup": "Latency measured on", "started_at": "Started",
    "error": "Error", "uid": "Run",
}


def leaderboard_frame(rows: list[dict]) -> pd.DataFrame:
    """`Store.leaderboard()` rows -> one display row per run (order kept: best mIoU first)."""
    out = []
    for r in rows:
        latency_setup = None
        if r.get("latency_ms") is not None:
            parts = [r.get("latency_device"), r.get("latency_resolution"),
                     f"{r['latency_threads']} threads" if r.get("latency_threads") else None, r.get("latency_precision")]
            latency_setup = ", ".join(str(p) for p in parts if p)
        out.append({
            "run_id": r["run_id"], "uid": r["uid"][:8], "variant": r["variant"], "status": r["status"],
            "dataset": r["dataset"], "arch": r["arch"], "backbone": r["backbone"], "optimizer": r.get("optimizer"),
            "lr": r.get("lr"), "weight_decay": r.get("weight_decay"), "dropout": r.get("dropout"),
            "batch_size": r.get("batch_size"), "train_size": r.get("train_size"),
            "epochs_label": f"{r['epochs_done']}/{r['epochs']}" if r.get("epochs") else str(r["epochs_done"]),
            "profile": r.get("profile"), "miou": r.get("miou"), "pixel_accuracy": r.get("pixel_accuracy"),
            "params_m": r["params"] / 1e6 if r.get("params") is not None else None,
            "size_mb": r.get("size_mb"), "gflops": r.get("gflops"), "latency_ms": r.get("latency_ms"),
            "latency_setup": latency_setup,
            "train_minutes": r["train_seconds"] / 60 if r.get("train_seconds") is not None else None,
            "images_per_second": r.get("images_per_second"), "started_at": r.get("started_at"),
            "error": r.get("error"), "description": r.get("description"),
        })
    df = pd.DataFrame(out, columns=["run_id", *LEADERBOARD_COLUMNS, "description"])
    numeric = ["miou", "pixel_accuracy", "params_m", "size_mb", "gflops", "latency_ms", "train_minutes",
               "images_per_second", "lr", "weight_decay", "dropout", "batch_size"]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")  # missing -> NaN (a blank cell), not None
    return df


def filter_runs(df: pd.DataFrame, *, datasets=None, archs=None, statuses=None) -> pd.DataFrame:
    """Rows whose dataset / arch / status is among the chosen ones (None or empty = no filter)."""
    keep = pd.Series(True, index=df.index)
    for col, chosen in (("dataset", datasets), ("arch", archs), ("status", statuses)):
        if chosen:
            keep &= df[col].isin(list(chosen))
    return df[keep]


def evaluated(df: pd.DataFrame) -> pd.DataFrame:
    """Completed runs that have an evaluation (an mIoU to plot)."""
    return df[(df["status"] == "completed") & df["miou"].notna()]


def run_labels(df: pd.DataFrame) -> dict[int, str]:
    """run_id -> a short unique label: the variant, plus the run uid where a variant has several runs."""
    counts = df["variant"].value_counts()
    return {int(r.run_id): r.variant if counts[r.variant] == 1 else f"{r.variant} · {r.uid}"
            for r in df.itertuples()}


def class_iou_matrix(rows: list[dict], labels: dict[int, str]) -> pd.DataFrame:
    """`Store.class_iou_table()` rows -> runs x 19 classes (columns in trainId order; NaN = class
    absent from the evaluated split), rows in the order of `labels`."""
    if not rows:
        return pd.DataFrame(columns=CLASS_NAMES, dtype=float)
    long = pd.DataFrame(rows)
    wide = long.pivot_table(index="run_id", columns="class_name", values="iou", aggfunc="first", dropna=False)
    wide = wide.reindex(index=[r for r in labels if r in wide.index], columns=CLASS_NAMES)
    wide.index = [labels[r] for r in wide.index]
    return wide.astype(float)


def epochs_frame(epochs_by_run: dict[str, list[dict]]) -> pd.DataFrame:
    """label -> `Store.epochs()` rows, stacked long: label, epoch, train_loss, val_loss, val_miou."""
    cols = ["run", "epoch", "train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "lr"]
    rows = [{"run": label, **{c: e.get(c) for c in cols[1:]}} for label, eps in epochs_by_run.items() for e in eps]
    return pd.DataFrame(rows, columns=cols)


def benchmark_frame(rows: list[dict]) -> pd.DataFrame:
    """`Store.benchmarks("video")` rows (from `python -m engine bench`) flattened, the latest row per
    (variant, size, device, precision, backend) kept."""
    cols = ["variant", "size", "device", "threads", "precision", "backend", "batch_size", "baseline_fps", "fast_fps",
            "speedup", "baseline_model_ms", "fast_model_ms", "model_speedup", "agreement", "frames", "created_at"]
    flat = [{**r, **(r.get("metrics") or {})} for r in rows]
    df = pd.DataFrame(flat, columns=cols)
    return df.drop_duplicates(["variant", "size", "device", "precision", "backend"], keep="last").reset_index(drop=True)

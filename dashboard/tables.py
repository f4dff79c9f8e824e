"""Pure pandas views of the store's rows, shaped for display. Every number comes straight from
`engine.store` (leaderboard, class_iou_table, epochs, robustness, evaluations; the recipe's columns
from `engine.store.recipe_columns`): renamed, unit-converted (params in millions, seconds in
minutes) and filtered. The only numbers made here are the robustness ratios of stored numbers
(retention = mIoU or IoU under corruption / clean), a derived model's change against the model it
was made from (mIoU difference, size and latency ratios), the latest row per run and dataset, and
the Drill-down's IoUs of stored per-image and boundary-band counts (through `engine.per_image`).

Derived models (`python -m engine compress`: pruned, INT8, pruned then INT8) are runs whose
`parent_run_id` names the run they were made from; `lineage_view` lists each one directly under
its parent, whatever the sort."""
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

def axis_label(column: str, setup: dict | None = None) -> str:
    """An efficiency axis's name with what its figure holds for (`setup`: a `Store.cost_setups()`
    row): GFLOPs at the setup's resolution, latency on the whole setup."""
    label = EFFICIENCY_AXES.get(column, LEADERBOARD_COLUMNS.get(column, column))
    if setup and column == "gflops":
        return f"{label} at {setup['resolution']}"
    if setup and column == "latency_ms":
        return f"{label} on {setup['label']}"
    return label


LEADERBOARD_COLUMNS = {  # frame column -> heading, in the order the Leaderboard page shows them
    "model": "Model", "method": "Method", "ratio": "FLOPs pruned", "status": "Status", "miou": "mIoU",
    "delta_miou": "Δ mIoU", "size_mb": "Size (MB)", "size_ratio": "Δ size", "latency_ms": "Latency (ms)",
    "latency_ratio": "Δ latency", "cost_resolution": "GFLOPs/latency at", "pixel_accuracy": "Pixel acc.", "mpc": "mPC", "rpc": "rPC", "params_m": "Params (M)",
    "gflops": "GFLOPs", "train_minutes": "Train time (min)", "dataset": "Dataset", "arch": "Architecture",
    "backbone": "Backbone", "optimizer": "Optimizer", "lr": "LR", "weight_decay": "Weight decay", "dropout": "Dropout",
    "batch_size": "Batch", "train_size": "Train size", "epochs_label": "Epochs", "profile": "Profile",
    "images_per_second": "Train img/s", "latency_setup": "Latency measured on", "started_at": "Started",
    "error": "Error", "uid": "Run",
}

# how a model was made (`lineage`'s method), for people, in the order legends list them
METHOD_NAMES = {"trained": "trained", "imported": "imported", "prune": "pruned", "int8": "INT8",
                "prune+int8": "pruned + INT8"}
# sort direction per column: these are better high (shown highest first); every other column lowest (or A-Z) first
HIGHER_FIRST = {"miou", "delta_miou", "pixel_accuracy", "mpc", "rpc", "images_per_second", "started_at"}
_ARROW = "↳ "
_INDENT = "\u2003"  # one em space per level below the first


def lineage(rows: list[dict]) -> dict[int, dict]:
    """run_id -> how that model was made, following `parent_run_id` up to the trained model:
    `method` ("trained", or "imported" for a published checkpoint brought in by `import-checkpoint`;
    "prune", "int8", "prune+int8" for a derived one: the steps joined by "+"), `ratio` (the
    fraction of the trained model's FLOPs pruned away, over every prune step; None without one),
    `depth` (0 for a trained model, 1 for a model made from it...; the steps known) and `parent` (the
    parent's row, None when it is not among `rows`)."""
    by_id = {r["run_id"]: r for r in rows}
    out = {}
    for r in rows:
        steps, seen, node = [], {r["run_id"]}, r
        # a derived run made from a checkpoint the store never saw has a method but no parent
        while node is not None and (node.get("parent_run_id") is not None or node.get("method")):
            steps.append((node.get("method") or "derived", node.get("ratio")))
            node = by_id.get(node.get("parent_run_id"))
            if node is not None and node["run_id"] in seen:  # a cycle would be a broken store: stop there
                break
            if node is not None:
                seen.add(node["run_id"])
        steps.reverse()
        kept = 1.0
        for method, ratio in steps:
            if method == "prune" and ratio is not None:
                kept *= 1.0 - float(ratio)
        root = "imported" if node is not None and node.get("source") else "trained"  # what the chain starts from
        out[r["run_id"]] = {"method": "+".join(m for m, _ in steps) or root,
                            "ratio": None if kept == 1.0 else 1.0 - kept, "depth": len(steps),
                            "parent": by_id.get(r.get("parent_run_id"))}
    return out


def method_text(method: str, ratio=None) -> str:
    """"pruned 50% + INT8": how a model was made (`lineage`'s method and ratio), for people."""
    if method in ("trained", "imported"):
        return method
    text = " + ".join(METHOD_NAMES.get(m, m) for m in method.split("+"))
    if ratio is not None and not pd.isna(ratio) and "prune" in method:
        text = text.replace("pruned", f"pruned {ratio:.0%}", 1)
    return text


def _num(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def _same_setup(a: dict, b: dict) -> bool:
    """Latencies measured on the same setup (`cost_setup`: device, threads, resolution, batch; the
    precision is each model's own: INT8)."""
    return a.get("cost_setup") is not None and a.get("cost_setup") == b.get("cost_setup")


def change_against_parent(row: dict, parent: dict | None) -> dict:
    """A derived model's change against the model it was made from: `delta_miou` (difference),
    `size_ratio` and `latency_ratio` (derived / parent; the latency only when both were measured on
    the same device, threads and resolution). NaN where either number is missing."""
    nan = float("nan")
    if parent is None:
        return {"delta_miou": nan, "size_ratio": nan, "latency_ratio": nan}
    miou, pmiou = _num(row.get("miou")), _num(parent.get("miou"))
    size, psize = _num(row.get("size_mb")), _num(parent.get("size_mb"))
    lat, plat = _num(row.get("latency_ms")), _num(parent.get("latency_ms"))
    return {"delta_miou": miou - pmiou if miou is not None and pmiou is not None else nan,
            "size_ratio": size / psize if size is not None and psize else nan,
            "latency_ratio": lat / plat if lat is not None and plat and _same_setup(row, parent) else nan}


def leaderboard_frame(rows: list[dict]) -> pd.DataFrame:
    """`Store.leaderboard()` rows -> one display row per run (order kept: best mIoU first). A derived
    model also gets its lineage (`method`, `ratio`, `depth`, `parent_run_id`, `parent_variant`) and its
    change against its parent (`delta_miou`, `size_ratio`, `latency_ratio`); a trained model has
    method "trained" and no change. `model` is the variant until `lineage_view` draws the tree."""
    out = []
    family = lineage(rows)
    for r in rows:
        latency_setup = None
        if r.get("latency_ms") is not None:
            latency_setup = f"{r['cost_setup_label']}, {r['latency_precision']}"
        made = family[r["run_id"]]
        out.append({
            "run_id": r["run_id"], "uid": r["uid"][:8], "variant": r["variant"], "model": r["variant"],
            "status": r["status"],
            "dataset": r["dataset"], "arch": r["arch"], "backbone": r["backbone"], "optimizer": r.get("optimizer"),
            "lr": r.get("lr"), "weight_decay": r.get("weight_decay"), "dropout": r.get("dropout"),
            "batch_size": r.get("batch_size"), "train_size": r.get("train_size"),
            "epochs_label": f"{r['epochs_done']}/{r['epochs']}" if r.get("epochs") else str(r["epochs_done"]),
            "profile": r.get("profile"), "miou": r.get("miou"), "pixel_accuracy": r.get("pixel_accuracy"),
            "mpc": r.get("mpc"), "rpc": r.get("rpc"),
            "params_m": r["params"] / 1e6 if r.get("params") is not None else None,
            "size_mb": r.get("size_mb"), "gflops": r.get("gflops"), "latency_ms": r.get("latency_ms"),
            "latency_setup": latency_setup, "cost_resolution": r.get("latency_resolution"),
            "train_minutes": r["train_seconds"] / 60 if r.get("train_seconds") is not None else None,
            "images_per_second": r.get("images_per_second"), "started_at": r.get("started_at"),
            "error": r.get("error"), "description": r.get("description"),
            "method": made["method"], "ratio": made["ratio"], "depth": made["depth"],
            "parent_run_id": r.get("parent_run_id"), "parent_variant": r.get("parent_variant"),
            **change_against_parent(r, made["parent"]),
        })
    df = pd.DataFrame(out, columns=["run_id", "variant", *LEADERBOARD_COLUMNS, "description", "depth",
                                    "parent_run_id", "parent_variant"])
    numeric = ["miou", "pixel_accuracy", "mpc", "rpc", "params_m", "size_mb", "gflops", "latency_ms", "train_minutes",
               "images_per_second", "lr", "weight_decay", "dropout", "batch_size", "ratio", "delta_miou", "size_ratio",
               "latency_ratio"]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")  # missing -> NaN (a blank cell), not None
    df["parent_run_id"] = df["parent_run_id"].astype("Int64")
    df["depth"] = df["depth"].astype(int)
    return df


BUDGET_COLUMNS = ["name", "method", "accuracy", "miou", "rpc", "size_mb", "gflops", "latency_ms", "latency_precision"]


def budget_frame(rows: list[dict]) -> pd.DataFrame:
    """`engine.recommend` ranked or excluded rows for a table: the figures the budget is held to
    (and `reason` for an excluded one), the method in words."""
    cols = BUDGET_COLUMNS + (["reason"] if rows and "reason" in rows[0] else [])
    df = pd.DataFrame(rows, columns=cols)
    df["method"] = [method_text(m) for m in df["method"]]
    return df


def imported_notes(rows: list[dict]) -> list[str]:
    """One line per imported run (`Store.leaderboard()` rows with a `source`): where its weights came
    from, the mIoU published for them and, once evaluated on Cityscapes, the mIoU measured here."""
    out = []
    for r in rows:
        src = r.get("source")
        if not src:
            continue
        published = src.get("published_miou")
        line = (f"**{r['variant']}**: imported from a {src.get('format')} checkpoint `{src.get('file')}` "
                f"(sha256 {str(src.get('sha256'))[:12]}…)")
        if src.get("url"):
            line += f", [source]({src['url']})"
        if published is not None:
            line += f"; published mIoU {published:.4f}"
        if r.get("miou") is not None and r.get("dataset") == "cityscapes":
            line += f"; measured here {r['miou']:.4f} on {r.get('eval_size')}"
            if published is not None:
                line += f" ({r['miou'] - published:+.4f})"
        elif r.get("miou") is not None:
            line += f"; evaluated here on {r.get('dataset')} only, not comparable with the published figure"
        else:
            line += "; not evaluated yet (`python -m engine evaluate --variant " + r["variant"] + "`)"
        out.append(line)
    return out


def sort_label(column: str) -> str:
    """How the Leaderboard's "Sort by" names a column: its heading and the direction it sorts in."""
    heading = LEADERBOARD_COLUMNS.get(column, column)
    if column == "started_at":
        return f"{heading} (newest first)"
    if column in HIGHER_FIRST:
        return f"{heading} (highest first)"
    if column in {"model", "method", "status", "dataset", "arch", "backbone", "optimizer", "profile", "train_size",
                  "epochs_label", "latency_setup", "cost_resolution", "error", "uid"}:
        return f"{heading} (A-Z)"
    return f"{heading} (lowest first)"


def lineage_view(df: pd.DataFrame, sort_by: str = "miou", ascending: bool | None = None) -> pd.DataFrame:
    """The rows as a tree: the models that are not derived from another row of `df` (trained
    models, and derived ones whose parent is filtered out) sorted by `sort_by` (highest first for
    the columns in HIGHER_FIRST, else lowest first; missing values last), each followed directly by
    the models made from it, sorted the same way among themselves, and so on down. `model` becomes
    the variant for a top row and "↳ +int8" (the name's part after its parent's, indented one em
    space per level below the first) under its parent."""
    if df.empty:
        return df.assign(model=df["variant"])
    if ascending is None:
        ascending = sort_by not in HIGHER_FIRST
    ordered = df.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    ids = set(ordered["run_id"])
    children: dict[int, list] = {}
    tops = []
    for idx, row in ordered.iterrows():
        parent = row["parent_run_id"]
        if pd.notna(parent) and int(parent) in ids and int(parent) != row["run_id"]:
            children.setdefault(int(parent), []).append(idx)
        else:
            tops.append(idx)
    order, labels, done = [], {}, set()

    def visit(idx, level: int) -> None:
        if idx in done:
            return
        done.add(idx)
        row = ordered.loc[idx]
        if level == 0:
            labels[idx] = row["variant"]
        else:
            parent = ordered.loc[ordered["run_id"] == int(row["parent_run_id"]), "variant"].iloc[0]
            own = row["variant"][len(parent):] if row["variant"].startswith(parent) else ""
            labels[idx] = _INDENT * (level - 1) + _ARROW + (own or row["variant"])
        order.append(idx)
        for child in children.get(int(row["run_id"]), []):
            visit(child, level + 1)

    for idx in tops:
        visit(idx, 0)
    for idx in ordered.index:  # rows in a parent cycle (a broken store) still show, at the top level
        visit(idx, 0)
    out = ordered.loc[order].copy()
    out["model"] = [labels[i] for i in order]
    return out


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


# ---- published results (`Store.published()`: papers and model zoos, never measured here) ----

PUBLISHED_COLUMNS = ["key", "model", "arch", "backbone", "miou", "params_m", "gflops", "gflops_resolution", "gflops_label",
                     "fps", "fps_label", "schedule", "crop", "source", "url", "note"]


def _at(value, unit: str = "", *, device=None, resolution=None) -> str | None:
    """'696.2 at 2048x1024', '2.74 fps on V100 at 2048x1024': a figure with what it was measured on."""
    if value is None or pd.isna(value):
        return None
    return f"{value:g}{unit}" + (f" on {device}" if device else "") + (f" at {resolution}" if resolution else "")


def published_frame(rows: list[dict]) -> pd.DataFrame:
    """`Store.published()` rows -> one display row each (order kept: best mIoU first): parameters in
    millions, and each cost with what it was measured on: `gflops_label` ("696.2 at 2048x1024"),
    `fps_label` ("2.74 fps on V100 at 2048x1024"). The numbers are the source's, unchanged."""
    out = [{**{c: r.get(c) for c in PUBLISHED_COLUMNS},
            "params_m": r["params"] / 1e6 if r.get("params") is not None else None,
            "gflops_label": _at(r.get("gflops"), resolution=r.get("gflops_resolution")),
            "fps_label": _at(r.get("fps"), " fps", device=r.get("fps_device"), resolution=r.get("fps_resolution"))}
           for r in rows]
    df = pd.DataFrame(out, columns=PUBLISHED_COLUMNS)
    df[["miou", "params_m", "gflops", "fps"]] = df[["miou", "params_m", "gflops", "fps"]].apply(
        pd.to_numeric, errors="coerce")
    return df


def published_on_axis(published: pd.DataFrame, x: str, resolution: str | None = None) -> pd.DataFrame:
    """The published rows with a figure for efficiency axis `x`: parameters, or GFLOPs at `resolution`
    (the one the runs' GFLOPs are at; the source states its own). None on the other axes: no published
    checkpoint size or training time is comparable, and a published FPS (another device, another
    resolution) is never put against the latency measured here."""
    if x == "params_m":
        return published[published["params_m"].notna()]
    if x == "gflops":
        return published[published["gflops"].notna() & (published["gflops_resolution"] == resolution)]
    return published.iloc[0:0]


_NEVER_FPS = ("A published FPS (another device, another resolution) is never put against the latency measured "
              "here.")


def published_caption(published: pd.DataFrame, overlay: pd.DataFrame | None, x: str, y: str, dataset: str,
                      resolution: str | None = None) -> str:
    """What the Trade-offs page says under its chart about the published results it overlays (`overlay`,
    from `published_on_axis`), or why it shows none on these axes."""
    if published.empty:
        return ("No published results in the store: `python -m engine published --load` loads the papers' and model "
                "zoos' Cityscapes val figures.")
    if y != "miou":
        return "Published results are Cityscapes val mIoU figures: they are drawn on the mIoU axis only."
    if x == "gflops" and (overlay is None or overlay.empty):
        at = sorted(set(published.loc[published["gflops"].notna(), "gflops_resolution"].dropna()))
        return (f"No published GFLOPs at {resolution or 'this resolution'} (the sources state theirs at "
                f"{', '.join(at) or 'no resolution'}): GFLOPs at different resolutions are never drawn together.")
    if overlay is None or overlay.empty:
        return (f"Published results are drawn against parameters and GFLOPs only, not against "
                f"{EFFICIENCY_AXES[x].lower()}. " + _NEVER_FPS)
    text = ("Hollow markers: published results (Cityscapes val, single scale) as their source reports them, not "
            "measured here (hover: source and resolution); the Pareto front is the measured runs' alone. " + _NEVER_FPS)
    if x == "gflops":
        text += f" Published GFLOPs drawn only where their source states them at {resolution}, as ours are."
    if dataset != "cityscapes":
        text += (f" These runs were evaluated on {dataset}, not on Cityscapes: the published figures are a reference, "
                 "not a like-for-like comparison.")
    return text


# ---- robustness (`Store.robustness()` sweeps) and domain shift (`Store.evaluations()`) ----

GROUPS = ("noise", "blur", "weather", "digital", "held-out")  # engine.robustness's groups, in its order
ACCURACY_AXES = {"miou": "mIoU (val)", "mpc": "mPC (mean mIoU under corruptions)"}  # + one per other dataset


def domain_label(dataset: str, condition: str | None = "") -> str:
    """'synthetic-acdc · fog', or just the dataset when there is no condition."""
    return f"{dataset} · {condition}" if condition else dataset


def sweep_targets(sweeps: list[dict], labels: dict[int, str], own_dataset: str) -> list[tuple[str, str]]:
    """The (dataset, condition) pairs these runs were swept on: their training dataset, clean, first."""
    pairs = {(w["dataset"], w["condition"] or "") for w in sweeps if w["run_id"] in labels}
    return sorted(pairs, key=lambda p: (p != (own_dataset, ""), p))


def latest_sweeps(sweeps: list[dict], labels: dict[int, str], dataset: str, condition: str = "") -> list[dict]:
    """`Store.robustness()` rows (oldest first) -> the latest sweep of each run in `labels` on one
    dataset and condition, in the order of `labels`."""
    latest = {}
    for w in sweeps:
        if w["run_id"] in labels and w["dataset"] == dataset and (w["condition"] or "") == (condition or ""):
            latest[w["run_id"]] = w
    return [latest[r] for r in labels if r in latest]


def robustness_summary(sweeps: list[dict], labels: dict[int, str]) -> pd.DataFrame:
    """One row per sweep: run, clean mIoU, mPC, rPC and the group means as the store has them, and
    what was swept (corruptions, severities, images, input size, library)."""
    cols = ["run_id", "run", "variant", "clean_miou", "mpc", "rpc", *GROUPS, "corruptions", "severities",
            "num_images", "eval_size", "split", "library", "created_at", "robustness_id"]
    rows = []
    for w in sweeps:
        res = w["results"]
        rows.append({"run_id": w["run_id"], "run": labels[w["run_id"]], "variant": w["variant"],
                     "clean_miou": w["clean_miou"], "mpc": w["mpc"], "rpc": w["rpc"],
                     **{g: (w["groups"] or {}).get(g) for g in GROUPS},
                     "corruptions": ", ".join(dict.fromkeys(r["corruption"] for r in res)),
                     "severities": ", ".join(str(s) for s in sorted({r["severity"] for r in res})),
                     "num_images": w["num_images"], "eval_size": w["eval_size"], "split": w["split"],
                     "library": w["library"], "created_at": w["created_at"], "robustness_id": w["id"]})
    df = pd.DataFrame(rows, columns=cols)
    numeric = ["clean_miou", "mpc", "rpc", *GROUPS]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    return df


def severity_curves(sweeps: list[dict], labels: dict[int, str]) -> pd.DataFrame:
    """mIoU against severity, long (run_id, run, corruption, group, severity, miou): severity 0 is
    the sweep's clean mIoU, repeated for each corruption swept; corruptions in the library's order."""
    rows = []
    for w in sweeps:
        run, seen = labels[w["run_id"]], set()
        for r in w["results"]:
            if r["corruption"] not in seen:
                seen.add(r["corruption"])
                rows.append({"run_id": w["run_id"], "run": run, "corruption": r["corruption"], "group": r["group"],
                             "severity": 0, "miou": w["clean_miou"]})
            rows.append({"run_id": w["run_id"], "run": run, "corruption": r["corruption"], "group": r["group"],
                         "severity": int(r["severity"]), "miou": r["miou"]})
    df = pd.DataFrame(rows, columns=["run_id", "run", "corruption", "group", "severity", "miou"])
    order = {c: i for i, c in enumerate(dict.fromkeys(df["corruption"]))}
    df["miou"] = pd.to_numeric(df["miou"], errors="coerce")
    return df.sort_values(["corruption", "run_id", "severity"], key=lambda s: s.map(order) if s.name == "corruption"
                          else s, kind="stable").reset_index(drop=True)


def _ratio(under, clean) -> float:
    if under is None or clean is None or pd.isna(under) or pd.isna(clean) or clean <= 0:
        return float("nan")
    return float(under) / float(clean)


def group_retention(sweeps: list[dict], labels: dict[int, str]) -> pd.DataFrame:
    """Retention per corruption group, long (run_id, run, group, miou, clean_miou, retention):
    the group's mean mIoU as the sweep recorded it, divided by the sweep's clean mIoU."""
    rows = [{"run_id": w["run_id"], "run": labels[w["run_id"]], "group": g, "miou": (w["groups"] or {})[g],
             "clean_miou": w["clean_miou"], "retention": _ratio((w["groups"] or {})[g], w["clean_miou"])}
            for w in sweeps for g in GROUPS if g in (w["groups"] or {})]
    return pd.DataFrame(rows, columns=["run_id", "run", "group", "miou", "clean_miou", "retention"])


def _class_retention(sweep: dict, results: list[dict]) -> list[float]:
    """Per class: the mean of its IoU over `results` (a class's missing IoUs skipped) / its clean IoU."""
    clean = sweep["clean_per_class_iou"] or {}
    out = []
    for name in CLASS_NAMES:
        values = [r["per_class_iou"].get(name) for r in results if r.get("per_class_iou")]
        values = [v for v in values if v is not None and not pd.isna(v)]
        out.append(_ratio(sum(values) / len(values), clean.get(name)) if values else float("nan"))
    return out


def class_retention_by_run(sweeps: list[dict], labels: dict[int, str]) -> pd.DataFrame:
    """Runs x 19 classes: each class's IoU averaged over every corruption and severity swept,
    divided by its clean IoU (NaN: the class is absent from the clean evaluation or scored 0 there)."""
    return pd.DataFrame([_class_retention(w, w["results"]) for w in sweeps],
                        index=[labels[w["run_id"]] for w in sweeps], columns=CLASS_NAMES, dtype=float)


def class_retention_by_group(sweep: dict) -> pd.DataFrame:
    """Corruption groups x 19 classes for one sweep: as `class_retention_by_run`, per group."""
    present = [g for g in GROUPS if any(r["group"] == g for r in sweep["results"])]
    return pd.DataFrame([_class_retention(sweep, [r for r in sweep["results"] if r["group"] == g]) for g in present],
                        index=present, columns=CLASS_NAMES, dtype=float)


def weakest_classes(matrix: pd.DataFrame, n: int = 3) -> dict[str, list[tuple[str, float]]]:
    """Row -> its n classes with the lowest retention (the ones that break first), lowest first."""
    return {row: [(c, float(v)) for c, v in matrix.loc[row].dropna().nsmallest(n).items()] for row in matrix.index}


def domain_shift_frame(evaluations: list[dict], labels: dict[int, str], own_dataset: str) -> pd.DataFrame:
    """`Store.evaluations()` rows -> the latest evaluation of each run in `labels` per (dataset,
    condition): run_id, run, dataset, condition, domain, in_distribution, miou, pixel_accuracy,
    num_images, checkpoint_sha256. The training dataset without a condition first, then the others
    by dataset and condition; runs in the order of `labels`."""
    latest = {}
    for e in evaluations:  # oldest first
        if e["run_id"] in labels:
            latest[(e["run_id"], e["dataset"], e["condition"] or "")] = e
    cols = ["run_id", "run", "dataset", "condition", "domain", "in_distribution", "miou", "pixel_accuracy",
            "num_images", "checkpoint_sha256"]
    rows = [{"run_id": rid, "run": labels[rid], "dataset": ds, "condition": cond, "domain": domain_label(ds, cond),
             "in_distribution": (ds, cond) == (own_dataset, ""), "miou": e["miou"],
             "pixel_accuracy": e["pixel_accuracy"], "num_images": e["num_images"],
             "checkpoint_sha256": e["checkpoint_sha256"]} for (rid, ds, cond), e in latest.items()]
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df
    run_order = {r: i for i, r in enumerate(labels)}
    df = df.assign(_d=~df["in_distribution"], _r=df["run_id"].map(run_order))
    return df.sort_values(["_d", "dataset", "condition", "_r"]).drop(columns=["_d", "_r"]).reset_index(drop=True)


def domain_shift_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """`domain_shift_frame` as runs x domains (mIoU), both in the frame's order."""
    if frame.empty:
        return pd.DataFrame(dtype=float)
    wide = frame.pivot_table(index="run", columns="domain", values="miou", aggfunc="first", sort=False)
    return wide.reindex(index=list(dict.fromkeys(frame["run"])), columns=list(dict.fromkeys(frame["domain"])))


def with_accuracy_axes(runs: pd.DataFrame, evaluations: list[dict]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The accuracy axes the Trade-offs page offers for these runs (one training dataset): clean mIoU,
    mPC, and the mIoU on every other dataset and condition any of them was evaluated on (the latest
    evaluation of each run there, as column `miou@<dataset>/<condition>`). Returns (runs with those
    columns added, column -> label)."""
    own = set(runs["dataset"])
    frame = domain_shift_frame(evaluations, {int(r): "" for r in runs["run_id"]}, next(iter(own), ""))
    frame = frame[~frame["in_distribution"]] if not frame.empty else frame
    axes, out = dict(ACCURACY_AXES), runs.copy()
    for (ds, cond), part in (frame.groupby(["dataset", "condition"], sort=False) if not frame.empty else []):
        col = f"miou@{ds}/{cond}" if cond else f"miou@{ds}"
        axes[col] = f"mIoU on {domain_label(ds, cond)}"
        out[col] = pd.to_numeric(out["run_id"].map(dict(zip(part["run_id"], part["miou"]))), errors="coerce")
    return out, axes


# ---- Drill-down: evaluations with per-image rows (engine.per_image does the arithmetic) ----

def evaluation_label(ev: dict) -> str:
    """How a picker names an evaluation: model, where, how many images, mIoU, when, id."""
    miou = "n/a" if ev.get("miou") is None else f"{ev['miou']:.3f}"
    return (f"{ev['variant']} · {domain_label(ev['dataset'], ev.get('condition'))} {ev['split']} · "
            f"{ev['images']} images · mIoU {miou} · {ev['created_at']:%Y-%m-%d %H:%M} · #{ev['id']}")


def comparable(evaluations: list[dict], a: dict) -> list[dict]:
    """The other evaluations on the same dataset, condition and split as `a` (with per-image rows)."""
    return [e for e in evaluations if e["id"] != a["id"] and e["images"] and e["dataset"] == a["dataset"]
            and (e.get("condition") or "") == (a.get("condition") or "") and e["split"] == a["split"]]


def interior_boundary_frame(evaluations: dict[str, dict]) -> pd.DataFrame:
    """Per class (rows): for each named evaluation, its IoU over all pixels, in the interior and
    within the boundary band (`engine.per_image.interior_boundary`); with two, B − A of each."""
    from engine.per_image import interior_boundary

    cols = {}
    for name, ev in evaluations.items():
        rows = interior_boundary(ev)
        if rows is None:
            continue
        for key, word in (("iou", "IoU"), ("interior_iou", "interior"), ("boundary_iou", "boundary")):
            cols[f"{name} {word}"] = [r[key] for r in rows]
    df = pd.DataFrame(cols, index=pd.Index(CLASS_NAMES, name="class")).astype(float)
    names = list(evaluations)
    if len(names) == 2 and all(f"{n} IoU" in df for n in names):
        a, b = names
        for word in ("interior", "boundary"):
            df[f"B − A {word}"] = df[f"{b} {word}"] - df[f"{a} {word}"]
    return df


def image_iou_frame(rows: dict[str, dict]) -> pd.DataFrame:
    """Per class (rows): each named evaluation's IoU in one image, and within its boundary band."""
    from engine.per_image import per_class_iou

    cols = {}
    for name, row in rows.items():
        cols[f"{name} IoU"] = list(per_class_iou(row).values())
        cols[f"{name} boundary"] = list(per_class_iou(row, boundary=True).values())
    df = pd.DataFrame(cols, index=pd.Index(CLASS_NAMES, name="class")).astype(float)
    return df.dropna(how="all")


def cell_images_frame(rows: dict[str, list[dict]], gt: int, pred: int, top: int = 20) -> pd.DataFrame:
    """The images where ground-truth class `gt` is predicted as `pred` on the most pixels by the
    first named evaluation, with those pixels (and their share of the class) for each evaluation."""
    from engine.per_image import cell_pixels, confusion_images

    (first, first_rows), *others = rows.items()
    found = confusion_images(first_rows, gt, pred, top)
    data = {"image": [r["image"] for r in found], "folder": [r["folder"] for r in found],
            f"{first} pixels": [r["pixels"] for r in found], f"{first} share": [r["share"] for r in found]}
    for name, other in others:
        by_image = {r["image"]: r for r in other}
        data[f"{name} pixels"] = [cell_pixels(by_image[r["image"]], gt, pred) if r["image"] in by_image else None
                                  for r in found]
    return pd.DataFrame(data)


def image_pairs(rows_a: list[dict], rows_b: list[dict], by: str = "miou") -> pd.DataFrame:
    """One row per image both evaluations scored: image, folder, value_a, value_b (`by` of each)."""
    from engine.per_image import versus

    pairs = versus(rows_a, rows_b, by, top=None)
    return pd.DataFrame({"image": [p["image"] for p in pairs], "folder": [p["a"]["folder"] for p in pairs],
                         "value_a": [p["value_a"] for p in pairs], "value_b": [p["value_b"] for p in pairs]})


def provenance_frame(prov) -> pd.DataFrame:
    """One row per indicator of an `engine.coverage.Provenance`: the classes it counts and the model's
    IoU on each in the evaluation behind the numbers (blank when there is none)."""
    from engine.coverage import INDICATORS

    rows = []
    for ind in INDICATORS:
        for name in prov.indicator_classes(ind):
            rows.append({"indicator": ind.label, "class": name, "IoU": prov.class_iou.get(name)})
    return pd.DataFrame(rows, columns=["indicator", "class", "IoU"])

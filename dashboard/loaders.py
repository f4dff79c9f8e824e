"""Cached access to the engine: the results store (numbers) and trained checkpoints (pixels).

Queries are cached for a few seconds (`st.cache_data`), so a dashboard left open follows a
training run; models are loaded once per checkpoint file version (`st.cache_resource`).
Predictions are kept per browser session for the current upload, so changing the view never
re-runs a model: `inference_calls` in the session counts the real model runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import media
from dashboard.tables import lineage
from engine import checkpoints, coverage, settings
from engine.coverage import Provenance, class_pixels
from engine.inference import InferenceOptions, Segmenter
from engine.recommend import Budget, Recommendation, recommend
from engine.store import Store

QUERY_TTL_S = 5


@st.cache_resource(show_spinner=False)
def store(url: str) -> Store:
    return Store(url)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def leaderboard(url: str, setup: str | None = None) -> list[dict]:
    """`Store.leaderboard` with the costs measured on `setup` (None: the store's default setup)."""
    return store(url).leaderboard(setup=setup)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def cost_setups(url: str) -> list[dict]:
    """The setups costs were measured on (`Store.cost_setups`), the one most runs were measured on first."""
    return store(url).cost_setups()


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def class_iou_table(url: str, run_ids: tuple[int, ...]) -> list[dict]:
    return store(url).class_iou_table(run_ids)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def epochs(url: str, run_id: int) -> list[dict]:
    return store(url).epochs(run_id)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def benchmarks(url: str, kind: str) -> list[dict]:
    return store(url).benchmarks(kind)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def robustness(url: str, run_ids: tuple[int, ...]) -> list[dict]:
    """Every corruption sweep of these runs (oldest first), with its results."""
    return store(url).robustness(list(run_ids))


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def evaluations(url: str) -> list[dict]:
    """Every evaluation in the store (oldest first): every dataset and condition."""
    return store(url).evaluations()


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def recommendation(url: str, budget: Budget, dataset: str | None) -> Recommendation:
    """The budget picker's answer (`engine.recommend.recommend`) for the runs trained on `dataset`."""
    return recommend(store(url), budget, dataset=dataset)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def published(url: str) -> list[dict]:
    """The published results (papers, model zoos: `python -m engine published --load`), best mIoU
    first; never mixed with the runs."""
    return store(url).published()


@dataclass(frozen=True)
class Model:
    """A trained checkpoint in the weights folder, with the store's record of the run that wrote it."""
    variant: str
    checkpoint: Path
    mtime_ns: int
    run_id: int | None
    miou: float | None
    dataset: str | None
    parent_run_id: int | None = None   # a derived model (pruned, INT8): the run it was made from
    method: str = "trained"            # tables.lineage: "trained", "prune", "int8", "prune+int8"
    ratio: float | None = None         # tables.lineage: the fraction of the trained model's FLOPs pruned away

    @property
    def label(self) -> str:
        score = f"mIoU {self.miou:.3f}" if self.miou is not None else "not evaluated"
        return f"{self.variant} ({score})"


def available_models(url: str, weights_dir: Path) -> list[Model]:
    """Every `<weights>/<variant>/best.pt` (trained and derived models alike: a derived model's
    checkpoint is `<weights>/<derived name>/best.pt`), best mIoU first. Its run is the latest
    completed run of that variant (a later training of a variant overwrites its best.pt)."""
    rows = leaderboard(url, cost_setup())
    made = lineage(rows)
    runs = {}
    for r in sorted(rows, key=lambda r: r["run_id"]):
        if r["status"] == "completed":
            runs[r["variant"]] = r
    models = []
    for path in sorted(Path(weights_dir).glob("*/best.pt")):
        run = runs.get(path.parent.name, {})
        models.append(Model(variant=path.parent.name, checkpoint=path, mtime_ns=path.stat().st_mtime_ns,
                            run_id=run.get("run_id"), miou=run.get("miou"), dataset=run.get("dataset"),
                            parent_run_id=run.get("parent_run_id"),
                            method=made[run["run_id"]]["method"] if run else "trained",
                            ratio=made[run["run_id"]]["ratio"] if run else None))
    return sorted(models, key=lambda m: (m.miou is None, -(m.miou or 0.0), m.variant))


def parent_of(model: Model, models: list[Model]) -> Model | None:
    """The model a derived model was made from, when its checkpoint is still the one of that run
    (a later training of the parent's variant overwrites its best.pt: then None, as for a trained model)."""
    if model.parent_run_id is None:
        return None
    return next((m for m in models if m.run_id == model.parent_run_id), None)


def cost_setup() -> str | None:
    """The setup the sidebar shows costs for (widgets.setup_picker); None until one is picked: the store's default."""
    return st.session_state.get("cost_setup")


BACKENDS = {"torch": "PyTorch", "onnx": "ONNX Runtime"}   # engine.inference backends, as the sidebar names them


def backend() -> str:
    """The inference backend chosen in the sidebar (widgets.backend_picker); PyTorch by default."""
    return st.session_state.get("backend", "torch")


@st.cache_resource(max_entries=4, show_spinner="Loading the model ...")
def segmenter(checkpoint: str, mtime_ns: int, backend: str = "torch", device: str = "auto") -> Segmenter:
    """One loaded model per checkpoint file version (mtime_ns makes a retrained file load anew) and
    backend ("onnx" exports the checkpoint next to it the first time). Loading checks the file's
    sha256 against the one recorded when training wrote it: once per file version, never per rerun."""
    return Segmenter(checkpoint, device=device, options=InferenceOptions(backend=backend), store=store(store_url()))


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray      # trainIds uint8 HxW at the image's own resolution
    seconds: float          # wall time of the model run (resize, forward, upsample, argmax)
    device: str             # where it ran and how, e.g. "cpu, torch bf16"
    pixels: np.ndarray      # pixels per class (engine.coverage.class_pixels), for the legend
    preview: np.ndarray     # labels at the on-screen size (media.preview_size)


def predict(model: Model, image: np.ndarray, digest: str) -> Prediction:
    """The model's labels for this image, computed once per (checkpoint, image) in this session."""
    cache: dict = st.session_state.setdefault("_predictions", {})
    key = (str(model.checkpoint), model.mtime_ns, backend(), digest)
    if key not in cache:
        for k in [k for k in cache if k[-1] != digest]:  # keep only the current image's predictions
            del cache[k]
        seg = segmenter(str(model.checkpoint), model.mtime_ns, backend())
        t0 = time.perf_counter()
        labels = seg.predict(image)
        seconds = time.perf_counter() - t0
        cache[key] = Prediction(labels, seconds, f"{seg.device.type}, {seg.backend_name} {seg.precision}",
                                class_pixels(labels), media.preview(labels))
        st.session_state["inference_calls"] = st.session_state.get("inference_calls", 0) + 1
    return cache[key]


@st.cache_data(show_spinner=False, max_entries=64)
def checkpoint_sha256(checkpoint: str, mtime_ns: int) -> str:
    """A checkpoint file's sha256, hashed once per file version."""
    return checkpoints.sha256(checkpoint)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False, max_entries=32)
def provenance(url: str, variant: str, checkpoint: str, mtime_ns: int, green_terrain: bool) -> Provenance:
    """What stands behind a model's coverage shares: the store's evaluations of this very checkpoint
    file (by its sha256)."""
    evaluations = store(url).evaluations(checkpoint_sha256=checkpoint_sha256(checkpoint, mtime_ns))
    return coverage.provenance(variant, evaluations, green_terrain)


def store_url() -> str:
    return settings.db_url()


def weights_dir() -> Path:
    return settings.weights_dir()


# ---- Drill-down: an evaluation's images and what it predicted for them ----

@st.cache_data(show_spinner=False, max_entries=16)
def image_results(url: str, evaluation_id: int) -> list[dict]:
    """An evaluation's per-image rows (written once with the evaluation, never changed)."""
    return store(url).image_results(evaluation_id)


@st.cache_resource(max_entries=4, show_spinner="Reading the dataset ...")
def _evaluated_dataset(kind: str, root: str, split: str, condition: str, label_format: str | None):
    from engine.data import open_dataset

    data = open_dataset(kind, root, split, condition=condition or None, label_format=label_format)
    return data, {s.stem: i for i, s in enumerate(data.samples)}


def evaluated_image(evaluation: dict, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, trainId ground truth) of one image of an evaluation, read from the dataset it was
    evaluated on (`engine.data`); a DatasetError (a UserError) when that is not readable here."""
    from engine.data import DatasetError

    if not evaluation.get("data_kind") or not evaluation.get("data_root"):
        raise DatasetError(f"evaluation #{evaluation['id']} does not say where its images are (recorded before "
                           "the store kept it); evaluate the model again to open its images")
    data, index = _evaluated_dataset(evaluation["data_kind"], evaluation["data_root"], evaluation["split"],
                                     evaluation.get("condition") or "", evaluation.get("label_format"))
    if stem not in index:
        raise DatasetError(f"{stem} is no longer in {evaluation['data_root']} ({evaluation['split']})")
    return data.load(index[stem])


@st.cache_resource(max_entries=2, show_spinner="Loading the model ...")
def evaluated_model(checkpoint: str, mtime_ns: int, eval_size: str):
    """The checkpoint loaded as `engine.evaluate` runs it, at the evaluation's input size."""
    from engine.evaluate import load_checkpoint

    w, h = (int(v) for v in eval_size.split("x"))
    return load_checkpoint(checkpoint=checkpoint, eval_size=(w, h), store=store(store_url()))


@dataclass(frozen=True)
class EvaluatedPrediction:
    labels: np.ndarray   # trainIds at the ground truth's resolution
    source: str          # where they came from, for the caption


def evaluated_prediction(evaluation: dict, stem: str, image: np.ndarray, shape: tuple[int, int]) -> EvaluatedPrediction:
    """What the evaluation predicted for one image: its kept PNG (`evaluate --keep-predictions`),
    else the model run once on it exactly as the evaluation ran it (kept in the session)."""
    from engine.evaluate import predict_labels, read_label_png

    cache: dict = st.session_state.setdefault("_evaluated_predictions", {})
    key = (evaluation["id"], stem)
    if key in cache:
        return cache[key]
    kept = Path(evaluation["predictions_dir"]) / f"{stem}.png" if evaluation.get("predictions_dir") else None
    if kept is not None and kept.is_file():
        out = EvaluatedPrediction(read_label_png(kept), "kept by the evaluation")
    else:
        path = Path(evaluation["checkpoint"])
        m = evaluated_model(str(path), path.stat().st_mtime_ns, evaluation["eval_size"])
        if evaluation.get("checkpoint_sha256") and m.sha256 != evaluation["checkpoint_sha256"]:
            from engine.checkpoints import CheckpointError

            raise CheckpointError(f"{path} has changed since evaluation #{evaluation['id']} (sha256 differs): its "
                                  "predictions cannot be reproduced; evaluate it again with --keep-predictions")
        t0 = time.perf_counter()
        labels = predict_labels(m, image, shape)
        out = EvaluatedPrediction(labels, f"recomputed on {m.device.type} in {time.perf_counter() - t0:.1f} s: "
                                          "the evaluation kept none")
        st.session_state["inference_calls"] = st.session_state.get("inference_calls", 0) + 1
    if len(cache) > 16:
        cache.pop(next(iter(cache)))
    cache[key] = out
    return out

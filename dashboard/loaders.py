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
from engine import settings
from engine.coverage import class_pixels
from engine.inference import InferenceOptions, Segmenter
from engine.store import Store

QUERY_TTL_S = 5


@st.cache_resource(show_spinner=False)
def store(url: str) -> Store:
    return Store(url)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def leaderboard(url: str) -> list[dict]:
    return store(url).leaderboard()


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
    rows = leaderboard(url)
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


def store_url() -> str:
    return settings.db_url()


def weights_dir() -> Path:
    return settings.weights_dir()

"""The results store: every run, epoch, evaluation and benchmark, in one SQL database.

This is the only module with SQL/ORM code; callers get plain dicts and lists of dicts.
The URL is a SQLAlchemy URL of a SQLite or PostgreSQL database (default
`engine.settings.db_url()`: RESULTS_DB or sqlite:///<repo>/results.db, or
postgresql+psycopg://user@host/db for a database shared by several machines); other databases are
refused with StoreUrlError. On SQLite every connection runs in WAL mode with a 30 s busy timeout and foreign keys on,
so a dashboard can read while training writes. Every write is its own short transaction, begun on
SQLite with BEGIN IMMEDIATE (it waits for the write lock up front, so its reads and writes are one
atomic step); on PostgreSQL writes run READ COMMITTED and lock the rows they read-modify-write
(SELECT ... FOR UPDATE on the run), upserts are INSERT ... ON CONFLICT, and schema creation or
migration holds an advisory lock, so several writers (processes, machines) at once lose nothing.
Every read session sees one snapshot (PostgreSQL: REPEATABLE READ).
Datetimes are timezone-aware UTC. Float metrics that are NaN or infinite are stored as None
(NULL), never NaN.

`log_epoch` is an upsert on (run_id, epoch): logging an epoch again (resumed training)
replaces that epoch's row. `record_checkpoint` keeps the sha256 of every checkpoint file training
writes (upsert by resolved path), which `engine.checkpoints.load(..., store=)` checks.

The schema carries a version (meta.schema_version). Opening a store of an older version this code
knows migrates it in one write transaction (version 1 -> 2: add the `checkpoints` table; 2 -> 3: add
`evaluations.condition` and the robustness tables; 3 -> 4: add `runs.parent_run_id` and
`runs.derivation`; 4 -> 5: add the evaluations' confusion matrices, data source and kept
predictions, and the `image_results` table; 5 -> 6: the `published_results` table and `runs.source`;
6 -> 7: the `cost_profiles` table, filled with the costs older evaluations carried);
any other version is refused with StoreVersionError before anything is written.

What a model costs (`cost_profiles`, `engine.profiling.Profile`) is measured at a deployment
resolution on a setup: device kind and name, threads, resolution, batch (`setup`, one spelling:
`engine.profiling.setup_key`). A run may be profiled on several setups; a query of costs names
the setup it wants (`leaderboard(setup=)`, default the setup the most runs were measured on), and
never mixes two: a run not measured on it has no latency there.

A derived run (`engine.compress`: a pruned or INT8 version of a trained model) names its parent run
(`parent_run_id`) and how it was made (`derivation`: method, ratio, importance, fine-tune and
calibration settings, seconds taken, mIoU before fine-tuning...). A run imported from a published
checkpoint says where it came from (`source`: format, file, sha256, url, published_miou).

Published figures (`published_results`: a paper's or a model zoo's mIoU, parameters, GFLOPs and FPS,
each with its source; `engine.published` loads them from the repository's table) are kept apart from
what was measured here: no query over runs and evaluations ever reads them, and `published()` alone
returns them.

Every evaluation and robustness sweep carries its dataset and condition (ACDC's fog, night...;
'' for none). A run's leaderboard figures come from its latest evaluation (and sweep) on the
dataset it was trained on, without a condition: an evaluation on other streets never replaces them.

Every evaluation keeps its 19x19 confusion matrix (ground truth x prediction, pixel counts), the
same within the ground truth's boundary band (`engine.metrics`: trimap, d = `boundary_fraction` of
the image diagonal), where its images came from (`data_kind`, `data_root`, `label_format`), and
one `image_results` row per image, written in the same transaction: the image's stem, folder (city
or sequence), file and size, its mIoU, pixel accuracy and boundary mIoU, and its per-class
intersection and union counts (all pixels, and within the band), and its confusion matrix as
[ground truth, prediction, pixels] triples of the non-zero cells. `predictions_dir`, when the
evaluation kept its predictions, is the folder of `<stem>.png` trainId maps.

`copy_store(source, target)` (`python -m engine db migrate-to URL`) copies a whole store, ids
included, into an empty database of any backend in one transaction.
"""
from __future__ import annotations

import math
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Integer, String, Text, TypeDecorator,
                        UniqueConstraint, create_engine, event, func, inspect, select, text)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (ArgumentError, IntegrityError, NoSuchModuleError, OperationalError,
                            ProgrammingError)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from engine import settings
from engine.classes import CLASS_NAMES
from engine.errors import UserError
from engine.setups import parse_setup, setup_key, setup_label

if TYPE_CHECKING:   # the objects record_evaluation reads (no import of torch at run time)
    from engine.metrics import ImageResult, Metrics
    from engine.profiling import Profile

SCHEMA_VERSION = 7
# older versions that migrating is purely additive for: create the new tables, add the new columns
# (ADDED_COLUMNS: table -> (column, SQL type and default) added by a later version)
MIGRATABLE = {"1", "2", "3", "4", "5", "6"}
ADDED_COLUMNS = {"evaluations": (("condition", "VARCHAR(32) NOT NULL DEFAULT ''"), ("confusion", "JSON"),
                                 ("boundary_confusion", "JSON"), ("boundary_fraction", "FLOAT"),
                                 ("data_kind", "VARCHAR(32)"), ("data_root", "VARCHAR(1024)"),
                                 ("label_format", "VARCHAR(16)"), ("predictions_dir", "VARCHAR(1024)")),
                 "runs": (("parent_run_id", "INTEGER"), ("derivation", "JSON"), ("source", "JSON"))}
RUN_STATUSES = ("running", "completed", "failed", "interrupted")


class StoreUrlError(UserError, ValueError):
    """RESULTS_DB / --db is not a database URL."""


class StoreConnectError(StoreUrlError):
    """The database of a valid URL cannot be reached or opened (server down, no such database...)."""


class StoreCopyError(UserError, RuntimeError):
    """`copy_store` refused to copy (e.g. the target already holds results)."""


class StoreVersionError(UserError, RuntimeError):
    """The database was written by a different schema version of this code."""


class UTCDateTime(TypeDecorator):
    """DateTime(timezone=True) that always binds UTC and always returns aware UTC datetimes
    (SQLite keeps no offset, so naive values read back are UTC by construction)."""
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    variant: Mapped[str] = mapped_column(String(128), index=True)
    arch: Mapped[str] = mapped_column(String(64), index=True)
    backbone: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(32))
    hyperparameters: Mapped[dict] = mapped_column(JSON)
    dataset: Mapped[str] = mapped_column(String(32), index=True)
    data_root: Mapped[str] = mapped_column(String(1024))
    train_images: Mapped[int] = mapped_column(Integer)
    val_images: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    code_version: Mapped[str] = mapped_column(String(64))
    train_seconds: Mapped[float | None] = mapped_column(Float)
    images_per_second: Mapped[float | None] = mapped_column(Float)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    best_miou: Mapped[float | None] = mapped_column(Float)
    checkpoint: Mapped[str | None] = mapped_column(String(1024))
    # a derived model (pruned, INT8): the id of the run it was made from, and how (engine.compress)
    parent_run_id: Mapped[int | None] = mapped_column(Integer)
    derivation: Mapped[dict | None] = mapped_column(JSON)
    # a run imported from a published checkpoint: {"format", "file", "sha256", "url", "published_miou"}
    source: Mapped[dict | None] = mapped_column(JSON)
    epoch_rows: Mapped[list[Epoch]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                   passive_deletes=True)


class Epoch(Base):
    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("run_id", "epoch", name="uq_epochs_run_epoch"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    iteration: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_miou: Mapped[float | None] = mapped_column(Float)
    val_pixel_accuracy: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    images_per_second: Mapped[float | None] = mapped_column(Float)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    run: Mapped[Run] = relationship(back_populates="epoch_rows")


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    variant: Mapped[str] = mapped_column(String(128))
    checkpoint: Mapped[str] = mapped_column(String(1024))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(32))
    condition: Mapped[str] = mapped_column(String(32), default="", server_default="")
    split: Mapped[str] = mapped_column(String(16))
    num_images: Mapped[int] = mapped_column(Integer)
    eval_size: Mapped[str] = mapped_column(String(32))
    miou: Mapped[float | None] = mapped_column(Float)
    pixel_accuracy: Mapped[float | None] = mapped_column(Float)
    mean_loss: Mapped[float | None] = mapped_column(Float)
    params: Mapped[int | None] = mapped_column(Integer)
    size_mb: Mapped[float | None] = mapped_column(Float)
    gflops: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    latency_device: Mapped[str | None] = mapped_column(String(128))
    latency_threads: Mapped[int | None] = mapped_column(Integer)
    latency_precision: Mapped[str | None] = mapped_column(String(32))
    latency_resolution: Mapped[str | None] = mapped_column(String(32))
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    # ^ the cost columns above: written by schema versions before 7 (at the evaluation size), moved to
    # cost_profiles on migration; costs are now cost_profiles rows, at deployment resolutions
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    confusion: Mapped[list | None] = mapped_column(JSON)            # 19x19, ground truth x prediction
    boundary_confusion: Mapped[list | None] = mapped_column(JSON)   # the same within the boundary band
    boundary_fraction: Mapped[float | None] = mapped_column(Float)  # the band's d / image diagonal
    data_kind: Mapped[str | None] = mapped_column(String(32))       # engine.data.open_dataset's kind
    data_root: Mapped[str | None] = mapped_column(String(1024))
    label_format: Mapped[str | None] = mapped_column(String(16))
    predictions_dir: Mapped[str | None] = mapped_column(String(1024))  # kept predictions: <stem>.png trainIds
    class_rows: Mapped[list[ClassIoU]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                      order_by="ClassIoU.class_id")
    image_rows: Mapped[list[ImageResultRow]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                            order_by="ImageResultRow.position", lazy="noload")


class ImageResultRow(Base):
    """One image of an evaluation (`engine.metrics.ImageResult`)."""
    __tablename__ = "image_results"
    __table_args__ = (UniqueConstraint("evaluation_id", "position", name="uq_image_results_evaluation_position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)        # index in the split
    image: Mapped[str] = mapped_column(String(255))       # file stem
    folder: Mapped[str] = mapped_column(String(255))      # city or sequence ('' for flat layouts)
    image_file: Mapped[str] = mapped_column(String(1024))  # relative to the evaluation's data_root
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    boundary_px: Mapped[int] = mapped_column(Integer)     # d of the image's boundary band
    miou: Mapped[float | None] = mapped_column(Float)
    pixel_accuracy: Mapped[float | None] = mapped_column(Float)
    boundary_miou: Mapped[float | None] = mapped_column(Float)
    intersection: Mapped[list] = mapped_column(JSON)           # 19 pixel counts (TP)
    union: Mapped[list] = mapped_column(JSON)                  # 19 pixel counts (TP + FP + FN)
    boundary_intersection: Mapped[list] = mapped_column(JSON)  # the same within the boundary band
    boundary_union: Mapped[list] = mapped_column(JSON)
    confusion: Mapped[list] = mapped_column(JSON)              # [[gt, pred, pixels], ...] non-zero cells


class ClassIoU(Base):
    __tablename__ = "class_ious"
    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    class_id: Mapped[int] = mapped_column(Integer)
    class_name: Mapped[str] = mapped_column(String(32))
    iou: Mapped[float | None] = mapped_column(Float)


class CostProfile(Base):
    """What a checkpoint costs on one setup (`engine.profiling.Profile`): its size and parameters,
    FLOPs of one image at `resolution`, the median latency of a forward of `batch` images."""
    __tablename__ = "cost_profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    evaluation_id: Mapped[int | None] = mapped_column(ForeignKey("evaluations.id", ondelete="SET NULL"))
    variant: Mapped[str] = mapped_column(String(128))
    checkpoint: Mapped[str] = mapped_column(String(1024))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    setup: Mapped[str] = mapped_column(String(255), index=True)     # engine.profiling.setup_key
    device_type: Mapped[str] = mapped_column(String(16))             # cpu | cuda
    device: Mapped[str] = mapped_column(String(128))
    threads: Mapped[int | None] = mapped_column(Integer)
    resolution: Mapped[str] = mapped_column(String(32))              # WxH
    batch: Mapped[int] = mapped_column(Integer, default=1)
    precision: Mapped[str] = mapped_column(String(32))               # the model's own: fp32, bf16-autocast, int8
    params: Mapped[int | None] = mapped_column(Integer)
    size_mb: Mapped[float | None] = mapped_column(Float)
    gflops: Mapped[float | None] = mapped_column(Float)              # one image at `resolution`
    latency_ms: Mapped[float | None] = mapped_column(Float)          # one forward of `batch` images
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)


class CheckpointFile(Base):
    """A checkpoint file as training wrote it: its sha256 is checked when it is loaded."""
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)   # resolved absolute path
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))                  # best | last
    run_uid: Mapped[str | None] = mapped_column(String(32))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    written_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)


class RobustnessSweep(Base):
    """One corruption sweep of a checkpoint on a dataset split (`engine.robustness`)."""
    __tablename__ = "robustness_sweeps"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    variant: Mapped[str] = mapped_column(String(128))
    checkpoint: Mapped[str] = mapped_column(String(1024))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(32))
    condition: Mapped[str] = mapped_column(String(32), default="")
    split: Mapped[str] = mapped_column(String(16))
    num_images: Mapped[int] = mapped_column(Integer)
    eval_size: Mapped[str] = mapped_column(String(32))
    library: Mapped[str] = mapped_column(String(64))              # the corruption library and its version
    clean_miou: Mapped[float | None] = mapped_column(Float)
    clean_per_class_iou: Mapped[dict] = mapped_column(JSON)
    mpc: Mapped[float | None] = mapped_column(Float)
    rpc: Mapped[float | None] = mapped_column(Float)
    groups: Mapped[dict] = mapped_column(JSON)                    # group -> mean mIoU over its corruptions
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    results: Mapped[list[CorruptionResult]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True,
        order_by="(CorruptionResult.id)")


class CorruptionResult(Base):
    __tablename__ = "corruption_results"
    id: Mapped[int] = mapped_column(primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("robustness_sweeps.id", ondelete="CASCADE"), index=True)
    corruption: Mapped[str] = mapped_column(String(32))
    group_name: Mapped[str] = mapped_column(String(16))          # noise, blur, weather, digital, held-out
    severity: Mapped[int] = mapped_column(Integer)
    miou: Mapped[float | None] = mapped_column(Float)
    pixel_accuracy: Mapped[float | None] = mapped_column(Float)
    per_class_iou: Mapped[dict] = mapped_column(JSON)


class Benchmark(Base):
    __tablename__ = "benchmarks"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    variant: Mapped[str] = mapped_column(String(128))
    size: Mapped[str] = mapped_column(String(32))
    device: Mapped[str] = mapped_column(String(128))
    threads: Mapped[int | None] = mapped_column(Integer)
    precision: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(64))
    torch_version: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict] = mapped_column(JSON)


class PublishedResult(Base):
    """A published result (a paper's or a model zoo's figures, `engine.published`), never a measured one."""
    __tablename__ = "published_results"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)    # slug of source, model, crop, schedule
    model: Mapped[str] = mapped_column(String(128))
    arch: Mapped[str | None] = mapped_column(String(64))
    backbone: Mapped[str | None] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(32), default="cityscapes")
    split: Mapped[str] = mapped_column(String(16), default="val")
    miou: Mapped[float] = mapped_column(Float)                     # a fraction, as runs' miou
    params: Mapped[int | None] = mapped_column(Integer)
    gflops: Mapped[float | None] = mapped_column(Float)
    gflops_resolution: Mapped[str | None] = mapped_column(String(32))   # WxH the GFLOPs are for
    fps: Mapped[float | None] = mapped_column(Float)
    fps_device: Mapped[str | None] = mapped_column(String(128))
    fps_resolution: Mapped[str | None] = mapped_column(String(32))
    crop: Mapped[str | None] = mapped_column(String(64))
    schedule: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(String(255))
    url: Mapped[str | None] = mapped_column(String(1024))
    note: Mapped[str | None] = mapped_column(Text)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)


# what a published row holds: the table's columns but its own id and when it was loaded
PUBLISHED_FIELDS = tuple(c.name for c in PublishedResult.__table__.columns if c.name not in ("id", "loaded_at"))


def _f(x: Any) -> float | None:
    """Float or None; NaN/inf (e.g. an absent class's IoU) become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _i(x: Any) -> int | None:
    return None if x is None else int(x)


def _jsonable(x: Any) -> Any:
    """Plain JSON values only (numpy scalars -> Python, NaN -> None, Path -> str), so any backend accepts it."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalar
        x = x.item()
    if isinstance(x, float):
        return _f(x)
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)


def _image_row(evaluation_id: int, r: ImageResult) -> dict:
    inter, union = r.counts
    b_inter, b_union = r.boundary_counts
    cells = r.confusion.nonzero()
    return dict(evaluation_id=evaluation_id, position=int(r.index), image=r.image, folder=r.folder,
                image_file=r.image_file, width=int(r.width), height=int(r.height), boundary_px=int(r.boundary_px),
                miou=_f(r.miou), pixel_accuracy=_f(r.pixel_accuracy), boundary_miou=_f(r.boundary_miou),
                intersection=inter.tolist(), union=union.tolist(), boundary_intersection=b_inter.tolist(),
                boundary_union=b_union.tolist(),
                confusion=[[int(g), int(p), int(r.confusion[g, p])] for g, p in zip(*cells)])


def _cost_row(p: Profile, *, run_id, evaluation_id, variant, checkpoint, checkpoint_sha256) -> CostProfile:
    return CostProfile(run_id=run_id, evaluation_id=evaluation_id, variant=variant, checkpoint=str(checkpoint),
                       checkpoint_sha256=checkpoint_sha256, setup=p.setup, device_type=p.device_type, device=p.device,
                       threads=_i(p.threads), resolution=p.resolution, batch=int(p.batch), precision=p.precision,
                       params=_i(p.params), size_mb=_f(p.size_mb), gflops=_f(p.gflops), latency_ms=_f(p.latency_ms),
                       peak_memory_mb=_f(p.peak_memory_mb), created_at=_now())


def recipe_columns(hp: dict) -> dict:
    """The recipe values the leaderboard shows, from a run's stored hyperparameters (a recipe's
    `to_dict()`; older or hand-written runs may lack any part): optimizer, lr, weight_decay,
    epochs, dropout, batch_size, train_size ("WxH") and description."""
    def get(*path):
        d = hp
        for key in path:
            d = d.get(key) if isinstance(d, dict) else None
        return d

    size = get("data", "size")
    return {"optimizer": get("schedule", "optimizer", "name"), "lr": get("schedule", "optimizer", "lr"),
            "weight_decay": get("schedule", "optimizer", "weight_decay"), "epochs": get("schedule", "epochs"),
            "dropout": get("model", "dropout"), "batch_size": get("data", "batch_size"),
            "train_size": f"{size[0]}x{size[1]}" if isinstance(size, list) and len(size) == 2 else None,
            "description": get("description")}


def _as_dict(obj: Base) -> dict:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


def _evaluation_dict(ev: Evaluation) -> dict:
    return _as_dict(ev) | {"per_class_iou": {c.class_name: c.iou for c in ev.class_rows}}


def _parse(url: str):
    try:
        return make_url(url)
    except ArgumentError:
        raise StoreUrlError(f"{url!r} is not a database URL; use e.g. sqlite:///results.db or "
                            f"postgresql+psycopg://user@host/db (RESULTS_DB or --db)") from None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    u = _parse(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.database.startswith("file:"):
        return None
    return Path(u.database).expanduser()


BACKENDS = ("sqlite", "postgresql")


def _engine_for(url: str):
    u = _parse(url)
    if u.get_backend_name() not in BACKENDS:
        raise StoreUrlError(f"{u.render_as_string(hide_password=True)}: the results store runs on SQLite or "
                            f"PostgreSQL (sqlite:///results.db, postgresql+psycopg://user@host/db), not "
                            f"{u.get_backend_name()}")
    if u.get_backend_name() == "postgresql":
        # reads see one snapshot (REPEATABLE READ); Store._writer switches to READ COMMITTED.
        try:
            return create_engine(url, pool_pre_ping=True, isolation_level="REPEATABLE READ")
        except (NoSuchModuleError, ImportError) as e:
            raise StoreUrlError(f"{u.render_as_string(hide_password=True)}: no driver for this database ({e}); "
                                f"for PostgreSQL use postgresql+psycopg://... with psycopg installed") from None
    if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    eng = create_engine(url)

    @event.listens_for(eng, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # the only SQLite-specific SQL in the project
        dbapi_conn.isolation_level = None  # transactions are begun below, not implicitly by the sqlite3 module
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(eng, "begin")
    def _sqlite_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return eng


def _move_evaluation_costs(conn) -> None:
    """Schema 6 -> 7: each evaluation's cost columns (profiled at the evaluation size) become a
    cost_profiles row of that setup (CUDA where the precision was bf16 autocast, batch 1)."""
    ev = Evaluation.__table__
    rows = conn.execute(select(ev).where(ev.c.latency_ms.is_not(None) | ev.c.gflops.is_not(None))).mappings().all()
    out = []
    for r in rows:
        kind = "cuda" if str(r["latency_precision"] or "").startswith("bf16") else "cpu"
        resolution = r["latency_resolution"] or r["eval_size"]
        device = r["latency_device"] or "unknown"
        out.append(dict(run_id=r["run_id"], evaluation_id=r["id"], variant=r["variant"], checkpoint=r["checkpoint"],
                        checkpoint_sha256=r["checkpoint_sha256"], device_type=kind, device=device,
                        threads=r["latency_threads"], resolution=resolution, batch=1,
                        setup=setup_key(kind, device, r["latency_threads"], resolution, 1),
                        precision=r["latency_precision"] or "fp32", params=r["params"], size_mb=r["size_mb"],
                        gflops=r["gflops"], latency_ms=r["latency_ms"], peak_memory_mb=r["peak_memory_mb"],
                        created_at=r["created_at"]))
    if out:
        conn.execute(CostProfile.__table__.insert(), out)


_WRITE = "segbench_write"  # execution option of Store._writer: its transactions take the write lock first
_SCHEMA_LOCK = 0x5E6BE7C4  # pg_advisory_xact_lock key held while creating or migrating the schema


def _upsert(conn, table, values: dict, key: list[str]) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE (SQLite and PostgreSQL both have it)."""
    mod = {"postgresql": pg_dialect, "sqlite": sqlite_dialect}[conn.dialect.name]
    stmt = mod.insert(table).values(**values)
    conn.execute(stmt.on_conflict_do_update(index_elements=key,
                                            set_={k: stmt.excluded[k] for k in values if k not in key}))


class Store:
    def __init__(self, url: str | None = None):
        self.url = settings.db_url(url)
        self._engine = _engine_for(self.url)
        write_opts = {"isolation_level": "READ COMMITTED"} if self._engine.dialect.name == "postgresql" else {}
        self._writer = self._engine.execution_options(**{_WRITE: True}, **write_opts)
        for attempt in range(3):  # two processes creating a fresh database at once: the loser retries
            try:
                if self._version() != str(SCHEMA_VERSION):  # an up-to-date store is only read, never written
                    self._create_or_migrate()
                break
            except (IntegrityError, OperationalError, ProgrammingError) as e:
                if attempt == 2:
                    if isinstance(e, OperationalError) and self._engine.dialect.name != "sqlite":
                        shown = make_url(self.url).render_as_string(hide_password=True)
                        raise StoreConnectError(f"cannot open results store {shown}: "
                                                f"{str(e.orig).strip().splitlines()[0]}") from None
                    raise
                time.sleep(0.2)

    def _version(self, conn=None) -> str | None:
        """meta.schema_version; None for an empty database. Raises StoreVersionError for one this
        code can neither use nor migrate."""
        if conn is None:
            with self._engine.connect() as c:
                return self._version(c)
        version = (conn.scalar(select(Meta.value).where(Meta.key == "schema_version"))
                   if inspect(conn).has_table(Meta.__tablename__) else None)
        if version is not None and version != str(SCHEMA_VERSION) and version not in MIGRATABLE:
            shown = make_url(self.url).render_as_string(hide_password=True)
            raise StoreVersionError(
                f"results store {shown} has schema version {version}, but this code expects schema version "
                f"{SCHEMA_VERSION}; migrate the database or point RESULTS_DB at a new one")
        return version

    def _create_or_migrate(self) -> None:
        """Create the tables (a new store) or add the missing ones (an older version in MIGRATABLE), and
        record SCHEMA_VERSION, in one write transaction (on SQLite BEGIN IMMEDIATE: a second process
        opening the same old store waits for the lock, then finds it migrated)."""
        with self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":  # a second process creating/migrating waits here, then finds it done
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            version = self._version(conn)
            if version == str(SCHEMA_VERSION):
                return
            Base.metadata.create_all(conn)
            if version is not None:
                for table, columns in ADDED_COLUMNS.items():
                    have = {c["name"] for c in inspect(conn).get_columns(table)}
                    for name, ddl in columns:
                        if name not in have:
                            conn.execute(text(f'ALTER TABLE {table} ADD COLUMN "{name}" {ddl}'))
            if version is not None and int(version) < 7:
                _move_evaluation_costs(conn)
            if version is None:
                conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            else:
                conn.execute(Meta.__table__.update().where(Meta.key == "schema_version")
                             .values(value=str(SCHEMA_VERSION)))

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writes (each its own short transaction) ----
    def start_run(self, *, variant, arch, backbone, profile, hyperparameters: dict, dataset, data_root,
                  train_images, val_images, device, code_version, uid: str | None = None,
                  parent_run_id: int | None = None, derivation: dict | None = None,
                  source: dict | None = None) -> int:
        """A new run, "running"; a derived model's run names its `parent_run_id` and its `derivation`; a
        run imported from a published checkpoint its `source` (format, file, sha256, url, published_miou)."""
        uid = uid or uuid.uuid4().hex
        if len(uid) > 32:
            raise ValueError(f"run uid must be at most 32 characters, got {uid!r}")
        run = Run(uid=uid, variant=variant, arch=arch, backbone=backbone, profile=profile,
                  hyperparameters=_jsonable(hyperparameters), dataset=dataset, data_root=str(data_root),
                  train_images=int(train_images), val_images=int(val_images), device=str(device),
                  code_version=str(code_version), status="running", epochs_done=0, started_at=_now(),
                  parent_run_id=parent_run_id, derivation=None if derivation is None else _jsonable(derivation),
                  source=None if source is None else _jsonable(source))
        with Session(self._writer) as s, s.begin():
            s.add(run)
            s.flush()
            return run.id

    def log_epoch(self, run_id, *, epoch, iteration, train_loss, val_loss, val_miou, val_pixel_accuracy,
                  lr, seconds, images_per_second) -> None:
        """Upsert on (run_id, epoch); also keeps runs.epochs_done and runs.best_miou current."""
        values = dict(iteration=int(iteration), train_loss=_f(train_loss), val_loss=_f(val_loss),
                      val_miou=_f(val_miou), val_pixel_accuracy=_f(val_pixel_accuracy), lr=_f(lr),
                      seconds=_f(seconds), images_per_second=_f(images_per_second), logged_at=_now())
        with Session(self._writer) as s, s.begin():
            run = s.get(Run, run_id, with_for_update=True)  # PostgreSQL: one writer of this run's epochs at a time
            if run is None:
                raise KeyError(f"no run with id {run_id}")
            row = s.scalar(select(Epoch).where(Epoch.run_id == run_id, Epoch.epoch == int(epoch)))
            if row is None:
                s.add(Epoch(run_id=run_id, epoch=int(epoch), **values))
            else:
                for k, v in values.items():
                    setattr(row, k, v)
            s.flush()
            run.epochs_done = s.scalar(select(func.count()).where(Epoch.run_id == run_id))
            run.best_miou = s.scalar(select(func.max(Epoch.val_miou)).where(Epoch.run_id == run_id))

    def finish_run(self, run_id, *, status, error=None, train_seconds=None, images_per_second=None,
                   best_miou=None, checkpoint=None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        with Session(self._writer) as s, s.begin():
            run = s.get(Run, run_id, with_for_update=True)
            if run is None:
                raise KeyError(f"no run with id {run_id}")
            run.status, run.error, run.finished_at = status, error, _now()
            run.train_seconds, run.images_per_second = _f(train_seconds), _f(images_per_second)
            if best_miou is not None:
                run.best_miou = _f(best_miou)
            if checkpoint is not None:
                run.checkpoint = str(checkpoint)

    def update_derivation(self, run_id, **fields) -> None:
        """Add figures to a derived run's `derivation` (e.g. the mIoU before and after fine-tuning)."""
        with Session(self._writer) as s, s.begin():
            run = s.get(Run, run_id, with_for_update=True)
            if run is None:
                raise KeyError(f"no run with id {run_id}")
            run.derivation = {**(run.derivation or {}), **_jsonable(fields)}

    def reopen_run(self, run_id) -> None:
        """A resumed run is running again (its epochs so far are kept)."""
        with Session(self._writer) as s, s.begin():
            run = s.get(Run, run_id, with_for_update=True)
            if run is None:
                raise KeyError(f"no run with id {run_id}")
            run.status, run.error, run.finished_at = "running", None, None

    def record_checkpoint(self, path, sha256: str, *, kind: str, run_uid: str | None = None,
                          run_id: int | None = None) -> None:
        """Upsert by resolved path: the file's sha256 as just written (checked by checkpoints.load)."""
        values = dict(path=str(Path(path).resolve()), sha256=sha256, kind=kind, run_uid=run_uid, run_id=run_id,
                      written_at=_now())
        with Session(self._writer) as s, s.begin():
            _upsert(s.connection(), CheckpointFile.__table__, values, ["path"])

    def checkpoint_files(self) -> list[dict]:
        """Every checkpoint file recorded, with the dataset of the run that wrote it ("dataset": None
        when that run is not in this store)."""
        with Session(self._engine) as s:
            rows = s.execute(select(CheckpointFile, Run.dataset).outerjoin(Run, Run.uid == CheckpointFile.run_uid)
                             .order_by(CheckpointFile.id))
            return [_as_dict(c) | {"dataset": dataset} for c, dataset in rows]

    def checkpoint_record(self, path) -> dict | None:
        """What `record_checkpoint` recorded for this file (path resolved), or None."""
        with Session(self._engine) as s:
            row = s.scalar(select(CheckpointFile).where(CheckpointFile.path == str(Path(path).resolve())))
            return None if row is None else _as_dict(row)

    def record_evaluation(self, *, run_id: int | None, variant: str, checkpoint, checkpoint_sha256: str | None,
                          dataset: str, split: str, eval_size: str, metrics: Metrics,
                          profiles: list[Profile] = (), condition: str = "",
                          images: list[ImageResult] | None = None, source: dict | None = None,
                          predictions_dir: str | None = None) -> int:
        """One evaluation (`engine.metrics.Metrics`) with the cost profiles measured beside it
        (`engine.profiling.Profile`, one per deployment setup: cost_profiles rows), its per-class IoUs,
        its images' rows (`engine.metrics.ImageResult`), where they came from (`source`: kind, root,
        label_format) and the folder of its kept predictions, all in one transaction."""
        unknown = set(metrics.per_class_iou) - set(CLASS_NAMES)
        if unknown:
            raise ValueError(f"unknown class names in per_class_iou: {sorted(unknown)}")
        source = source or {}
        ev = Evaluation(run_id=run_id, variant=variant, checkpoint=str(checkpoint),
                        checkpoint_sha256=checkpoint_sha256, dataset=dataset, condition=condition or "",
                        split=split, num_images=int(metrics.num_images), eval_size=str(eval_size),
                        miou=_f(metrics.miou),
                        pixel_accuracy=_f(metrics.pixel_accuracy), mean_loss=_f(metrics.mean_loss),
                        created_at=_now(), confusion=_jsonable(metrics.confusion),
                        boundary_confusion=_jsonable(metrics.boundary_confusion),
                        boundary_fraction=_f(metrics.boundary_fraction), data_kind=source.get("kind"),
                        data_root=source.get("root"), label_format=source.get("label_format"),
                        predictions_dir=None if predictions_dir is None else str(predictions_dir))
        ev.class_rows = [ClassIoU(class_id=i, class_name=name, iou=_f(metrics.per_class_iou[name]))
                         for i, name in enumerate(CLASS_NAMES) if name in metrics.per_class_iou]
        with Session(self._writer) as s, s.begin():
            s.add(ev)
            s.flush()
            if images:
                s.execute(ImageResultRow.__table__.insert(), [_image_row(ev.id, r) for r in images])
            for prof in profiles:
                s.add(_cost_row(prof, run_id=run_id, evaluation_id=ev.id, variant=variant, checkpoint=checkpoint,
                                checkpoint_sha256=checkpoint_sha256))
            return ev.id

    def record_profile(self, profile: Profile, *, run_id: int | None, variant: str, checkpoint,
                       checkpoint_sha256: str | None) -> int:
        """One cost profile of a checkpoint on one setup (`python -m engine profile`)."""
        row = _cost_row(profile, run_id=run_id, evaluation_id=None, variant=variant, checkpoint=checkpoint,
                        checkpoint_sha256=checkpoint_sha256)
        with Session(self._writer) as s, s.begin():
            s.add(row)
            s.flush()
            return row.id

    def record_robustness(self, *, run_id: int | None, variant: str, checkpoint, checkpoint_sha256: str | None,
                          dataset: str, condition: str = "", split: str, eval_size: str, library: str,
                          clean: Metrics, mpc: float | None, rpc: float | None, groups: dict[str, float],
                          results: list[dict]) -> int:
        """One corruption sweep: the clean metrics, mPC, rPC, the group means, and one row per
        (corruption, severity) from `results` (dicts with corruption, group, severity and `metrics`)."""
        sweep = RobustnessSweep(
            run_id=run_id, variant=variant, checkpoint=str(checkpoint), checkpoint_sha256=checkpoint_sha256,
            dataset=dataset, condition=condition or "", split=split, num_images=int(clean.num_images),
            eval_size=str(eval_size), library=library, clean_miou=_f(clean.miou),
            clean_per_class_iou=_jsonable(clean.per_class_iou), mpc=_f(mpc), rpc=_f(rpc), groups=_jsonable(groups),
            created_at=_now())
        sweep.results = [CorruptionResult(corruption=r["corruption"], group_name=r["group"], severity=int(r["severity"]),
                                          miou=_f(r["metrics"].miou), pixel_accuracy=_f(r["metrics"].pixel_accuracy),
                                          per_class_iou=_jsonable(r["metrics"].per_class_iou))
                         for r in results]
        with Session(self._writer) as s, s.begin():
            s.add(sweep)
            s.flush()
            return sweep.id

    def record_benchmark(self, *, kind, variant, size, device, threads, precision, backend, torch_version,
                         metrics: dict) -> int:
        b = Benchmark(kind=kind, variant=variant, size=str(size), device=str(device), threads=_i(threads),
                      precision=precision, backend=backend, torch_version=str(torch_version),
                      metrics=_jsonable(metrics), created_at=_now())
        with Session(self._writer) as s, s.begin():
            s.add(b)
            s.flush()
            return b.id

    def mark_stale_running(self, older_than_s: float) -> int:
        """Runs still "running" with no activity (start or last logged epoch) for more than
        `older_than_s` seconds were left by a killed process: mark them "interrupted"."""
        cutoff = _now() - timedelta(seconds=older_than_s)
        last_epoch = (select(Epoch.run_id, func.max(Epoch.logged_at).label("last"))
                      .group_by(Epoch.run_id).subquery())
        with Session(self._writer) as s, s.begin():
            rows = s.execute(select(Run, last_epoch.c.last).outerjoin(last_epoch, last_epoch.c.run_id == Run.id)
                             .where(Run.status == "running").with_for_update(of=Run)).all()
            stale = [run for run, last in rows if max(run.started_at, last or run.started_at) < cutoff]
            for run in stale:
                run.status = "interrupted"
                run.error = run.error or f"still 'running' with no activity for over {older_than_s:g} s (process killed?)"
            return len(stale)

    # ---- reads ----
    def run(self, run_id) -> dict | None:
        with Session(self._engine) as s:
            run = s.get(Run, run_id)
            return None if run is None else _as_dict(run)

    def run_by_uid(self, uid) -> dict | None:
        with Session(self._engine) as s:
            run = s.scalar(select(Run).where(Run.uid == uid))
            return None if run is None else _as_dict(run)

    def _run_query(self, dataset, arch, status):
        q = select(Run).order_by(Run.id)
        for col, val in ((Run.dataset, dataset), (Run.arch, arch), (Run.status, status)):
            if val is not None:
                q = q.where(col == val)
        return q

    def runs(self, *, dataset=None, arch=None, status=None) -> list[dict]:
        with Session(self._engine) as s:
            return [_as_dict(r) for r in s.scalars(self._run_query(dataset, arch, status))]

    def epochs(self, run_id) -> list[dict]:
        with Session(self._engine) as s:
            return [_as_dict(e) for e in s.scalars(select(Epoch).where(Epoch.run_id == run_id).order_by(Epoch.epoch))]

    def evaluations(self, run_id=None, *, dataset=None, ids=None, checkpoint_sha256=None) -> list[dict]:
        """Every evaluation (oldest first), with its per-class IoUs and `images` (how many per-image
        rows it has); of one run, dataset, checkpoint file (its sha256) and/or these ids."""
        counts = (select(ImageResultRow.evaluation_id, func.count().label("n"))
                  .group_by(ImageResultRow.evaluation_id).subquery())
        q = select(Evaluation, counts.c.n).outerjoin(counts, counts.c.evaluation_id == Evaluation.id).order_by(Evaluation.id)
        for col, val in ((Evaluation.run_id, run_id), (Evaluation.dataset, dataset),
                         (Evaluation.checkpoint_sha256, checkpoint_sha256)):
            if val is not None:
                q = q.where(col == val)
        if ids is not None:
            q = q.where(Evaluation.id.in_(list(ids)))
        with Session(self._engine) as s:
            return [_evaluation_dict(ev) | {"images": n or 0} for ev, n in s.execute(q)]

    def evaluation(self, evaluation_id) -> dict | None:
        """One evaluation as `evaluations` gives it, or None."""
        return next(iter(self.evaluations(ids=[evaluation_id])), None)

    def image_results(self, evaluation_id) -> list[dict]:
        """The per-image rows of an evaluation, in split order (`position`)."""
        with Session(self._engine) as s:
            return [_as_dict(r) for r in s.scalars(select(ImageResultRow).where(
                ImageResultRow.evaluation_id == evaluation_id).order_by(ImageResultRow.position))]

    @staticmethod
    def _latest(s: Session, table, run_ids=None) -> dict[int, Any]:
        """run_id -> that run's most recent row of `table` (Evaluation, RobustnessSweep) on the dataset
        the run was trained on, without a condition (other streets never stand in for it)."""
        latest = (select(func.max(table.id)).join(Run, Run.id == table.run_id)
                  .where(table.dataset == Run.dataset, table.condition == "").group_by(table.run_id))
        if run_ids is not None:
            latest = latest.where(table.run_id.in_(list(run_ids)))
        return {row.run_id: row for row in s.scalars(select(table).where(table.id.in_(latest)))}

    def _latest_evaluations(self, s: Session, run_ids=None) -> dict[int, Evaluation]:
        return self._latest(s, Evaluation, run_ids)

    def cost_profiles(self, run_ids=None, *, setup: str | None = None) -> list[dict]:
        """Every cost profile (oldest first), of these runs and/or on this setup, each with its `setup_label`."""
        q = select(CostProfile).order_by(CostProfile.id)
        if run_ids is not None:
            q = q.where(CostProfile.run_id.in_(list(run_ids)))
        if setup is not None:
            q = q.where(CostProfile.setup == setup)
        with Session(self._engine) as s:
            return [_as_dict(c) | {"setup_label": setup_label(c.setup)} for c in s.scalars(q)]

    def cost_setups(self) -> list[dict]:
        """The setups costs were measured on: `setup` (the key), `label`, its parts (device_type,
        device, threads, resolution, batch), `runs` (how many runs have a latency there) and `latest`
        (when last measured); the setup most runs were measured on first (then one at the first
        deployment resolution, `settings.deploy_sizes()`, then the latest)."""
        q = (select(CostProfile.setup, func.count(func.distinct(CostProfile.run_id)), func.max(CostProfile.created_at))
             .where(CostProfile.latency_ms.is_not(None)).group_by(CostProfile.setup))
        with Session(self._engine) as s:
            rows = [{"setup": key, "label": setup_label(key), **parse_setup(key), "runs": n,
                     "latest": latest} for key, n, latest in s.execute(q)]
        w, h = settings.deploy_sizes()[0]
        return sorted(rows, key=lambda r: (-r["runs"], r["resolution"] != f"{w}x{h}",
                                           -(r["latest"].timestamp() if r["latest"] else 0), r["setup"]))

    def default_setup(self) -> str | None:
        """The setup a cost query uses when none is named: the one most runs were measured on."""
        setups = self.cost_setups()
        return setups[0]["setup"] if setups else None

    def leaderboard(self, *, dataset=None, arch=None, status=None, setup: str | None = None) -> list[dict]:
        """One row per run joined with its latest evaluation, sorted by mIoU descending (None last). A
        derived run's row also has `parent_run_id`, `parent_variant`, `method` and `ratio` (None for a
        trained run) and its whole `derivation`.

        Costs are the run's latest profile on `setup` (default: `default_setup()`), named in every row
        (`cost_setup`, `cost_setup_label`): `latency_ms` and its `latency_*` parts, `gflops` (at the
        setup's resolution; from another device's profile at that resolution when the run has none on
        this one: FLOPs depend on the resolution alone), `latency_resolution`; `params` and `size_mb`
        (the checkpoint's, on any setup). A run not measured on the setup has no latency there."""
        metrics = ("miou", "pixel_accuracy", "eval_size", "split", "num_images")
        rows = []
        with Session(self._engine) as s:
            runs = list(s.scalars(self._run_query(dataset, arch, status)))
            latest = self._latest_evaluations(s, [r.id for r in runs])
            sweeps = self._latest(s, RobustnessSweep, [r.id for r in runs])
            parents = {r.id: r.variant for r in s.scalars(select(Run).where(
                Run.id.in_([r.parent_run_id for r in runs if r.parent_run_id is not None])))}
            costs = list(s.scalars(select(CostProfile).where(CostProfile.run_id.in_([r.id for r in runs]))
                                   .order_by(CostProfile.id)))
        setup = setup or self.default_setup()
        resolution = parse_setup(setup)["resolution"] if setup else None
        any_cost, on_setup, flops_at = {}, {}, {}
        for c in costs:  # oldest first: the latest of each wins
            any_cost[c.run_id] = c
            if c.setup == setup:
                on_setup[c.run_id] = c
            if c.resolution == resolution and c.gflops is not None:
                flops_at[c.run_id] = c.gflops
        for r in runs:
            hp, derivation = r.hyperparameters or {}, r.derivation or {}
            ev, sweep = latest.get(r.id), sweeps.get(r.id)
            cost, own = on_setup.get(r.id), any_cost.get(r.id)
            rows.append({
                "run_id": r.id, "uid": r.uid, "variant": r.variant, "arch": r.arch, "backbone": r.backbone,
                "dataset": r.dataset, "status": r.status, "profile": r.profile, "device": r.device,
                "hyperparameters": hp, **recipe_columns(hp), "epochs_done": r.epochs_done, "best_miou": r.best_miou,
                **{m: (getattr(ev, m) if ev is not None else None) for m in metrics},
                "evaluation_id": ev.id if ev is not None else None,
                "params": own.params if own else None, "size_mb": own.size_mb if own else None,
                "gflops": flops_at.get(r.id), "latency_ms": cost.latency_ms if cost else None,
                "latency_device": cost.device if cost else None, "latency_threads": cost.threads if cost else None,
                "latency_precision": cost.precision if cost else None,
                "latency_resolution": resolution if r.id in flops_at or cost else None,
                "latency_batch": cost.batch if cost else None, "peak_memory_mb": cost.peak_memory_mb if cost else None,
                "cost_setup": setup, "cost_setup_label": setup_label(setup) if setup else None,
                "mpc": sweep.mpc if sweep else None, "rpc": sweep.rpc if sweep else None,
                "robustness_id": sweep.id if sweep else None,
                "train_seconds": r.train_seconds, "images_per_second": r.images_per_second,
                "started_at": r.started_at, "finished_at": r.finished_at, "error": r.error,
                "checkpoint": r.checkpoint, "parent_run_id": r.parent_run_id,
                "parent_variant": parents.get(r.parent_run_id), "method": derivation.get("method"),
                "ratio": derivation.get("ratio"), "derivation": r.derivation, "source": r.source,
            })
        rows.sort(key=lambda d: (d["miou"] is None, -(d["miou"] or 0.0), d["run_id"]))
        return rows

    def class_iou_table(self, run_ids=None) -> list[dict]:
        """Per-class IoU of each run's latest evaluation: rows run_id, variant, class_id, class_name, iou."""
        with Session(self._engine) as s:
            latest = self._latest_evaluations(s, run_ids)
            return [{"run_id": rid, "variant": ev.variant, "class_id": c.class_id, "class_name": c.class_name,
                     "iou": c.iou}
                    for rid, ev in sorted(latest.items()) for c in ev.class_rows]

    def robustness(self, run_ids=None, *, latest: bool = False) -> list[dict]:
        """Corruption sweeps (oldest first), each with its `results` rows (corruption, group, severity,
        miou, pixel_accuracy, per_class_iou); `latest`: only each run's latest in-distribution sweep."""
        with Session(self._engine) as s:
            if latest:
                sweeps = sorted(self._latest(s, RobustnessSweep, run_ids).values(), key=lambda w: w.id)
            else:
                q = select(RobustnessSweep).order_by(RobustnessSweep.id)
                if run_ids is not None:
                    q = q.where(RobustnessSweep.run_id.in_(list(run_ids)))
                sweeps = list(s.scalars(q))
            return [_as_dict(w) | {"results": [_as_dict(r) | {"group": r.group_name} for r in w.results]}
                    for w in sweeps]

    def load_published(self, rows: list[dict]) -> int:
        """Upsert published results by `key` (dicts with PUBLISHED_FIELDS; `engine.published.read_table`),
        all in one transaction; returns how many rows were written."""
        values = []
        for row in rows:
            if not row.get("key") or not row.get("model") or row.get("miou") is None:
                raise ValueError(f"a published result needs a key, a model and an mIoU: {row!r}")
            v = {k: row.get(k) for k in PUBLISHED_FIELDS}
            v.update(dataset=v["dataset"] or "cityscapes", split=v["split"] or "val", miou=_f(v["miou"]),
                     params=_i(v["params"]), gflops=_f(v["gflops"]), fps=_f(v["fps"]), loaded_at=_now())
            values.append(v)
        with Session(self._writer) as s, s.begin():
            conn = s.connection()
            for v in values:
                _upsert(conn, PublishedResult.__table__, v, ["key"])
        return len(values)

    def published(self, dataset=None) -> list[dict]:
        """The published results (never mixed with measured runs), best mIoU first."""
        q = select(PublishedResult).order_by(PublishedResult.miou.desc(), PublishedResult.id)
        if dataset is not None:
            q = q.where(PublishedResult.dataset == dataset)
        with Session(self._engine) as s:
            return [_as_dict(p) for p in s.scalars(q)]

    def benchmarks(self, kind=None) -> list[dict]:
        q = select(Benchmark).order_by(Benchmark.id)
        if kind is not None:
            q = q.where(Benchmark.kind == kind)
        with Session(self._engine) as s:
            return [_as_dict(b) for b in s.scalars(q)]


def copy_store(source: str | None, target: str) -> dict[str, int]:
    """Copy every row of the store at `source` (default RESULTS_DB) into the database at `target`, ids
    and relations as they are, in one write transaction; returns {table: rows copied}. The target's
    schema is created when it is empty; a target already holding results (any row besides meta's
    schema version) is refused with StoreCopyError, so ids never clash. On PostgreSQL the id sequences
    are moved past the copied ids, so the next run written there gets a fresh id."""
    src_url = settings.db_url(source)
    path = sqlite_path(src_url)
    if path is not None and not path.is_file():
        raise StoreUrlError(f"no results store at {path} (the source: --db or RESULTS_DB)")
    if _parse(src_url) == _parse(target):
        raise StoreCopyError("the source and the target are the same database")
    tables = [t for t in Base.metadata.sorted_tables if t.name != Meta.__tablename__]  # parents before children
    with Store(src_url) as src, Store(target) as dst:
        shown = make_url(dst.url).render_as_string(hide_password=True)
        with dst._writer.begin() as out, src._engine.connect() as inp, inp.begin():
            if out.dialect.name == "postgresql":  # no second copy into the same database at once
                out.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            held = {t.name: n for t in tables if (n := out.scalar(select(func.count()).select_from(t)))}
            if held:
                raise StoreCopyError(f"the target {shown} already holds results ("
                                     + ", ".join(f"{n} {name}" for name, n in held.items())
                                     + "); copy into an empty database")
            counts = {}
            for t in tables:
                rows = [dict(r._mapping) for r in inp.execute(select(t).order_by(*t.primary_key.columns))]
                for i in range(0, len(rows), 1000):
                    out.execute(t.insert(), rows[i:i + 1000])
                counts[t.name] = len(rows)
            meta = Meta.__table__
            for key, value in inp.execute(select(meta.c.key, meta.c.value).where(meta.c.key != "schema_version")):
                out.execute(meta.delete().where(meta.c.key == key))
                out.execute(meta.insert().values(key=key, value=value))
            if out.dialect.name == "postgresql":  # explicit ids leave the sequences behind: move them past
                for t in tables:
                    out.execute(text(f"SELECT setval(pg_get_serial_sequence('{t.name}', 'id'), "
                                     f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {t.name}"))
        return counts

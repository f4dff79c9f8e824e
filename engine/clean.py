"""`python -m engine clean` (`make clean`): remove what the demo made, and nothing a user made.

Removed:
- the built-in synthetic scenes (`data/synthetic/` and the other layouts' `data/synthetic-<kind>/`;
  any command that needs them writes them again) and the default corrupted-image cache
  (`data/corruption-cache/`, refilled on demand);
- each checkpoint the results store records as written by a run on the synthetic scenes, when the
  file still has the sha256 recorded then (a real training run that later wrote the same
  `weights/<variant>/best.pt` changed it: kept), with the ONNX export made from it, and its
  variant folder when nothing else is left in it;
- the predictions kept by evaluations on the synthetic scenes (`evaluate --keep-predictions`);
- the results store, when it is a SQLite file and every run in it is on the synthetic scenes.
Everything else stays and is listed with the reason: checkpoints trained on other data or unknown to
the store, a store that holds other runs, a PostgreSQL store (never removed).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from engine import checkpoints, settings
from engine.store import Store, sqlite_path

DEMO_DATASET = "synthetic"


@dataclass
class CleanPlan:
    remove: list[Path] = field(default_factory=list)
    keep: list[tuple[Path | str, str]] = field(default_factory=list)   # (what, why)


def plan_clean(db: str | None = None, weights_dir=None) -> CleanPlan:
    """What `clean` removes and what it keeps (nothing is touched here)."""
    plan = CleanPlan()
    for folder in [settings.synthetic_root(kind) for kind in settings.DATASET_VARS] + [settings.corruption_cache(default=True)]:
        if folder.exists():
            plan.remove.append(folder)
    url = settings.db_url(db)
    db_file = sqlite_path(url)
    records, runs, evaluations = {}, [], []
    if db_file is None or db_file.is_file():
        with Store(url) as store:
            records = {Path(r["path"]): r for r in store.checkpoint_files()}
            runs, evaluations = store.runs(), store.evaluations()
    for ev in evaluations:
        kept = Path(ev["predictions_dir"]) if ev.get("predictions_dir") else None
        if kept is None or not kept.is_dir():
            continue
        if ev["dataset"].startswith(DEMO_DATASET):
            plan.remove.append(kept)
        else:
            plan.keep.append((kept, f"predictions kept by an evaluation on {ev['dataset']}"))
    for ckpt in sorted(settings.weights_dir(weights_dir).glob("*/*.pt")):
        record = records.get(ckpt.resolve())
        if record is None:
            plan.keep.append((ckpt, "not a checkpoint the results store knows"))
        elif record["dataset"] != DEMO_DATASET:
            plan.keep.append((ckpt, f"trained on {record['dataset'] or 'data the store does not know'}"))
        elif checkpoints.sha256(ckpt) != record["sha256"]:
            plan.keep.append((ckpt, "changed since the demo wrote it"))
        else:
            plan.remove.append(ckpt)
            onnx = ckpt.with_suffix(".onnx")
            if onnx.is_file() and _exported_from(onnx) == record["sha256"]:
                plan.remove.append(onnx)
    other = sorted({r["dataset"] for r in runs} - {DEMO_DATASET})
    if db_file is None:
        plan.keep.append((_shown(url), "a database server's store is never removed"))
    elif db_file.is_file() and other:
        plan.keep.append((db_file, f"holds runs on {', '.join(other)}"))
    elif db_file.is_file():
        plan.remove += [p for p in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")) if p.exists()]
    return plan


def _exported_from(onnx: Path) -> str | None:
    from engine.onnx_backend import recorded_sha256

    return recorded_sha256(onnx)


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def clean(plan: CleanPlan) -> None:
    """Remove the plan's files and folders, then the variant folders its checkpoints leave empty."""
    folders = set()
    for path in plan.remove:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
            if path.suffix in (".pt", ".onnx"):
                folders.add(path.parent)
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

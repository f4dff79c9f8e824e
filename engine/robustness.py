"""Corruption robustness: the ImageNet-C / Cityscapes-C protocol on a dataset split.

    sweep = run_sweep(model, dataset, dev, corruptions=select("benchmark"), severities=(1, 2, 3, 4, 5))
    sweep.mpc, sweep.rpc, sweep.groups, sweep.results

The corruptions are those of the `imagecorruptions` library (its maintained fork
`imagecorruptions-imaug`, which runs on NumPy 2 and scikit-image >= 0.19 and takes seeds): 15
benchmark corruptions in four groups (noise, blur, weather, digital) and 4 held-out ones, each at
severities 1-5. A corruption is applied to the image at its own full resolution, seeded by (image
stem, corruption, severity), so two runs give identical pixels; labels are untouched and the
evaluation is `evaluate.evaluate_model`'s (full-resolution labels, one confusion matrix per
corruption and severity; under torchrun the images are sharded and the matrices summed).

mPC is the mean mIoU over the benchmark corruptions and severities swept (over every corruption
swept when none of them is a benchmark one), rPC = mPC / clean mIoU (Michaelis et al. 2019;
Kamann & Rother 2020). Held-out corruptions are reported as their own group.

Corrupted images are cached as PNG (lossless: a cached image equals a fresh one) under
`settings.corruption_cache()`, keyed by the image file (resolved path, size, mtime), the
corruption, the severity and the library version; files are written under a temporary name and
renamed, so two processes filling the cache at once never read a partial file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from engine import distributed, settings
from engine.data import open_dataset
from engine.data.base import read_label
from engine.data.transforms import EvalTransform, eval_collate
from engine.errors import UserError
from engine.evaluate import full_resolution, load_checkpoint
from engine.metrics import ConfusionMatrix, Metrics

LIBRARY = "imagecorruptions-imaug"
GROUP_NAMES = ("noise", "blur", "weather", "digital")
HELD_OUT = "held-out"
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 32  # the library refuses smaller images


class CorruptionError(UserError, ValueError):
    """An unknown corruption or group, or a severity outside 1-5."""


@lru_cache(maxsize=1)
def _library():
    import imagecorruptions  # NumPy/SciPy/numba: imported only when a corruption is asked for

    return imagecorruptions


def library_version() -> str:
    return f"{LIBRARY} {importlib.metadata.version(LIBRARY)}"


@lru_cache(maxsize=1)
def groups() -> dict[str, tuple[str, ...]]:
    """group -> its corruptions, as the library lists them (the four benchmark groups, then held-out)."""
    lib = _library()
    return {**{g: tuple(lib.get_corruption_names(g)) for g in GROUP_NAMES},
            HELD_OUT: tuple(lib.get_corruption_names("validation"))}


def group_of(corruption: str) -> str:
    return next(g for g, names in groups().items() if corruption in names)


def benchmark_names() -> tuple[str, ...]:
    return tuple(name for g in GROUP_NAMES for name in groups()[g])


def select(spec: str | list[str] | tuple[str, ...] = "benchmark") -> list[str]:
    """Corruption names from a spec: 'benchmark' (the 15), 'all' (+ the 4 held-out), a group name,
    or corruption names; items may be mixed ('noise,fog'). Order: the library's, duplicates dropped."""
    items = [spec] if isinstance(spec, str) else list(spec)
    chosen: set[str] = set()
    everything = [n for names in groups().values() for n in names]
    for item in (i.strip() for part in items for i in part.split(",") if i.strip()):
        if item == "benchmark":
            chosen.update(benchmark_names())
        elif item == "all":
            chosen.update(everything)
        elif item in groups():
            chosen.update(groups()[item])
        elif item in everything:
            chosen.add(item)
        else:
            raise CorruptionError(f"unknown corruption {item!r}: use benchmark, all, a group ("
                                  + ", ".join(groups()) + ") or one of " + ", ".join(everything))
    if not chosen:
        raise CorruptionError("no corruption given")
    return [n for n in everything if n in chosen]


def check_severities(severities) -> tuple[int, ...]:
    out = tuple(sorted({int(s) for s in severities}))
    if not out or any(s not in SEVERITIES for s in out):
        raise CorruptionError(f"severities must be among {', '.join(map(str, SEVERITIES))} (0 is the clean image, "
                              f"always measured); got {', '.join(map(str, severities))}")
    return out


def seed_for(stem: str, corruption: str, severity: int) -> int:
    """The seed of one (image, corruption, severity): the same wherever the image lies."""
    return int.from_bytes(hashlib.sha256(f"{stem}|{corruption}|{severity}".encode()).digest()[:4], "little")


def corrupt(image: np.ndarray, corruption: str, severity: int, seed: int = 0) -> np.ndarray:
    """`image` (RGB uint8 HxWx3, both sides >= 32) with a corruption at a severity (1-5; 0 returns
    it unchanged), deterministic for a given seed."""
    if severity == 0:
        return image
    if severity not in SEVERITIES:
        raise CorruptionError(f"severity must be 0-5, got {severity}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise CorruptionError(f"corruptions need images of at least {MIN_SIDE}x{MIN_SIDE} pixels, "
                              f"got {image.shape[1]}x{image.shape[0]}")
    lib = _library()
    if corruption not in lib.corruption_dict:
        select(corruption)  # raises with the list of names
    np.random.seed(seed)  # most corruptions draw from NumPy's global generator
    kwargs = {"seed": seed} if corruption in ("impulse_noise", "glass_blur") else {}  # these take their own
    out = lib.corrupt(np.ascontiguousarray(image), severity=severity, corruption_name=corruption, **kwargs)
    out = out[: image.shape[0], : image.shape[1]]  # a few corruptions may round the size up
    return out if out.flags.writeable else out.copy()  # jpeg_compression hands back PIL's read-only buffer


def cache_path(cache_dir: Path, image_file: Path, corruption: str, severity: int) -> Path:
    st = image_file.stat()
    key = hashlib.sha256(f"{image_file.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    version = library_version().replace(" ", "-")
    return cache_dir / version / corruption / str(severity) / f"{key}.png"


def read_cached(cache_dir: Path, image_file: Path, corruption: str, severity: int,
                size: tuple[int, int]) -> np.ndarray | None:
    """The cached corrupted image (RGB) of `image_file` when there and of `size` (H, W), else None."""
    path = cache_path(cache_dir, image_file, corruption, severity)
    cached = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    return cv2.cvtColor(cached, cv2.COLOR_BGR2RGB) if cached is not None and cached.shape[:2] == size else None


def corrupted_image(image_file: Path, stem: str, image: np.ndarray, corruption: str, severity: int,
                    cache_dir: Path | None) -> np.ndarray:
    """The corrupted image, from the cache when there (and written to it when not)."""
    if severity == 0:
        return image
    if cache_dir and (cached := read_cached(cache_dir, image_file, corruption, severity, image.shape[:2])) is not None:
        return cached
    path = cache_path(cache_dir, image_file, corruption, severity) if cache_dir else None
    out = corrupt(image, corruption, severity, seed_for(stem, corruption, severity))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
        cv2.imwrite(str(tmp), cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        os.replace(tmp, path)  # atomic: another process sees the whole file or none
    return out


def cache_bytes(cache_dir: Path | None) -> int:
    if not cache_dir or not Path(cache_dir).is_dir():
        return 0
    return sum(p.stat().st_size for p in Path(cache_dir).rglob("*.png") if p.is_file())


class CorruptedDataset(torch.utils.data.Dataset):
    """Jobs (corruption, severity, sample index) over a dataset: item k is sample `index`'s image
    with the corruption applied (severity 0: the clean image) before the dataset's transform, its
    label untouched, and the job's (corruption, severity) key."""

    def __init__(self, dataset, jobs: list[tuple[str, int, int]], cache_dir: Path | None = None):
        self.dataset, self.jobs, self.cache_dir = dataset, jobs, cache_dir

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, k: int):
        corruption, severity, index = self.jobs[k]
        sample = self.dataset.samples[index]
        if severity and self.cache_dir:  # cached: the original image need not be decoded at all
            label = read_label(sample, self.dataset.remedy)
            cached = read_cached(self.cache_dir, Path(sample.image), corruption, severity, label.shape)
            if cached is not None:
                return (*self.dataset.transform(cached, label), (corruption, severity))
        image, label = self.dataset.load(index)
        image = corrupted_image(Path(sample.image), sample.stem, image, corruption, severity, self.cache_dir)
        return (*self.dataset.transform(image, label), (corruption, severity))


def _collate(batch):
    images, labels = eval_collate([item[:2] for item in batch])
    return images, labels, [item[2] for item in batch]


@dataclass
class Sweep:
    clean: Metrics
    results: list[dict] = field(default_factory=list)  # {corruption, group, severity, metrics, seconds, images_per_second}

    @property
    def mpc(self) -> float | None:
        bench = set(benchmark_names())
        rows = [r for r in self.results if r["corruption"] in bench] or self.results
        values = [r["metrics"].miou for r in rows if not np.isnan(r["metrics"].miou)]
        return float(np.mean(values)) if values else None

    @property
    def rpc(self) -> float | None:
        mpc, clean = self.mpc, self.clean.miou
        return mpc / clean if mpc is not None and clean and not np.isnan(clean) else None

    @property
    def groups(self) -> dict[str, float]:
        """group -> mean mIoU over its corruptions and severities swept."""
        out = {}
        for g in groups():
            values = [r["metrics"].miou for r in self.results if r["group"] == g and not np.isnan(r["metrics"].miou)]
            if values:
                out[g] = float(np.mean(values))
        return out


def run_sweep(model: torch.nn.Module, dataset, dev: torch.device, *, corruptions: list[str],
              severities: tuple[int, ...], limit: int | None = None, cache_dir: Path | None = None,
              workers: int | None = None, progress: bool = True) -> Sweep:
    """Clean metrics, then the metrics under every (corruption, severity). `dataset` is an
    evaluation dataset (`load(i)`, `samples`, `transform` = EvalTransform). One loader runs every
    job, so its worker processes (which do the corrupting) start once. Under torchrun every rank
    calls it with the whole dataset: each takes every world-th image of each (corruption,
    severity), and the confusion matrices are summed, so every rank gets the whole split's metrics,
    equal to one process's."""
    n = min(limit, len(dataset)) if limit else len(dataset)
    keys = [("clean", 0)] + [(c, s) for c in corruptions for s in severities]
    jobs = [(c, s, i) for c, s in keys for i in range(distributed.rank(), n, distributed.world_size())]
    workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    loader = DataLoader(CorruptedDataset(dataset, jobs, cache_dir), batch_size=1, collate_fn=_collate,
                        num_workers=min(workers, len(jobs)), pin_memory=dev.type == "cuda")
    cms = {key: ConfusionMatrix() for key in keys}
    counts = {key: 0 for key in keys}
    seconds = {key: 0.0 for key in keys}
    show, bar, t = progress and distributed.is_main(), None, time.perf_counter()
    model.eval()
    with torch.inference_mode():
        for images, labels, batch_keys in loader:
            key = batch_keys[0]
            if bar is None or bar.key != key:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=len(range(distributed.rank(), n, distributed.world_size())), unit="img",
                           desc=key[0] if key[1] == 0 else f"{key[0]} s{key[1]}", disable=not show, leave=False,
                           dynamic_ncols=True)
                bar.key = key
            for label, full in full_resolution(model, images, labels, dev):
                cms[key].update(label, full.argmax(1)[0])
                counts[key] += 1
            now = time.perf_counter()
            seconds[key] += now - t
            t = now
            bar.update(len(labels))
    if bar is not None:
        bar.close()
    for key in keys:  # the same keys in the same order on every rank
        cms[key].reduce_from_all_processes(dev)
    totals = distributed.all_reduce_sum(torch.tensor([counts[k] for k in keys], dtype=torch.float64, device=dev))
    metrics = {key: dataclasses.replace(cms[key].compute(), num_images=int(total))
               for key, total in zip(keys, totals.tolist())}
    sweep = Sweep(metrics[keys[0]])
    for key in keys[1:]:
        sweep.results.append({"corruption": key[0], "group": group_of(key[0]), "severity": key[1],
                              "metrics": metrics[key], "seconds": seconds[key],
                              "images_per_second": counts[key] / seconds[key] if seconds[key] else None})
    return sweep


def summary(sweep: Sweep, **what) -> dict:
    """The JSON shape `robustness --json` prints: what was swept (`what`: variant, dataset,
    condition, split...), clean_miou, mpc, rpc, groups, results."""
    return {**what, "clean_miou": sweep.clean.miou, "mpc": sweep.mpc, "rpc": sweep.rpc, "groups": sweep.groups,
            "num_images": sweep.clean.num_images, "library": library_version(),
            "results": [{"corruption": r["corruption"], "group": r["group"], "severity": r["severity"],
                         "miou": r["metrics"].miou, "pixel_accuracy": r["metrics"].pixel_accuracy,
                         "per_class_iou": r["metrics"].per_class_iou,
                         "images_per_second": r["images_per_second"]} for r in sweep.results]}


def record(store, sweep: Sweep, *, run_id, variant, checkpoint, checkpoint_sha256, dataset, condition, split,
           eval_size) -> int:
    return store.record_robustness(
        run_id=run_id, variant=variant, checkpoint=checkpoint, checkpoint_sha256=checkpoint_sha256, dataset=dataset,
        condition=condition, split=split, eval_size=eval_size, library=library_version(),
        clean=sweep.clean, mpc=sweep.mpc, rpc=sweep.rpc, groups=sweep.groups,
        results=sweep.results)


def sweep_checkpoint(*, variant=None, checkpoint=None, weights_dir=None, device="auto", eval_size=None,
                     store=None, **kwargs) -> dict:
    """`sweep_loaded` on the checkpoint of `variant` (or the file `checkpoint`)."""
    m = load_checkpoint(variant=variant, checkpoint=checkpoint, weights_dir=weights_dir, store=store, device=device,
                        eval_size=eval_size)
    return sweep_loaded(m, store=store, **kwargs)


def sweep_loaded(m, *, dataset: str = "cityscapes", data_root=None, condition: str | None = None,
                 label_format: str | None = None, split: str = "val", corruptions="benchmark",
                 severities=SEVERITIES, limit: int | None = None, store=None, cache_dir=None,
                 workers: int | None = None, progress: bool = True) -> dict:
    """`python -m engine robustness`: sweep a loaded checkpoint (`evaluate.load_checkpoint`) on a
    split and record it (rank 0) in the store, linked to the checkpoint's run and sha256; returns
    `summary`'s dict (+ robustness_id). `cache_dir` False: no cache; None: the setting's."""
    names, severities = select(corruptions), check_severities(severities)
    data = open_dataset(dataset, data_root, split, EvalTransform(m.size), condition=condition,
                        label_format=label_format)
    sweep = run_sweep(m.model, data, m.device, corruptions=names, severities=severities, limit=limit,
                      cache_dir=None if cache_dir is False else settings.corruption_cache(cache_dir),
                      workers=workers, progress=progress)
    what = {"variant": m.variant, "checkpoint": str(m.path), "dataset": data.name, "condition": data.condition,
            "split": data.split, "eval_size": m.eval_size}
    out = summary(sweep, **what)
    if store is not None and distributed.is_main():
        run = store.run_by_uid(m.run_uid)
        out["robustness_id"] = record(store, sweep, run_id=run["id"] if run else None, checkpoint_sha256=m.sha256,
                                      **what)
    return out

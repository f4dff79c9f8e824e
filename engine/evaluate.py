"""Metrics on a split against full-resolution ground truth, as the official protocol measures them.

The model sees the image at the evaluation size; its logits are upsampled (bilinear) to the
label's own resolution before the argmax. `--save-predictions` writes label-id PNGs that the
official `cityscapesscripts` evaluator reads.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from engine import checkpoints, classes, distributed, profiling, settings
from engine.config import LossConfig
from engine.data import open_dataset
from engine.data.cityscapes import CityscapesDataset
from engine.data.transforms import EvalTransform, eval_collate
from engine.runtime import forward_logits, select_device, upsample
from engine.losses import SegmentationLoss
from engine.metrics import BOUNDARY_FRACTION, ConfusionMatrix, ImageResults, Metrics, WithBands

PREDICTION_SUFFIX = "_pred_labelIds.png"
KEPT_PNG_COMPRESSION = 6  # zlib level of kept predictions (label maps: half the bytes of level 3, ~7 ms more at 2048x1024)


def write_label_png(path: Path, labels: np.ndarray) -> None:
    """A uint8 label map as an 8-bit greyscale PNG."""
    ok, buf = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, KEPT_PNG_COMPRESSION])
    if not ok:
        raise OSError(f"cannot encode {path.name} as PNG")
    path.write_bytes(buf.tobytes())


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """A label map written by `write_label_png` (uint8 HxW)."""
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise FileNotFoundError(f"{path}: no kept prediction there")
    return labels


def full_resolution(model: torch.nn.Module, images: torch.Tensor, labels: list[torch.Tensor], device: torch.device):
    """(label, float32 logits upsampled to the label's resolution) for each image of a batch: what
    every metric here is computed from (the official protocol: full-resolution ground truth)."""
    logits = forward_logits(model, images.to(device, non_blocking=True))
    for i, label in enumerate(labels):
        label = label.to(device, non_blocking=True)
        yield label, upsample(logits[i:i + 1], tuple(label.shape))


def evaluate_model(model: torch.nn.Module, loader: DataLoader, device: torch.device, *, loss_fn=None,
                   save_dir: str | os.PathLike | None = None, stems: list[str] | None = None,
                   per_image: ImageResults | None = None, keep_dir: str | os.PathLike | None = None,
                   progress: bool = True, desc: str = "evaluating") -> Metrics:
    """Confusion-matrix metrics (+ mean loss when `loss_fn(logits, target)` is given) over a loader
    that yields (images at the eval size, list of full-resolution trainId labels).

    `per_image`: also score each image on its own and within its boundary band (filled in; the
    boundary confusion of the whole split goes into the metrics); the band comes with each item when
    the loader's dataset is `metrics.WithBands`, else it is computed here. `save_dir`: official label-id
    PNGs (`stems` name them); `keep_dir`: each prediction as a trainId PNG `<stem>.png`.

    Under torchrun every rank calls it with its shard of the images (`distributed.shard`; `stems`
    and `per_image`'s entries those of the shard): the confusion matrices, loss sums and counts are
    summed over ranks, so every rank returns the metrics of the whole split (IoUs and pixel accuracy
    exactly as one process computes them; the mean loss up to float summation order), and rank 0
    gets every image's results."""
    model.eval()
    cm = ConfusionMatrix()
    loss_sum, n = torch.zeros((), device=device, dtype=torch.float64), 0
    for folder in (save_dir, keep_dir):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for images, labels, *bands in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True,
                                           unit="img"):
            bands = bands[0] if bands else [None] * len(labels)
            for band, (label, full) in zip(bands, full_resolution(model, images, labels, device)):
                if loss_fn is not None:
                    loss_sum += loss_fn(full, label[None])
                pred = full.argmax(1)[0]
                if per_image is not None:
                    cm.add(per_image.add(label, pred, band))
                else:
                    cm.update(label, pred)
                if save_dir or keep_dir:
                    train_ids = pred.to(torch.uint8).cpu().numpy()
                    if save_dir:
                        Image.fromarray(classes.train_ids_to_label_ids(train_ids)).save(
                            Path(save_dir) / f"{stems[n]}{PREDICTION_SUFFIX}")
                    if keep_dir:
                        write_label_png(Path(keep_dir) / f"{stems[n]}.png", train_ids)
                n += 1
    cm.reduce_from_all_processes(device)
    if distributed.world_size() > 1:
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(n), device=device,
                                                                                dtype=torch.float64)]))
        loss_sum, n = totals[0], int(totals[1].item())
    boundary = {}
    if per_image is not None:
        per_image.gather()
        boundary = dict(boundary_confusion=per_image.boundary_confusion() if distributed.is_main() else None,
                        boundary_fraction=BOUNDARY_FRACTION)
    return dataclasses.replace(cm.compute(), num_images=n, **boundary,
                               mean_loss=float(loss_sum / n) if loss_fn is not None and n else None)


@dataclasses.dataclass
class Loaded:
    """A checkpoint ready to evaluate: the model on its device, and what gets recorded beside it."""
    model: torch.nn.Module
    device: torch.device
    path: Path
    sha256: str
    variant: str
    recipe: dict
    run_uid: str | None
    size: tuple[int, int]  # (W, H) the model sees

    @property
    def eval_size(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"


def load_checkpoint(*, variant=None, checkpoint=None, weights_dir=None, store=None, device="auto",
                    eval_size: tuple[int, int] | None = None) -> Loaded:
    """The checkpoint of `variant` (or the file `checkpoint`), checked against the sha256 recorded
    at training when there is a store, built on this process's device, at the recipe's eval size."""
    dev = distributed.local_device(select_device(device))
    path = checkpoints.resolve(variant, checkpoint, weights_dir)
    ckpt, sha = checkpoints.load_with_sha256(path, store=store)
    recipe = ckpt["recipe"]
    size = tuple(eval_size or recipe["data"].get("eval_size") or recipe["data"]["size"])
    return Loaded(checkpoints.build_from(ckpt).to(dev), dev, Path(path), sha, variant or recipe["name"], recipe,
                  ckpt.get("run_uid"), size)


def evaluate_checkpoint(*, variant: str | None = None, checkpoint=None, weights_dir=None, device: str = "auto",
                        eval_size: tuple[int, int] | None = None, store=None, **kwargs) -> dict:
    """`evaluate_loaded` on the checkpoint of `variant` (or the file `checkpoint`)."""
    m = load_checkpoint(variant=variant, checkpoint=checkpoint, weights_dir=weights_dir, store=store, device=device,
                        eval_size=eval_size)
    return evaluate_loaded(m, store=store, **kwargs)


def evaluate_loaded(m: Loaded, *, dataset: str = "cityscapes", data_root=None, condition: str | None = None,
                    label_format: str | None = None, split: str = "val", store=None, save_predictions=None,
                    keep_predictions: bool = False, latency_repeats: int | None = None,
                    deploy_sizes: list[tuple[int, int]] | None = None, progress: bool = True) -> dict:
    """Evaluate a loaded checkpoint on a split of `dataset` (`engine.data.open_dataset`: cityscapes,
    acdc with a `condition`, bdd100k, kitti, folder), record it in the store; returns the summary:
    what was evaluated, the metrics (`Metrics`' fields) and, on Cityscapes (the layout models train
    on), what the model costs at each deployment resolution (`deploy_sizes`, default
    `settings.deploy_sizes()`: 1024x512): `profiles` (`Profile`s as dicts), the first one's fields
    also at the top level. Cost belongs to the model, not to the streets it is shown.

    Every image is also scored on its own (`engine.metrics.ImageResults`: its confusion counts, over
    all its pixels and within its boundary band); the store records those rows with the evaluation,
    in one transaction. `keep_predictions`: each image's predicted trainIds as a PNG in a folder of
    its own under `settings.predictions_dir()`, which the evaluation's row points to."""
    data = open_dataset(dataset, data_root, split, EvalTransform(m.size), condition=condition,
                        label_format=label_format)
    shard = distributed.shard(data)  # under torchrun: this rank's images; metrics all-reduced
    loader = DataLoader(WithBands(shard), batch_size=1, collate_fn=eval_collate,
                        num_workers=min(2, os.cpu_count() or 1), pin_memory=m.device.type == "cuda")
    loss_fn = SegmentationLoss(LossConfig(**m.recipe["schedule"]["loss"])).single
    indices = list(getattr(shard, "indices", range(len(data))))
    per_image = image_results_for(data, indices)
    keep_dir = None
    if keep_predictions:  # one folder for the whole evaluation, named on rank 0
        keep_dir = distributed.broadcast_object(str(settings.predictions_dir() / m.variant / uuid.uuid4().hex[:12]))
    try:
        metrics = evaluate_model(m.model, loader, m.device, loss_fn=loss_fn, save_dir=save_predictions,
                                 stems=[data.samples[i].stem for i in indices], per_image=per_image, keep_dir=keep_dir,
                                 progress=progress and distributed.is_main())
        summary = {"variant": m.variant, "checkpoint": str(m.path), "dataset": data.name,
                   "condition": data.condition, "split": data.split, "eval_size": m.eval_size,
                   **dataclasses.asdict(metrics), "predictions_dir": keep_dir}
        if not distributed.is_main():  # rank 0 alone profiles and records
            return summary
        profiles = profile_sizes(m, deploy_sizes, repeats=latency_repeats) if dataset == "cityscapes" else []
        if profiles:
            summary.update(dataclasses.asdict(profiles[0]), profiles=[dataclasses.asdict(p) for p in profiles])
        if store is not None:
            run = store.run_by_uid(m.run_uid)
            summary["evaluation_id"] = store.record_evaluation(
                run_id=run["id"] if run else None, variant=m.variant, checkpoint=str(m.path),
                checkpoint_sha256=m.sha256, dataset=data.name, condition=data.condition, split=data.split,
                eval_size=m.eval_size, metrics=metrics, profiles=profiles, images=per_image.results,
                source={"kind": dataset, "root": str(Path(data.root).resolve()), "label_format": label_format},
                predictions_dir=keep_dir)
    except BaseException:
        if keep_dir and distributed.is_main():  # no row points to them: nothing would ever find them
            shutil.rmtree(keep_dir, ignore_errors=True)
        raise
    return summary


def profile_sizes(m: Loaded, sizes: list[tuple[int, int]] | None = None, *, repeats: int | None = None,
                  batch: int = 1) -> list[profiling.Profile]:
    """What a loaded checkpoint costs at each of `sizes` (default `settings.deploy_sizes()`: 1024x512)
    on its device; `repeats` timed forwards (default the recipe's `latency_repeats`)."""
    repeats = repeats or m.recipe["schedule"].get("latency_repeats", 10)
    return [profiling.profile(m.model, m.path, size, m.device, repeats=repeats, batch=batch)
            for size in settings.deploy_sizes(sizes)]


def profile_checkpoint(m: Loaded, *, sizes: list[tuple[int, int]] | None = None, batch: int = 1,
                       repeats: int | None = None, store=None) -> list[dict]:
    """`python -m engine profile`: `profile_sizes`, each recorded in the store as a cost profile of
    the checkpoint's run (no evaluation: the costs alone, e.g. at another resolution or on another
    device). Returns the profiles as dicts, with `setup` and `cost_profile_id`."""
    out = []
    run = store.run_by_uid(m.run_uid) if store is not None else None
    for prof in profile_sizes(m, sizes, repeats=repeats, batch=batch):
        row = {**dataclasses.asdict(prof), "setup": prof.setup, "variant": m.variant, "checkpoint": str(m.path)}
        if store is not None:
            row["cost_profile_id"] = store.record_profile(prof, run_id=run["id"] if run else None, variant=m.variant,
                                                          checkpoint=str(m.path), checkpoint_sha256=m.sha256)
        out.append(row)
    return out


def image_results_for(data, indices) -> ImageResults:
    """What collects the per-image results of the images `indices` of `data` (a dataset of
    `engine.data`), in that order; each image's file relative to the dataset root (as given when it
    lies elsewhere)."""
    def relative(path: Path) -> str:
        try:
            return Path(path).relative_to(data.root).as_posix()
        except ValueError:
            return str(path)

    return ImageResults([(i, data.samples[i].stem, data.samples[i].folder, relative(data.samples[i].image))
                         for i in indices])


def predict_labels(m: Loaded, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The trainIds an evaluation predicts for one RGB uint8 image, at `shape` (its label's
    resolution): the same resize, forward and upsampling as `evaluate_model`."""
    x, _ = EvalTransform(m.size)(image, np.zeros(image.shape[:2], np.uint8))
    m.model.eval()
    with torch.inference_mode():
        (_, full), = full_resolution(m.model, x[None], [torch.zeros(shape, dtype=torch.uint8)], m.device)
        return full.argmax(1)[0].to(torch.uint8).cpu().numpy()


def most_frequent_class_miou(data_root=None, split: str = "val") -> float:
    """mIoU of the baseline that labels every pixel with the split's most frequent class."""
    dataset = CityscapesDataset(data_root, split)
    counts = np.zeros(classes.NUM_CLASSES, dtype=np.int64)
    labels = [torch.from_numpy(dataset[i][1]).long() for i in range(len(dataset))]
    for label in labels:
        counts += np.bincount(label[label != classes.IGNORE_INDEX].numpy(), minlength=classes.NUM_CLASSES)
    majority = int(counts.argmax())
    cm = ConfusionMatrix()
    for label in labels:
        cm.update(label, torch.full_like(label, majority))
    return cm.compute().miou

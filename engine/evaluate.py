"""Metrics on a split against full-resolution ground truth, as the official protocol measures them.

The model sees the image at the evaluation size; its logits are upsampled (bilinear) to the
label's own resolution before the argmax. `--save-predictions` writes label-id PNGs that the
official `cityscapesscripts` evaluator reads.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from engine import checkpoints, classes, distributed, profiling
from engine.config import LossConfig
from engine.data.cityscapes import CityscapesDataset
from engine.data.transforms import EvalTransform, eval_collate
from engine.runtime import forward_logits, select_device, upsample
from engine.losses import SegmentationLoss
from engine.metrics import ConfusionMatrix, Metrics

PREDICTION_SUFFIX = "_pred_labelIds.png"


def evaluate_model(model: torch.nn.Module, loader: DataLoader, device: torch.device, *, loss_fn=None,
                   save_dir: str | os.PathLike | None = None, stems: list[str] | None = None,
                   progress: bool = True) -> Metrics:
    """Confusion-matrix metrics (+ mean loss when `loss_fn(logits, target)` is given) over a loader
    that yields (images at the eval size, list of full-resolution trainId labels).

    Under torchrun every rank calls it with its shard of the images (`distributed.shard`; `stems`
    those of the shard): the confusion matrices, loss sums and counts are summed over ranks, so
    every rank returns the metrics of the whole split (IoUs and pixel accuracy exactly as one
    process computes them; the mean loss up to float summation order)."""
    model.eval()
    cm = ConfusionMatrix()
    loss_sum, n = torch.zeros((), device=device, dtype=torch.float64), 0
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for images, labels in tqdm(loader, desc="evaluating", disable=not progress, leave=False, dynamic_ncols=True):
            logits = forward_logits(model, images.to(device, non_blocking=True))
            for i, label in enumerate(labels):
                label = label.to(device, non_blocking=True)
                full = upsample(logits[i:i + 1], tuple(label.shape))
                if loss_fn is not None:
                    loss_sum += loss_fn(full, label[None])
                pred = full.argmax(1)[0]
                cm.update(label, pred)
                if save_dir:
                    label_ids = classes.train_ids_to_label_ids(pred.to(torch.uint8).cpu().numpy())
                    Image.fromarray(label_ids).save(Path(save_dir) / f"{stems[n]}{PREDICTION_SUFFIX}")
                n += 1
    cm.reduce_from_all_processes(device)
    if distributed.world_size() > 1:
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(n), device=device,
                                                                                dtype=torch.float64)]))
        loss_sum, n = totals[0], int(totals[1].item())
    return dataclasses.replace(cm.compute(), num_images=n,
                               mean_loss=float(loss_sum / n) if loss_fn is not None and n else None)


def evaluate_checkpoint(*, variant: str | None = None, checkpoint=None, data_root=None, split: str = "val",
                        device: str = "auto", store=None, weights_dir=None, save_predictions=None,
                        eval_size: tuple[int, int] | None = None, latency_repeats: int | None = None,
                        progress: bool = True) -> dict:
    """Evaluate a checkpoint on a split, profile it, record both in the store; returns the summary:
    what was evaluated, the metrics (`Metrics`' fields) and the profile (`Profile`'s fields)."""
    dev = distributed.local_device(select_device(device))
    path = checkpoints.resolve(variant, checkpoint, weights_dir)
    # with a store: checked against the sha256 recorded at training; `sha` is what gets recorded
    ckpt, sha = checkpoints.load_with_sha256(path, store=store)
    model = checkpoints.build_from(ckpt).to(dev)
    recipe = ckpt["recipe"]
    variant = variant or recipe["name"]
    size = tuple(eval_size or recipe["data"].get("eval_size") or recipe["data"]["size"])
    dataset = CityscapesDataset(data_root, split, EvalTransform(size))
    shard = distributed.shard(dataset)  # under torchrun: this rank's images; metrics all-reduced
    loader = DataLoader(shard, batch_size=1, collate_fn=eval_collate, num_workers=min(2, os.cpu_count() or 1),
                        pin_memory=dev.type == "cuda")
    loss_fn = SegmentationLoss(LossConfig(**recipe["schedule"]["loss"])).single
    m = evaluate_model(model, loader, dev, loss_fn=loss_fn, save_dir=save_predictions,
                       stems=[dataset.samples[i].stem for i in getattr(shard, "indices", range(len(dataset)))],
                       progress=progress and distributed.is_main())
    summary = {"variant": variant, "checkpoint": str(path), "dataset": dataset.name, "split": split,
               "eval_size": f"{size[0]}x{size[1]}", **dataclasses.asdict(m)}
    if not distributed.is_main():  # rank 0 alone profiles and records
        return summary
    prof = profiling.profile(model, path, size, dev,
                             repeats=latency_repeats or recipe["schedule"].get("latency_repeats", 10))
    summary.update(dataclasses.asdict(prof))
    if store is not None:
        run = store.run_by_uid(ckpt.get("run_uid"))
        summary["evaluation_id"] = store.record_evaluation(
            run_id=run["id"] if run else None, variant=variant, checkpoint=str(path), checkpoint_sha256=sha,
            dataset=dataset.name, split=split, eval_size=summary["eval_size"], metrics=m, profile=prof)
    return summary


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

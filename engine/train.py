"""The training loop: recipe + data + store -> weights/<variant>/{last,best}.pt and epoch rows.

Per epoch: train, validate on the val split (same metric code as `evaluate`), write the epoch to
the store, save `last.pt` (with optimizer/scheduler state, for --resume) and `best.pt` (weights
only, what evaluation and inference use). A run that raises is recorded as failed, Ctrl-C as
interrupted; nothing is lost.
"""
from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from engine import checkpoints, evaluate
from engine.config import Recipe
from engine.data.cityscapes import CityscapesDataset
from engine.data.transforms import EvalTransform, TrainTransform, eval_collate
from engine.inference import autocast, select_device
from engine.profiling import device_name
from engine.losses import SegmentationLoss
from engine.models import BACKBONES, build_model
from engine.store import Store


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class TrainResult:
    run_id: int
    run_uid: str
    epochs: int
    iterations: int
    best_miou: float
    best_checkpoint: Path
    last_checkpoint: Path
    train_seconds: float
    images_per_second: float


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    cfg = recipe.schedule.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer, recipe: Recipe, iters_per_epoch: int):
    """Stepped once per iteration: StepLR's step_size is in epochs, converted here."""
    cfg, epochs = recipe.schedule.scheduler, recipe.schedule.epochs
    if cfg.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size * iters_per_epoch, gamma=cfg.gamma)
    if cfg.name == "poly":
        total = max(1, epochs * iters_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(0.0, 1 - it / total) ** cfg.power)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)


def train(recipe: Recipe, *, store: Store, data_root=None, device: str = "auto", weights_dir=None,
          resume: bool = False, progress: bool = True) -> TrainResult:
    dev = select_device(device)
    generator = seed_everything(recipe.schedule.seed)
    data, sched = recipe.data, recipe.schedule
    train_set = CityscapesDataset(data_root, "train", TrainTransform(data.size, data.augment))
    val_set = CityscapesDataset(data_root, "val", EvalTransform(recipe.eval_size))
    batch_size = min(data.batch_size, len(train_set))
    loader_kw = dict(num_workers=data.workers, pin_memory=dev.type == "cuda", persistent_workers=data.workers > 0,
                     worker_init_fn=_seed_worker)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator, **loader_kw)
    val_loader = DataLoader(val_set, batch_size=1, collate_fn=eval_collate, **loader_kw)
    iters_per_epoch = len(train_loader)
    max_iters = sched.max_iters or math.inf

    model = build_model(recipe.model.arch, dropout=recipe.model.dropout, aux_loss=recipe.model.aux_loss,
                        pretrained_backbone=recipe.model.pretrained_backbone).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, iters_per_epoch)
    loss_fn = SegmentationLoss(sched.loss, recipe.model.aux_weight)
    out_dir = checkpoints.variant_dir(recipe.name, weights_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    start_epoch, iteration, best_miou, run_uid, run_id, elapsed = 0, 0, -1.0, uuid.uuid4().hex, None, 0.0
    if resume and not last_path.is_file():
        print(f"--resume: no {last_path} yet, starting a new run")
    elif resume:
        ckpt = checkpoints.load(last_path, map_location=dev)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        generator.set_state(ckpt["rng"]["loader"].cpu())
        start_epoch, iteration = ckpt["epoch"] + 1, ckpt["iteration"]
        best_miou, run_uid, elapsed = ckpt["best_miou"], ckpt["run_uid"], ckpt["elapsed_seconds"]
        existing = store.run_by_uid(run_uid)
        run_id = existing["id"] if existing else None
        if run_id is not None:
            store.reopen_run(run_id)
        print(f"resuming {recipe.name} at epoch {start_epoch + 1}, iteration {iteration}")
    if run_id is None:
        run_id = store.start_run(
            variant=recipe.name, arch=recipe.model.arch, backbone=BACKBONES[recipe.model.arch], profile=recipe.profile,
            hyperparameters=recipe.to_dict(), dataset=train_set.name, data_root=str(train_set.root),
            train_images=len(train_set), val_images=len(val_set), device=device_name(dev),
            code_version=checkpoints.code_version(), uid=run_uid)

    t_start, train_time, images_seen = time.perf_counter() - elapsed, 0.0, 0  # time from earlier sessions counts
    best_state, best_info, best_written = None, None, None
    common = dict(arch=recipe.model.arch, recipe=recipe.to_dict(), run_uid=run_uid)

    def save_checkpoints(epoch: int, iteration: int, val: dict) -> None:
        nonlocal best_written
        if best_state is not None and best_written is not best_state:
            checkpoints.save(best_path, best_state, **common, **best_info)
            best_written = best_state
        checkpoints.save(last_path, model.state_dict(), **common, epoch=epoch, iteration=iteration,
                         metrics={k: val[k] for k in ("miou", "pixel_accuracy", "mean_loss")}, extra={
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "rng": {"torch": torch.get_rng_state(), "loader": generator.get_state()},
                             "best_miou": best_miou, "elapsed_seconds": time.perf_counter() - t_start})

    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, sched.epochs):
            if iteration >= max_iters:
                break
            model.train()
            t0, loss_sum, steps = time.perf_counter(), torch.zeros((), device=dev), 0
            bar = tqdm(train_loader, desc=f"{recipe.name} epoch {epoch + 1}/{sched.epochs}", disable=not progress,
                       leave=False, dynamic_ncols=True)
            for images, targets in bar:
                images = images.to(dev, non_blocking=True)
                targets = targets.to(dev, non_blocking=True)
                if dev.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast(dev):
                    loss = loss_fn(model(images), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach()
                steps += 1
                iteration += 1
                images_seen += images.shape[0]
                if steps % 10 == 0 or steps == 1:  # a host sync only every 10 steps, for the progress bar
                    bar.set_postfix(loss=f"{(loss_sum / steps).item():.3f}",
                                    img_s=f"{steps * batch_size / (time.perf_counter() - t0):.1f}")
                if iteration >= max_iters:  # only max_iters cuts an epoch short: a loader run to its end
                    break                   # leaves its RNG where an uninterrupted run has it (exact resume)
            bar.close()
            epoch_train_s = time.perf_counter() - t0
            train_time += epoch_train_s
            train_loss = (loss_sum / max(steps, 1)).item()
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch + 1} "
                                       f"(by iteration {iteration}); lower the learning rate")
            val = evaluate.evaluate_model(model, val_loader, dev, loss_fn=loss_fn.single, progress=False)
            store.log_epoch(run_id, epoch=epoch + 1, iteration=iteration, train_loss=train_loss,
                            val_loss=val["mean_loss"], val_miou=val["miou"], val_pixel_accuracy=val["pixel_accuracy"],
                            lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0,
                            images_per_second=steps * batch_size / epoch_train_s)
            if val["miou"] > best_miou:  # kept in memory; written with the next checkpoint
                best_miou, best_state = val["miou"], {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
                best_info = dict(epoch=epoch, iteration=iteration, metrics={k: val[k] for k in ("miou", "pixel_accuracy", "mean_loss")})
            last_epoch = epoch + 1 >= sched.epochs or iteration >= max_iters
            if last_epoch or (sched.checkpoint_every and (epoch + 1) % sched.checkpoint_every == 0):
                save_checkpoints(epoch, iteration, val)
            if progress:
                print(f"{recipe.name} epoch {epoch + 1}: loss {train_loss:.3f}  val mIoU {val['miou']:.4f}  "
                      f"pixel acc {val['pixel_accuracy']:.4f}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    except KeyboardInterrupt:
        store.finish_run(run_id, status="interrupted", error="interrupted by the user (Ctrl-C)",
                         train_seconds=time.perf_counter() - t_start)
        raise
    except BaseException as e:
        store.finish_run(run_id, status="failed", error=f"{type(e).__name__}: {e}",
                         train_seconds=time.perf_counter() - t_start)
        raise
    total = time.perf_counter() - t_start
    ips = images_seen / train_time if train_time > 0 else 0.0
    store.finish_run(run_id, status="completed", train_seconds=total, images_per_second=ips,
                     best_miou=best_miou, checkpoint=str(best_path))
    return TrainResult(run_id, run_uid, epoch + 1, iteration, best_miou, best_path, last_path, total, ips)


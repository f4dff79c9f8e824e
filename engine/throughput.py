"""Training throughput: how many images per second a recipe trains at, and how many its data
pipeline alone delivers.

`training_throughput` builds the recipe's training DataLoader and model exactly as `engine.train`
does (same cache, workers, pinning, prefetching, precision, memory format, compile flag) and times

- train: `iters` real optimizer steps (forward, loss, backward, optimizer and scheduler step) after
  `warmup` untimed ones, data loading included;
- data: the same DataLoader iterated without the model (batches copied to the device, as training
  does), `iters` batches after `warmup`.

Each timed run is one pass of the loader started after the warm-up (persistent workers already
up, nothing prefetched), so batches made during the warm-up never inflate a rate and the pass pays
the pipeline's fill once, as an epoch does (with few iters that makes the rates slightly low). The
device is synchronised only at the timing boundaries. With `compile` on, make `warmup` cover
the compilation. The model starts from random weights (a pretrained backbone times the same).
Nothing is written: no checkpoint, no store row (the CLI records the returned
dict in the store's benchmarks table, kind="train"); the global RNG state is restored afterwards.
"""
from __future__ import annotations

import copy
import dataclasses
import time

import torch

from engine.config import Recipe
from engine.data.cityscapes import CityscapesDataset
from engine.data.transforms import TrainTransform
from engine.runtime import select_device
from engine.losses import SegmentationLoss
from engine.profiling import device_name
from engine.train import build_model_for, build_optimizer, build_scheduler, build_train_loader, train_step


def _parse_size(size) -> list[int]:
    if isinstance(size, str):
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"size must be WxH, e.g. 512x256, got {size!r}") from None
    else:
        w, h = size
    if not (isinstance(w, int) and isinstance(h, int) and w >= 8 and h >= 8):
        raise ValueError(f"size must be [width, height] in pixels (>= 8), got {size!r}")
    return [w, h]


def _at_size(recipe: Recipe, size) -> Recipe:
    """A copy of the recipe training at `size`; a random crop keeps its proportion to the size."""
    recipe = copy.deepcopy(recipe)
    if size is not None:
        (w, h), (w0, h0) = _parse_size(size), recipe.data.size
        crop = recipe.data.augment.crop
        if crop:
            recipe.data.augment.crop = [max(8, round(crop[0] * w / w0)), max(8, round(crop[1] * h / h0))]
        recipe.data.size = [w, h]
    return recipe


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def training_throughput(recipe: Recipe, *, data_root, device: str = "auto", size=None, iters: int = 20,
                        warmup: int = 3) -> dict:
    """Training and data-pipeline images/second of `recipe` at `size` ((W, H) or "WxH"; default the
    recipe's size) with its batch size, workers and cache; see the module docstring."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    dev = select_device(device)
    recipe = _at_size(recipe, size)
    data, sched = recipe.data, recipe.schedule
    w, h = data.size
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(sched.seed)
        train_set = CityscapesDataset(data_root, "train", TrainTransform(data.size, data.augment), cache=data.cache)
        t0 = time.perf_counter()
        train_set.build_cache(workers=data.workers)
        cache_seconds = time.perf_counter() - t0
        batch_size = min(data.batch_size, len(train_set))
        # one pass of the loader = `iters` batches (several permutations back to back if needed)
        loader = build_train_loader(train_set, recipe, dev, torch.Generator().manual_seed(sched.seed),
                                    num_samples=iters * batch_size)

        def run_pass(step, limit: int | None = None) -> tuple[int, float]:
            """(batches, seconds) of one pass, from its start (workers idle, nothing prefetched: a
            timed pass pays the pipeline's fill like an epoch does, and gets no batches made
            earlier) to the device finishing the last step."""
            it = iter(loader)  # a new pass: waits for what an earlier, broken-off pass left queued
            _sync(dev)
            start, n = time.perf_counter(), 0
            for images, targets in it:
                if n == limit:
                    break
                step(images, targets)
                n += 1
            _sync(dev)
            return n, time.perf_counter() - start

        def timed(step) -> float:
            done = 0
            while done < warmup:  # untimed: starts the workers, warms caches, compiles
                done += run_pass(step, warmup - done)[0]
            return run_pass(step)[1]

        def fetch(images, targets):  # the copy to the device training makes, without the model
            images.to(dev, non_blocking=True)
            targets.to(dev, non_blocking=True)

        data_seconds = timed(fetch)

        # the starting weights do not change the time a step takes: a recipe that starts from ImageNet
        # weights is timed from random ones, so a machine without them cached (offline) can measure it
        model, forward = build_model_for(dataclasses.replace(
            recipe, model=dataclasses.replace(recipe.model, pretrained_backbone=False)), dev)
        model.train()
        optimizer = build_optimizer(model, recipe)
        scheduler = build_scheduler(optimizer, recipe, len(loader))
        loss_fn = SegmentationLoss(sched.loss, recipe.model.aux_weight)
        cudnn_benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = dev.type == "cuda" or cudnn_benchmark  # as train() does
        try:
            train_seconds = timed(lambda images, targets: train_step(forward, images, targets, loss_fn, optimizer,
                                                                     scheduler, dev))
        finally:
            torch.backends.cudnn.benchmark = cudnn_benchmark
        del loader  # stops its persistent workers

    images = iters * batch_size
    train_ips, data_ips = images / train_seconds, images / data_seconds
    cuda = dev.type == "cuda"
    return {
        "variant": recipe.name,
        "arch": recipe.model.arch,
        "size": f"{w}x{h}",
        "batch_size": batch_size,
        "device": device_name(dev),
        "device_type": dev.type,
        "threads": torch.get_num_threads(),
        "precision": "bf16" if cuda else "fp32",
        "backend": "torch",
        "channels_last": cuda,
        "compile": bool(sched.compile and cuda),
        "workers": data.workers,
        "cache": data.cache,
        "cache_seconds": cache_seconds,
        "iters": iters,
        "warmup": warmup,
        "train_seconds": train_seconds,
        "data_seconds": data_seconds,
        "train_images_per_second": train_ips,
        "data_images_per_second": data_ips,
        "data_faster_than_model": data_ips > train_ips,
        "train_images": len(train_set),
        "torch_version": torch.__version__,
    }

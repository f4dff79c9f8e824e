"""The training loop: recipe + data + store -> weights/<variant>/{last,best}.pt and epoch rows.

Per epoch: train, validate on the val split (same metric code as `evaluate`), write the epoch to
the store, save `last.pt` (with optimizer/scheduler state, for --resume) and `best.pt` (weights
only, what evaluation and inference use). With `schedule.checkpoint_every_iters`, `last.pt` is also
written every N iterations, mid-epoch: it then holds the position in the epoch and the epoch's loss
sum so far. A run that raises is recorded as failed (a NaN/inf loss included); Ctrl-C writes
`last.pt` at the current position and records the run as interrupted. `--resume` from any `last.pt`
(a killed run's too) ends with the same weights and epoch rows as an uninterrupted run.

Exact resume: a pass of the train loader depends only on the loader generator's state at its start
(saved in `last.pt`) and a sample's augmentation only on (epoch seed, sample index), never on the
worker that loads it or its position; a resumed epoch skips its finished batches in the sampler
(never loaded). The global torch RNG is left to the model (dropout): the loaders use generators of
their own. Ctrl-C during a step (or a checkpoint) takes effect when it ends (`_SigintGuard`).

Speed, without changing what is computed:
- data: with `data.cache` the dataset is decoded and resized once, before training, and only the
  random augmentation runs per sample (same tensors as reading from disk); the loader pins memory
  on CUDA, prefetches, and keeps its workers alive across epochs;
- no host synchronisation per step: the loss is summed on the device; every LOSS_READ_EVERY steps a
  non-blocking copy of the sum goes to the host, and the progress bar and the divergence check read
  the latest copy the device has finished (so on CUDA they lag by a few steps); the epoch's mean is
  read (one synchronisation) at the end of the epoch and checked again there;
- CUDA only: bf16 autocast, channels_last model and inputs, cudnn.benchmark, and `torch.compile`
  when the recipe's `schedule.compile` is true. On CPU: fp32, default memory format, no compile.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from engine import checkpoints, distributed, evaluate
from engine.config import Recipe
from engine.data import check
from engine.data.cityscapes import CityscapesDataset
from engine.data.transforms import EvalTransform, TrainTransform, eval_collate
from engine.inference import autocast, select_device
from engine.profiling import device_name
from engine.losses import SegmentationLoss
from engine.models import BACKBONES, build_model
from engine.store import Store


LOSS_READ_EVERY = 10  # steps between (non-blocking) reads of the running loss (and after step 1):
                     # the progress bar and the divergence check


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


class EpochSeededBatches(torch.utils.data.Sampler):
    """Shuffled batches of (epoch seed, index) pairs, for `SeededDataset`.

    Each pass first draws an epoch seed from `generator`, then the permutation, so a pass depends
    only on the generator's state at its start (which a checkpoint keeps). Setting `skip` makes the
    next pass leave out its first `skip` batches (a resumed epoch: their samples are never loaded).
    `num_samples` > dataset size gives several permutations back to back in one pass (for
    throughput measurement).

    Distributed (`world` > 1) and/or gradient accumulation (`accum` > 1): every rank draws the same
    seed and permutation (same generator state); of each global batch of `batch_size` indices rank r
    takes batch[r::world] and yields it as `accum` micro-batches. `skip` and `len` count global
    batches x accum, so a resume skips the same optimizer steps whatever the number of ranks."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, *, drop_last: bool = True,
                 num_samples: int | None = None, rank: int = 0, world: int = 1, accum: int = 1):
        self.generator, self.skip = generator, 0
        self.rank, self.world, self.accum = rank, world, accum
        self.batches = BatchSampler(RandomSampler(range(n), generator=generator, num_samples=num_samples),
                                    batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.batches) * self.accum

    def __iter__(self):
        seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item())
        skip, self.skip = self.skip, 0
        for batch in itertools.islice(self.batches, skip, None):
            if self.world == 1 and self.accum == 1:
                yield [(seed, i) for i in batch]
                continue
            mine = batch[self.rank::self.world]
            micro = len(mine) // self.accum
            for k in range(self.accum):
                yield [(seed, i) for i in mine[k * micro:(k + 1) * micro]]


class SeededDataset(Dataset):
    """`dataset[index]` for (epoch seed, index) keys, with torch's RNG seeded from both while the
    sample is made (forked: the caller's RNG is left as it was). A sample's augmentation thus
    depends on neither the worker that loads it nor its position in the epoch, which a mid-epoch
    resume changes. The transforms (torchvision v2) draw from torch's RNG only."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        seed, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((seed + index * 0x9E3779B97F4A7C15) % 2**64)  # golden-ratio step: spread seeds
            return self.dataset[index]


def build_datasets(recipe: Recipe, data_root=None) -> tuple[CityscapesDataset, CityscapesDataset]:
    """The train and val datasets of a recipe (caches, when asked for, are built by `build_cache`)."""
    data = recipe.data
    train_set = CityscapesDataset(data_root, "train", TrainTransform(data.size, data.augment), cache=data.cache)
    val_set = CityscapesDataset(data_root, "val", EvalTransform(recipe.eval_size), cache=data.cache)
    return train_set, val_set


def build_train_loader(train_set: Dataset, recipe: Recipe, dev: torch.device, generator: torch.Generator, *,
                       num_samples: int | None = None, accum: int = 1, batch_size: int | None = None) -> DataLoader:
    """Shuffled, drop_last batches; pinned memory on CUDA; workers kept alive and prefetching.
    Under torchrun each rank loads its shard of every global batch (`batch_size`, default the
    recipe's), in `accum` micro-batches (see EpochSeededBatches)."""
    workers = recipe.data.workers
    batches = EpochSeededBatches(len(train_set), batch_size or min(recipe.data.batch_size, len(train_set)), generator,
                                 num_samples=num_samples, rank=distributed.rank(), world=distributed.world_size(),
                                 accum=accum)
    # the loader's own base seed comes from a generator of its own: the training generator and the
    # global RNG see only the draws listed in EpochSeededBatches
    return DataLoader(SeededDataset(train_set), batch_sampler=batches, num_workers=workers,
                      pin_memory=dev.type == "cuda", persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, worker_init_fn=_seed_worker,
                      generator=torch.Generator().manual_seed(0))


def build_val_loader(val_set: Dataset, recipe: Recipe, dev: torch.device) -> DataLoader:
    workers = recipe.data.workers
    # a generator of its own: each pass draws seeds from it, which must not come from the global RNG
    # (dropout's, saved in last.pt: a resume that repeats a validation would otherwise drift)
    val_set = distributed.shard(val_set)  # under torchrun: this rank's images (evaluate_model all-reduces)
    return DataLoader(val_set, batch_size=1, collate_fn=eval_collate, num_workers=workers,
                      pin_memory=dev.type == "cuda", persistent_workers=workers > 0,
                      worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(0))


def build_model_for(recipe: Recipe, dev: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model, forward): the model on `dev` (channels_last on CUDA) and what training calls: the
    same module, or its torch.compile wrapper when `schedule.compile` is set and `dev` is CUDA.
    Checkpoints and validation use `model` (state dict keys without the compile prefix)."""
    model = build_model(recipe.model.arch, dropout=recipe.model.dropout, aux_loss=recipe.model.aux_loss,
                        pretrained_backbone=recipe.model.pretrained_backbone)
    if dev.type == "cuda" and distributed.world_size() > 1:  # BatchNorm statistics over all GPUs' samples
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(dev)
    if dev.type != "cuda":
        return model, model
    model = model.to(memory_format=torch.channels_last)
    return model, torch.compile(model) if recipe.schedule.compile else model


def _no_sync(forward: torch.nn.Module):
    """DDP's no_sync() (gradients kept local: an accumulation micro-step), else nothing."""
    ddp = getattr(forward, "_orig_mod", forward)  # under torch.compile
    return ddp.no_sync() if hasattr(ddp, "no_sync") else contextlib.nullcontext()


def train_step(forward: torch.nn.Module, images, targets, loss_fn, optimizer,
               scheduler, dev: torch.device) -> torch.Tensor:
    """One optimizer step on a CPU batch; returns the loss (on the device, not read). With lists of
    micro-batches (gradient accumulation): the mean of their losses is minimised, gradients summed
    locally and (under DDP) all-reduced once, in the last micro-batch's backward."""
    if isinstance(images, list):
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=dev)
        for k, (x, y) in enumerate(zip(images, targets)):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with _no_sync(forward) if k < len(images) - 1 else contextlib.nullcontext():
                with autocast(dev):
                    loss = loss_fn(forward(x), y)
                (loss / len(images)).backward()
            total += loss.detach()
        optimizer.step()
        scheduler.step()
        return total / len(images)
    images = images.to(dev, non_blocking=True)
    targets = targets.to(dev, non_blocking=True)
    if dev.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(dev):
        loss = loss_fn(forward(images), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss


class LossMeter:
    """An epoch's summed loss, kept on the device: `add` never waits for the device. `poll()` starts
    a copy of the sum to the host (non-blocking on CUDA: pinned buffer + event) unless one is in
    flight, and returns (mean, steps) of the latest copy the device has finished, or None. On the
    CPU there is nothing to wait for: it returns the current mean."""

    def __init__(self, dev: torch.device):
        self.dev, self.sum, self.steps = dev, torch.zeros((), device=dev), 0
        self.latest: tuple[float, int] | None = None
        self._host = torch.zeros((), pin_memory=True) if dev.type == "cuda" else None
        self._event, self._pending = None, 0

    def add(self, loss: torch.Tensor) -> None:
        self.sum += loss.detach()
        self.steps += 1

    def poll(self) -> tuple[float, int] | None:
        if self._host is None:
            self.latest = (self.sum.item() / max(self.steps, 1), self.steps)
            return self.latest
        if self._event is not None and self._event.query():
            self.latest, self._event = (self._host.item() / max(self._pending, 1), self._pending), None
        if self._event is None:
            self._host.copy_(self.sum, non_blocking=True)
            self._event, self._pending = torch.cuda.Event(), self.steps
            self._event.record(torch.cuda.current_stream(self.dev))
        return self.latest

    def global_sum(self) -> torch.Tensor:
        """The sum, averaged over ranks under torchrun (a collective: every rank calls it); else `sum`."""
        if distributed.world_size() == 1:
            return self.sum
        return distributed.all_reduce_sum(self.sum.detach().clone()) / distributed.world_size()

    def mean(self, local: bool = False) -> float:
        """The epoch's mean loss (over ranks, unless `local`): one synchronisation."""
        return ((self.sum if local else self.global_sum()) / max(self.steps, 1)).item()


class _SigintGuard:
    """Training's SIGINT handler. While `held` (a step and its bookkeeping, a checkpoint, the store's
    writes) Ctrl-C is only noted and raised as KeyboardInterrupt at `release()`; elsewhere (waiting
    for data, validating) at once. Either way it leaves a state a checkpoint captures exactly. A
    second Ctrl-C while held raises at once: `held` is then still true (the state may be torn)."""

    def __init__(self):
        self.held = self.pending = False

    def __call__(self, signum, frame):
        if self.held and not self.pending:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def release(self) -> None:
        self.held = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def released(self, items):
        """Iterate `items`, held except while waiting for the next one."""
        items = iter(items)
        while True:
            self.release()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.held = True
            yield item


def _diverged(loss: float, epoch: int, iteration: int) -> TrainingDiverged:
    return TrainingDiverged(f"training loss became {loss} in epoch {epoch + 1} (by iteration {iteration}); "
                            f"lower the learning rate")


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


def _steps(loader, accum: int):
    """The loader's batches, or (with gradient accumulation) lists of `accum` micro-batches per step."""
    if accum == 1:
        return loader

    def grouped():
        it = iter(loader)
        while group := list(itertools.islice(it, accum)):
            yield [x for x, _ in group], [y for _, y in group]
    return grouped()


def train(recipe: Recipe, *, store: Store | None, data_root=None, device: str = "auto", weights_dir=None,
          resume: bool = False, progress: bool = True, micro_batch: int | None = None) -> TrainResult:
    """Under torchrun (`engine.distributed.init` called first) every rank runs this: rank 0 alone
    writes checkpoints and store rows (`store` may be None elsewhere), the others wait at barriers.
    `micro_batch` caps the per-process batch: gradient accumulation keeps the recipe's total."""
    check.require_clean(data_root)  # pairing, names, header sizes and modes (no pixel decoded): fail before any work
    dev = distributed.local_device(select_device(device))
    main, world = distributed.is_main(), distributed.world_size()
    progress = progress and main
    generator = seed_everything(recipe.schedule.seed)  # the same on every rank: the same permutations
    data, sched = recipe.data, recipe.schedule
    train_set, val_set = build_datasets(recipe, data_root)
    micro, accum, batch_size, note = distributed.plan_batch(min(data.batch_size, len(train_set)), world, micro_batch)
    if main and (progress or world > 1 or accum > 1):
        print(f"effective total batch {batch_size} = world {world} x micro {micro} x accumulation {accum}{note}",
              flush=True)
    train_loader = build_train_loader(train_set, recipe, dev, generator, accum=accum, batch_size=batch_size)
    val_loader = build_val_loader(val_set, recipe, dev)
    iters_per_epoch = len(train_loader) // accum
    max_iters = sched.max_iters or math.inf

    model, forward = build_model_for(recipe, dev)
    if sched.compile and dev.type != "cuda" and progress:
        print("schedule.compile: torch.compile is used on CUDA only; training on the CPU without it")
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, iters_per_epoch)
    loss_fn = SegmentationLoss(sched.loss, recipe.model.aux_weight)
    out_dir = checkpoints.variant_dir(recipe.name, weights_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    start_epoch, iteration, best_miou, run_uid, run_id, elapsed = 0, 0, -1.0, uuid.uuid4().hex, None, 0.0
    meter, epoch_s = LossMeter(dev), 0.0  # the epoch in progress: its losses so far, its seconds before this session
    if resume and not last_path.is_file():
        if main:
            print(f"--resume: no {last_path} yet, starting a new run")
    elif resume:
        ckpt = checkpoints.load(last_path, map_location=dev)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if dev.type == "cuda" and "cuda" in ckpt["rng"]:  # dropout on CUDA draws from the device's generator
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), dev)
        generator.set_state(ckpt["rng"]["loader"].cpu())  # its state at the start of epoch start_epoch
        # no GradScaler state to restore: there is none (bf16 autocast on CUDA, fp32 on the CPU: no loss scaling)
        start_epoch, iteration = ckpt["epoch"] + 1, ckpt["iteration"]  # "epoch": the last one completed
        if "in_epoch" in ckpt:  # a mid-epoch checkpoint: that epoch's first steps are done (and skipped unloaded)
            done = ckpt["in_epoch"]
            meter.sum, meter.steps, epoch_s = done["loss_sum"].to(dev), done["steps"], done["seconds"]
            train_loader.batch_sampler.skip = meter.steps if iteration < max_iters else iters_per_epoch
        best_miou, run_uid, elapsed = ckpt["best_miou"], ckpt["run_uid"], ckpt["elapsed_seconds"]
        existing = store.run_by_uid(run_uid) if main else None
        run_id = existing["id"] if existing else None
        if run_id is not None:
            store.reopen_run(run_id)
        if main:
            print(f"resuming {recipe.name} at epoch {start_epoch + 1} (step {meter.steps}), iteration {iteration}")
    run_uid = distributed.broadcast_object(run_uid)  # one run: rank 0's uid everywhere
    if world > 1:  # after any resume: DDP starts from rank 0's weights
        forward = distributed.wrap(model, dev)
        if sched.compile and dev.type == "cuda":
            forward = torch.compile(forward)
    if run_id is None and main:
        run_id = store.start_run(
            variant=recipe.name, arch=recipe.model.arch, backbone=BACKBONES[recipe.model.arch], profile=recipe.profile,
            hyperparameters=recipe.to_dict(), dataset=train_set.name, data_root=str(train_set.root),
            train_images=len(train_set), val_images=len(val_set), device=device_name(dev),
            code_version=checkpoints.code_version(), uid=run_uid)

    t_start, train_time, images_seen = time.perf_counter() - elapsed, 0.0, 0  # time from earlier sessions counts
    best_state, best_info, best_written = None, None, None
    common = dict(arch=recipe.model.arch, recipe=recipe.to_dict(), run_uid=run_uid)

    def save_checkpoints(epoch: int, iteration: int, val: dict | None, loss_sum=None) -> None:
        """At the end of `epoch` (its validation `val`), or in the middle of it (`val` None: last.pt then
        holds the position in the epoch, the loss sum so far and the loader's state at the epoch's start)."""
        nonlocal best_written
        if best_state is not None and best_written is not best_state:
            checkpoints.save(best_path, best_state, **common, **best_info, store=store, run_id=run_id)
            best_written = best_state
        rng = {"torch": torch.get_rng_state(), "loader": generator.get_state() if val else epoch_rng}
        if dev.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(dev)
        extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
                 "best_miou": best_miou, "elapsed_seconds": time.perf_counter() - t_start}
        if val is None:
            extra["in_epoch"] = {"steps": meter.steps, "loss_sum": meter.sum if loss_sum is None else loss_sum,
                                 "seconds": time.perf_counter() - t0}
        checkpoints.save(last_path, model.state_dict(), **common, epoch=epoch if val else epoch - 1, iteration=iteration,
                         metrics={k: val[k] for k in ("miou", "pixel_accuracy", "mean_loss")} if val else {},
                         extra=extra, store=store, run_id=run_id)  # each file's sha256 recorded in the store

    # the epoch in progress (its losses so far in `meter`), the loader's state at its start, its clock
    epoch, epoch_rng, t0 = start_epoch, generator.get_state(), time.perf_counter() - epoch_s
    cudnn_benchmark = torch.backends.cudnn.benchmark
    guard = _SigintGuard()  # installed only where Ctrl-C means KeyboardInterrupt (not ignored, not handled elsewhere)
    sigint = (threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if sigint:
        signal.signal(signal.SIGINT, guard)
    try:
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        if data.cache and start_epoch < sched.epochs and iteration < max_iters:
            t_cache = time.perf_counter()
            for ds in (train_set, val_set):  # here, before the loaders start (fork) their workers
                ds.build_cache(workers=data.workers)
            if progress:
                print(f"cached {len(train_set)} train + {len(val_set)} val images in memory "
                      f"({(train_set.cache_bytes + val_set.cache_bytes) / 1e6:.0f} MB, "
                      f"{time.perf_counter() - t_cache:.1f}s)", flush=True)
        guard.held = True  # from here on Ctrl-C waits for a consistent state (see _SigintGuard)
        while epoch < sched.epochs and (iteration < max_iters or meter.steps):  # a begun epoch always ends
            model.train()
            iter0 = iteration - meter.steps
            bar = tqdm(_steps(train_loader, accum), desc=f"{recipe.name} epoch {epoch + 1}/{sched.epochs}",
                       disable=not progress, leave=False, dynamic_ncols=True, initial=meter.steps,
                       total=iters_per_epoch)
            for images, targets in guard.released(bar):
                meter.add(train_step(forward, images, targets, loss_fn, optimizer, scheduler, dev))
                iteration += 1
                images_seen += sum(x.shape[0] for x in images) if accum > 1 else images.shape[0]
                if meter.steps % LOSS_READ_EVERY == 0 or meter.steps == 1:  # never waits for the device (LossMeter)
                    # under torchrun: the mean over ranks (a collective), so that every rank stops together
                    latest = meter.poll() if world == 1 else (meter.mean(), meter.steps)
                    if latest is not None and not math.isfinite(latest[0]):
                        raise _diverged(latest[0], epoch, iter0 + latest[1])
                    if latest is not None and progress:
                        bar.set_postfix(loss=f"{latest[0]:.3f}",
                                        img_s=f"{meter.steps * batch_size / (time.perf_counter() - t0):.1f}")
                if iteration >= max_iters:  # only max_iters cuts an epoch short
                    break
                if sched.checkpoint_every_iters and iteration % sched.checkpoint_every_iters == 0:
                    loss_sum = meter.global_sum()  # over ranks: what a resume (any number of ranks) starts from
                    if not math.isfinite(loss := (loss_sum / max(meter.steps, 1)).item()):  # never checkpointed
                        raise _diverged(loss, epoch, iteration)
                    if main:
                        save_checkpoints(epoch, iteration, None, loss_sum)
                    distributed.barrier()
            bar.close()
            train_loss = meter.mean()  # the epoch's one synchronisation, before the clock stops
            epoch_train_s = time.perf_counter() - t0
            train_time += epoch_train_s - epoch_s  # this session's part
            if not math.isfinite(train_loss):
                raise _diverged(train_loss, epoch, iteration)
            guard.release()  # Ctrl-C during validation acts at once
            val = evaluate.evaluate_model(model, val_loader, dev, loss_fn=loss_fn.single, progress=False)
            guard.held = True
            if main:
                store.log_epoch(run_id, epoch=epoch + 1, iteration=iteration, train_loss=train_loss,
                                val_loss=val["mean_loss"], val_miou=val["miou"],
                                val_pixel_accuracy=val["pixel_accuracy"], lr=optimizer.param_groups[0]["lr"],
                                seconds=time.perf_counter() - t0,
                                images_per_second=meter.steps * batch_size / epoch_train_s)
            if val["miou"] > best_miou:  # kept in memory; written with the next checkpoint
                best_miou = val["miou"]  # every rank: the same (all-reduced) validation
                best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()} if main else None
                best_info = dict(epoch=epoch, iteration=iteration, metrics={k: val[k] for k in ("miou", "pixel_accuracy", "mean_loss")})
            last_epoch = epoch + 1 >= sched.epochs or iteration >= max_iters
            if main and (last_epoch or (sched.checkpoint_every and (epoch + 1) % sched.checkpoint_every == 0)):
                save_checkpoints(epoch, iteration, val)
            distributed.barrier()
            if progress:
                print(f"{recipe.name} epoch {epoch + 1}: loss {train_loss:.3f}  val mIoU {val['miou']:.4f}  "
                      f"pixel acc {val['pixel_accuracy']:.4f}  ({time.perf_counter() - t0:.1f}s)", flush=True)
            epoch, meter, epoch_rng, epoch_s, t0 = epoch + 1, LossMeter(dev), generator.get_state(), 0.0, time.perf_counter()
    except KeyboardInterrupt:
        # no collectives from here on (other ranks may be gone): rank 0's own loss sum is saved
        saved = not guard.held and math.isfinite(meter.mean(local=True))  # else a second Ctrl-C mid-step: maybe torn
        guard.held = True  # a further Ctrl-C waits for the checkpoint and the store
        if saved and main:
            save_checkpoints(epoch, iteration, None)
        how = (f"{last_path} saved at iteration {iteration}; the same command with --resume continues exactly"
               if saved else f"{last_path} not updated (stopped inside a step, or the loss is not finite)")
        if main:
            print(f"interrupted: {how}", file=sys.stderr, flush=True)
            store.finish_run(run_id, status="interrupted", error=f"interrupted by the user (Ctrl-C): {how}",
                             train_seconds=time.perf_counter() - t_start)
        raise
    except BaseException as e:
        if main and run_id is not None:
            store.finish_run(run_id, status="failed", error=f"{type(e).__name__}: {e}",
                             train_seconds=time.perf_counter() - t_start)
        raise
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        if sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    total = time.perf_counter() - t_start
    ips = images_seen * world / train_time if train_time > 0 else 0.0  # every rank sees as many images
    if main:
        store.finish_run(run_id, status="completed", train_seconds=total, images_per_second=ips,
                         best_miou=best_miou, checkpoint=str(best_path))
    distributed.barrier()  # the other ranks return once rank 0's rows and files are written
    return TrainResult(run_id, run_uid, epoch, iteration, best_miou, best_path, last_path, total, ips)

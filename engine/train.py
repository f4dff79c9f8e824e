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
from dataclasses import dataclass, field
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
from engine.errors import UserError
from engine.losses import SegmentationLoss
from engine.metrics import Metrics
from engine.models import BACKBONES, build_model
from engine.profiling import device_name
from engine.runtime import autocast, select_device
from engine.store import Store


LOSS_READ_EVERY = 10  # steps between (non-blocking) reads of the running loss (and after step 1):
                     # the progress bar and the divergence check


class TrainingDiverged(UserError, RuntimeError):
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
    Checkpoints and validation use `model` (state dict keys without the compile prefix). With
    `model.init_checkpoint` the model is that checkpoint's (architecture and weights)."""
    if recipe.model.init_checkpoint:
        model = checkpoints.build_from(checkpoints.load(recipe.model.init_checkpoint)).train()
    else:
        model = build_model(recipe.model.arch, dropout=recipe.model.dropout, aux_loss=recipe.model.aux_loss,
                            pretrained_backbone=recipe.model.pretrained_backbone, head=recipe.model.head)
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

    @classmethod
    @contextlib.contextmanager
    def installed(cls):
        """A guard, handling SIGINT while the block runs where Ctrl-C means KeyboardInterrupt (the main
        thread, the default handler: not ignored, not handled elsewhere); the default handler after."""
        guard = cls()
        own = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        if own:
            signal.signal(signal.SIGINT, guard)
        try:
            yield guard
        finally:
            if own:
                signal.signal(signal.SIGINT, signal.default_int_handler)

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


@contextlib.contextmanager
def _cudnn_benchmark(dev: torch.device):
    """On CUDA, cuDNN picks its fastest kernels for the fixed input sizes; the setting is restored after."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or dev.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


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


def total_iters(recipe: Recipe, iters_per_epoch: int) -> int:
    """Iterations the schedule runs: `epochs` x iterations per epoch, cut at `max_iters`; an
    iteration schedule (`epochs: null`) runs exactly `max_iters`."""
    epochs, max_iters = recipe.schedule.epochs, recipe.schedule.max_iters
    by_epochs = epochs * iters_per_epoch if epochs is not None else math.inf
    return max(1, int(min(by_epochs, max_iters or math.inf)))


def epochs_to_run(recipe: Recipe, iters_per_epoch: int) -> int:
    """`schedule.epochs`, or for an iteration schedule as many epochs as `max_iters` needs."""
    if recipe.schedule.epochs is not None:
        return recipe.schedule.epochs
    return math.ceil(recipe.schedule.max_iters / max(1, iters_per_epoch))


def poly_factor(iteration: int, total: int, power: float, floor: float = 0.0) -> float:
    """The poly schedule's lr multiplier after `iteration` steps of `total`, as mmsegmentation's PolyLR:
    floor + (1 - floor) (1 - iteration / total) ** power, where floor = min_lr / lr; `floor` from `total` on."""
    return floor + (1 - floor) * max(0.0, 1 - iteration / total) ** power


def build_scheduler(optimizer, recipe: Recipe, iters_per_epoch: int):
    """Stepped once per iteration: StepLR's step_size is in epochs, converted here; poly decays over
    the schedule's total iterations (`total_iters`)."""
    cfg = recipe.schedule.scheduler
    if cfg.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size * iters_per_epoch, gamma=cfg.gamma)
    if cfg.name == "poly":
        total, floor = total_iters(recipe, iters_per_epoch), cfg.min_lr / recipe.schedule.optimizer.lr
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: poly_factor(it, total, cfg.power, floor))
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


@dataclass
class TrainState:
    """Where a run stands. With the weights, optimizer and scheduler it is all that `last.pt` keeps,
    so `--resume` continues exactly: the epoch in progress (0-based), its steps and summed loss so
    far (`meter`: a mid-epoch checkpoint's position), the loader generator's state at its start,
    the iteration count, the best validation mIoU, the run uid and the clocks (earlier processes
    included). `train_seconds` and `images` count this process's training only (its img/s)."""
    run_uid: str
    loader_rng: torch.Tensor
    meter: LossMeter
    epoch: int = 0
    iteration: int = 0
    best_miou: float = -1.0
    run_clock: float = field(default_factory=time.perf_counter)    # perf_counter() at the run's start
    epoch_clock: float = field(default_factory=time.perf_counter)  # perf_counter() at the epoch's start
    epoch_earlier_seconds: float = 0.0   # seconds of this epoch spent in an earlier process
    train_seconds: float = 0.0
    images: int = 0

    @classmethod
    def new(cls, generator: torch.Generator, dev: torch.device) -> TrainState:
        return cls(run_uid=uuid.uuid4().hex, loader_rng=generator.get_state(), meter=LossMeter(dev))

    @classmethod
    def from_checkpoint(cls, ckpt: dict, dev: torch.device) -> TrainState:
        """The state a `last.pt` holds (its "epoch" is the last epoch completed; "in_epoch", when it was
        written mid-epoch, the steps done in the next one)."""
        done = ckpt.get("in_epoch", {"steps": 0, "loss_sum": torch.zeros(()), "seconds": 0.0})
        meter = LossMeter(dev)
        meter.sum, meter.steps = done["loss_sum"].to(dev), done["steps"]
        now = time.perf_counter()
        return cls(run_uid=ckpt["run_uid"], loader_rng=ckpt["rng"]["loader"].cpu(), meter=meter,
                   epoch=ckpt["epoch"] + 1, iteration=ckpt["iteration"], best_miou=ckpt["best_miou"],
                   run_clock=now - ckpt["elapsed_seconds"], epoch_clock=now - done["seconds"],
                   epoch_earlier_seconds=done["seconds"])

    def to_checkpoint(self, *, mid_epoch: bool, loss_sum: torch.Tensor | None = None) -> dict:
        """The fields of `last.pt` that hold this state, with the global RNGs as they are now.
        `loss_sum`: the epoch's loss sum to record (default the meter's, this rank's own)."""
        now, dev = time.perf_counter(), self.meter.dev
        rng = {"torch": torch.get_rng_state(), "loader": self.loader_rng}
        if dev.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(dev)
        fields = {"epoch": self.epoch - 1, "iteration": self.iteration, "rng": rng, "best_miou": self.best_miou,
                  "elapsed_seconds": now - self.run_clock}
        if mid_epoch:
            fields["in_epoch"] = {"steps": self.meter.steps, "seconds": now - self.epoch_clock,
                                  "loss_sum": self.meter.sum if loss_sum is None else loss_sum}
        return fields

    def next_epoch(self, generator: torch.Generator) -> None:
        self.epoch += 1
        self.loader_rng, self.meter = generator.get_state(), LossMeter(self.meter.dev)
        self.epoch_clock, self.epoch_earlier_seconds = time.perf_counter(), 0.0


@dataclass
class Setup:
    """What a run trains with, built once by `setup`."""
    recipe: Recipe
    dev: torch.device
    model: torch.nn.Module       # checkpoints and validation read it (state dict keys without wrappers)
    forward: torch.nn.Module     # what a step calls: the model, or its DDP / torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: SegmentationLoss
    generator: torch.Generator   # the training loader's (its state is part of TrainState)
    train_set: CityscapesDataset
    val_set: CityscapesDataset
    train_loader: DataLoader
    val_loader: DataLoader
    accum: int                   # micro-batches per optimizer step
    batch_size: int              # images per optimizer step, all ranks
    iters_per_epoch: int
    max_iters: float             # schedule.max_iters, or inf
    epochs: int                  # schedule.epochs, or what an iteration schedule's max_iters needs


def _metrics(val: Metrics) -> dict:
    return {"miou": val.miou, "pixel_accuracy": val.pixel_accuracy, "mean_loss": val.mean_loss}


class Recorder:
    """Every side effect of training - store rows, checkpoint files, log lines - in one place, on rank
    0 only: on torchrun's other ranks each method does nothing. `say` prints on rank 0; lines that
    follow progress are printed by callers only where `progress` is set."""

    def __init__(self, store: Store | None, recipe: Recipe, weights_dir, progress: bool):
        self.active = distributed.is_main()
        self.store, self.recipe, self.progress = store, recipe, progress and self.active
        out = checkpoints.variant_dir(recipe.name, weights_dir)
        self.last_path, self.best_path = out / "last.pt", out / "best.pt"
        self.run_id: int | None = None
        # a derived model (`engine.compress` fine-tuning a pruned one): its starting checkpoint says how
        # it was made and, when pruned, its architecture; every checkpoint written here carries both
        init = checkpoints.load(recipe.model.init_checkpoint) if recipe.model.init_checkpoint and self.active else {}
        self.lineage = {k: init[k] for k in ("derived", "pruning") if init.get(k)}
        self._best: tuple[dict, dict] | None = None   # a better epoch's weights, not yet written

    def say(self, message: str, err: bool = False) -> None:
        if self.active:
            print(message, file=sys.stderr if err else sys.stdout, flush=True)

    def open_run(self, s: Setup, state: TrainState) -> None:
        """The run's row: the one of a resumed run's uid, marked running again, else a new one."""
        if not self.active:
            return
        existing = self.store.run_by_uid(state.run_uid)
        if existing:
            self.run_id = existing["id"]
            self.store.reopen_run(self.run_id)
            return
        r, derived = self.recipe, self.lineage.get("derived")
        parent = self.store.run_by_uid(derived.get("parent_run_uid")) if derived else None
        self.run_id = self.store.start_run(
            variant=r.name, arch=r.model.arch, backbone=BACKBONES[r.model.arch], profile=r.profile,
            hyperparameters=r.to_dict(), dataset=s.train_set.name, data_root=str(s.train_set.root),
            train_images=len(s.train_set), val_images=len(s.val_set), device=device_name(s.dev),
            code_version=checkpoints.code_version(), uid=state.run_uid,
            parent_run_id=parent["id"] if parent else None, derivation=derived)

    def log_epoch(self, state: TrainState, val: Metrics | None, **figures) -> None:
        """The epoch's row; `val` None for an epoch without validation (`schedule.val_every`)."""
        if self.active:
            self.store.log_epoch(self.run_id, epoch=state.epoch + 1, iteration=state.iteration,
                                 val_loss=val.mean_loss if val else None, val_miou=val.miou if val else None,
                                 val_pixel_accuracy=val.pixel_accuracy if val else None, **figures)

    def keep_best(self, model: torch.nn.Module, state: TrainState, val: Metrics) -> None:
        """Keep the weights of a better epoch in memory; the next checkpoint writes them to best.pt."""
        if self.active:
            weights = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
            self._best = weights, dict(epoch=state.epoch, iteration=state.iteration, metrics=_metrics(val))

    def save(self, s: Setup, state: TrainState, *, epoch_end: bool = False, val: Metrics | None = None,
             loss_sum=None) -> None:
        """best.pt when a better epoch is pending, then last.pt: at an epoch's end (`state` already in
        the next epoch; `val` its validation, None when it had none), or mid-epoch; each file's sha256
        to the store."""
        if not self.active:
            return
        common = dict(arch=self.recipe.model.arch, recipe=self.recipe.to_dict(), run_uid=state.run_uid,
                      store=self.store, run_id=self.run_id)
        if self._best is not None:
            weights, info = self._best
            checkpoints.save(self.best_path, weights, **common, **info, extra=self.lineage)
            self._best = None
        fields = state.to_checkpoint(mid_epoch=not epoch_end, loss_sum=loss_sum)
        checkpoints.save(self.last_path, s.model.state_dict(), **common, epoch=fields.pop("epoch"),
                         iteration=fields.pop("iteration"), metrics=_metrics(val) if val else {},
                         extra={"optimizer": s.optimizer.state_dict(), "scheduler": s.scheduler.state_dict(), **fields,
                                **self.lineage})

    def finish(self, status: str, state: TrainState, **fields) -> None:
        if self.active and self.run_id is not None:
            self.store.finish_run(self.run_id, status=status, train_seconds=time.perf_counter() - state.run_clock,
                                  **fields)


def setup(recipe: Recipe, dev: torch.device, data_root, micro_batch: int | None, rec: Recorder) -> Setup:
    """Seeds, datasets, loaders (batch split over ranks and micro-batches), model, optimizer, scheduler, loss."""
    generator = seed_everything(recipe.schedule.seed)  # the same on every rank: the same permutations
    train_set, val_set = build_datasets(recipe, data_root)
    world = distributed.world_size()
    micro, accum, batch_size, note = distributed.plan_batch(min(recipe.data.batch_size, len(train_set)), world,
                                                            micro_batch)
    if rec.progress or world > 1 or accum > 1:
        rec.say(f"effective total batch {batch_size} = world {world} x micro {micro} x accumulation {accum}{note}")
    train_loader = build_train_loader(train_set, recipe, dev, generator, accum=accum, batch_size=batch_size)
    model, forward = build_model_for(recipe, dev)
    if recipe.schedule.compile and dev.type != "cuda" and rec.progress:
        rec.say("schedule.compile: torch.compile is used on CUDA only; training on the CPU without it")
    optimizer = build_optimizer(model, recipe)
    iters_per_epoch = len(train_loader) // accum
    return Setup(recipe, dev, model, forward, optimizer, build_scheduler(optimizer, recipe, iters_per_epoch),
                 SegmentationLoss(recipe.schedule.loss, recipe.model.aux_weight), generator, train_set, val_set,
                 train_loader, build_val_loader(val_set, recipe, dev), accum, batch_size, iters_per_epoch,
                 recipe.schedule.max_iters or math.inf, epochs_to_run(recipe, iters_per_epoch))


def resume_state(s: Setup, rec: Recorder) -> TrainState | None:
    """The state of `last.pt` with the model, optimizer, scheduler, RNGs and the loader's position
    restored; None (a new run) when there is no `last.pt` yet."""
    if not rec.last_path.is_file():
        rec.say(f"--resume: no {rec.last_path} yet, starting a new run")
        return None
    ckpt = checkpoints.load(rec.last_path, map_location=s.dev)
    s.model.load_state_dict(ckpt["model"])
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.scheduler.load_state_dict(ckpt["scheduler"])
    # no GradScaler state to restore: there is none (bf16 autocast on CUDA, fp32 on the CPU: no loss scaling)
    torch.set_rng_state(ckpt["rng"]["torch"].cpu())
    if s.dev.type == "cuda" and "cuda" in ckpt["rng"]:  # dropout on CUDA draws from the device's generator
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), s.dev)
    state = TrainState.from_checkpoint(ckpt, s.dev)
    s.generator.set_state(state.loader_rng)  # its state at the start of the epoch in progress
    if state.meter.steps:  # a mid-epoch checkpoint: that epoch's first steps are done (and skipped unloaded)
        s.train_loader.batch_sampler.skip = state.meter.steps if state.iteration < s.max_iters else s.iters_per_epoch
    rec.say(f"resuming {s.recipe.name} at epoch {state.epoch + 1} (step {state.meter.steps}), "
            f"iteration {state.iteration}")
    return state


def _for_ranks(s: Setup) -> torch.nn.Module:
    """Under torchrun, DDP around the model (after any resume: every rank starts from rank 0's weights)."""
    if distributed.world_size() == 1:
        return s.forward
    forward = distributed.wrap(s.model, s.dev)
    return torch.compile(forward) if s.recipe.schedule.compile and s.dev.type == "cuda" else forward


def build_caches(s: Setup, state: TrainState, rec: Recorder) -> None:
    """With `data.cache`, decode and resize both splits once, before the loaders start (fork) their workers."""
    if not s.recipe.data.cache or state.epoch >= s.epochs or state.iteration >= s.max_iters:
        return
    t0 = time.perf_counter()
    for ds in (s.train_set, s.val_set):
        ds.build_cache(workers=s.recipe.data.workers)
    if rec.progress:
        rec.say(f"cached {len(s.train_set)} train + {len(s.val_set)} val images in memory "
                f"({(s.train_set.cache_bytes + s.val_set.cache_bytes) / 1e6:.0f} MB, {time.perf_counter() - t0:.1f}s)")


def train_one_epoch(s: Setup, state: TrainState, guard: _SigintGuard, rec: Recorder) -> tuple[float, float]:
    """The rest of the epoch in progress (from step `state.meter.steps`, where a resume left it), or up
    to `max_iters`; checkpoints every `schedule.checkpoint_every_iters`. Returns the epoch's mean loss
    (over ranks) and its training seconds (earlier processes included)."""
    sched, meter, world = s.recipe.schedule, state.meter, distributed.world_size()
    s.model.train()
    iter0 = state.iteration - meter.steps
    bar = tqdm(_steps(s.train_loader, s.accum), desc=f"{s.recipe.name} epoch {state.epoch + 1}/{s.epochs}",
               disable=not rec.progress, leave=False, dynamic_ncols=True, initial=meter.steps, total=s.iters_per_epoch)
    for images, targets in guard.released(bar):
        meter.add(train_step(s.forward, images, targets, s.loss_fn, s.optimizer, s.scheduler, s.dev))
        state.iteration += 1
        state.images += sum(x.shape[0] for x in images) if s.accum > 1 else images.shape[0]
        if meter.steps % LOSS_READ_EVERY == 0 or meter.steps == 1:  # never waits for the device (LossMeter)
            # under torchrun: the mean over ranks (a collective), so that every rank stops together
            latest = meter.poll() if world == 1 else (meter.mean(), meter.steps)
            if latest is not None and not math.isfinite(latest[0]):
                raise _diverged(latest[0], state.epoch, iter0 + latest[1])
            if latest is not None and rec.progress:
                bar.set_postfix(loss=f"{latest[0]:.3f}",
                                img_s=f"{meter.steps * s.batch_size / (time.perf_counter() - state.epoch_clock):.1f}")
        if state.iteration >= s.max_iters:  # only max_iters cuts an epoch short
            break
        if sched.checkpoint_every_iters and state.iteration % sched.checkpoint_every_iters == 0:
            loss_sum = meter.global_sum()  # over ranks: what a resume (any number of ranks) starts from
            if not math.isfinite(loss := (loss_sum / max(meter.steps, 1)).item()):  # never checkpointed
                raise _diverged(loss, state.epoch, state.iteration)
            rec.save(s, state, loss_sum=loss_sum)
            distributed.barrier()
    bar.close()
    train_loss = meter.mean()  # the epoch's one synchronisation, before the clock stops
    seconds = time.perf_counter() - state.epoch_clock
    state.train_seconds += seconds - state.epoch_earlier_seconds  # this process's part
    if not math.isfinite(train_loss):
        raise _diverged(train_loss, state.epoch, state.iteration)
    return train_loss, seconds


def is_last_epoch(s: Setup, state: TrainState) -> bool:
    """Whether the epoch just trained (`state.epoch`, not yet moved on) ends the schedule."""
    return state.epoch + 1 >= s.epochs or state.iteration >= s.max_iters


def validates(s: Setup, state: TrainState) -> bool:
    """Whether the epoch just trained is validated: every `schedule.val_every` epochs, and the last."""
    return (state.epoch + 1) % s.recipe.schedule.val_every == 0 or is_last_epoch(s, state)


def end_epoch(s: Setup, state: TrainState, val: Metrics | None, train_loss: float, train_seconds: float,
              rec: Recorder) -> None:
    """The epoch's row, the best weights kept, the checkpoints due, the log line; `state` moves on.
    `val` is None for an epoch without validation."""
    sched, seconds = s.recipe.schedule, time.perf_counter() - state.epoch_clock
    rec.log_epoch(state, val, train_loss=train_loss, lr=s.optimizer.param_groups[0]["lr"], seconds=seconds,
                  images_per_second=state.meter.steps * s.batch_size / train_seconds)
    if val is not None and val.miou > state.best_miou:  # every rank: the same (all-reduced) validation
        state.best_miou = val.miou
        rec.keep_best(s.model, state, val)
    last = is_last_epoch(s, state)
    state.next_epoch(s.generator)
    if last or (sched.checkpoint_every and state.epoch % sched.checkpoint_every == 0):
        rec.save(s, state, epoch_end=True, val=val)
    distributed.barrier()
    if rec.progress:
        shown = f"val mIoU {val.miou:.4f}  pixel acc {val.pixel_accuracy:.4f}" if val else "(no validation)"
        rec.say(f"{s.recipe.name} epoch {state.epoch}: loss {train_loss:.3f}  {shown}  ({seconds:.1f}s)")


def stop_interrupted(s: Setup, state: TrainState, guard: _SigintGuard, rec: Recorder) -> None:
    """Ctrl-C: last.pt at the current position (unless it came inside a step: maybe torn), the run
    marked interrupted. No collectives: other ranks may be gone, so rank 0's own loss sum is saved."""
    saved = not guard.held and math.isfinite(state.meter.mean(local=True))
    guard.held = True  # a further Ctrl-C waits for the checkpoint and the store
    if saved:
        rec.save(s, state)
    how = (f"{rec.last_path} saved at iteration {state.iteration}; the same command with --resume continues exactly"
           if saved else f"{rec.last_path} not updated (stopped inside a step, or the loss is not finite)")
    rec.say(f"interrupted: {how}", err=True)
    rec.finish("interrupted", state, error=f"interrupted by the user (Ctrl-C): {how}")


def train(recipe: Recipe, *, store: Store | None, data_root=None, device: str = "auto", weights_dir=None,
          resume: bool = False, progress: bool = True, micro_batch: int | None = None) -> TrainResult:
    """Under torchrun (`engine.distributed.init` called first) every rank runs this: rank 0 alone
    writes checkpoints and store rows (`store` may be None elsewhere), the others wait at barriers.
    `micro_batch` caps the per-process batch: gradient accumulation keeps the recipe's total."""
    check.require_clean(data_root)  # pairing, names, header sizes and modes (no pixel decoded): fail before any work
    dev = distributed.local_device(select_device(device))
    rec = Recorder(store, recipe, weights_dir, progress)
    s = setup(recipe, dev, data_root, micro_batch, rec)
    state = (resume_state(s, rec) if resume else None) or TrainState.new(s.generator, dev)
    state.run_uid = distributed.broadcast_object(state.run_uid)  # one run: rank 0's uid everywhere
    s.forward = _for_ranks(s)
    rec.open_run(s, state)
    with _SigintGuard.installed() as guard, _cudnn_benchmark(dev):
        try:
            build_caches(s, state, rec)
            guard.held = True  # from here on Ctrl-C waits for a consistent state (see _SigintGuard)
            while state.epoch < s.epochs and (state.iteration < s.max_iters or state.meter.steps):
                train_loss, seconds = train_one_epoch(s, state, guard, rec)  # a begun epoch always ends
                guard.release()  # Ctrl-C during validation acts at once
                val = (evaluate.evaluate_model(s.model, s.val_loader, dev, loss_fn=s.loss_fn.single, progress=False)
                       if validates(s, state) else None)
                guard.held = True
                end_epoch(s, state, val, train_loss, seconds, rec)
        except KeyboardInterrupt:
            stop_interrupted(s, state, guard, rec)
            raise
        except BaseException as e:
            rec.finish("failed", state, error=f"{type(e).__name__}: {e}")
            raise
    ips = state.images * distributed.world_size() / state.train_seconds if state.train_seconds > 0 else 0.0
    rec.finish("completed", state, images_per_second=ips, best_miou=state.best_miou, checkpoint=str(rec.best_path))
    distributed.barrier()  # the other ranks return once rank 0's rows and files are written
    return TrainResult(rec.run_id, state.run_uid, state.epoch, state.iteration, state.best_miou, rec.best_path,
                       rec.last_path, time.perf_counter() - state.run_clock, ips)

"""Recipes: one YAML file per variant in training/, mapped onto plain dataclasses.

A recipe has three parts, as in mmsegmentation: `model`, `data` and `schedule`; `profiles`
holds overrides (e.g. `quick`, the small settings the demo uses) deep-merged over the recipe,
which itself is the `full` profile.

What the variants share lives in a base file (training/_base.yaml), named by `base:` (a path
relative to the file naming it; a base may name its own base). The chain is deep-merged from the
farthest base to the variant file, as mmsegmentation's `_base_` but without a registry: the nearer
file's values win, mappings merge key by key, lists and scalars replace; `profiles` merge the same
way, and the chosen profile is applied last. Files whose name starts with `_` are bases, not
variants; a base sets no `name` (a variant's name defaults to its file name).
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine import settings
from engine.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "step", "poly")


class RecipeError(UserError, ValueError):
    """A recipe file that cannot be used; the message names the file and the field."""


@dataclass
class ModelConfig:
    arch: str
    dropout: float = 0.0
    aux_loss: bool = False
    aux_weight: float = 0.4
    pretrained_backbone: bool = False
    head: str | None = None  # the decode head, where a family has several (engine.models.HEADS); None = its default
    # start from this checkpoint's weights and architecture (a pruned one's included) instead of a
    # freshly built model: how `compress` fine-tunes a pruned model with its parent's recipe
    init_checkpoint: str | None = None


@dataclass
class AugmentConfig:
    scale: list[float] | None = None  # random scale range relative to the training size, e.g. [0.5, 2.0]
    crop: list[int] | None = None  # random crop [W, H] (padded with ignore where the image is smaller)
    hflip: bool = False
    photometric: bool = False


@dataclass
class DataConfig:
    size: list[int] = field(default_factory=lambda: [512, 256])  # training size [W, H]
    eval_size: list[int] | None = None  # model input size at evaluation [W, H]; None = size
    batch_size: int = 8
    workers: int = 2
    # keep the dataset decoded and resized to `size` (train) / `eval_size` (val) in memory, built once
    # before training (N x W*H*4 bytes for training; 2975 Cityscapes images at 512x256: ~1.6 GB).
    # Same tensors as reading from disk; only the random augmentation runs per sample.
    cache: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9


@dataclass
class SchedulerConfig:
    name: str = "none"
    step_size: int = 5  # epochs, for "step"
    gamma: float = 0.5
    power: float = 0.9  # for "poly"
    min_lr: float = 0.0  # for "poly": the lr it decays to (mmsegmentation's eta_min)


@dataclass
class LossConfig:
    ce: float = 1.0
    dice: float = 0.0


@dataclass
class ScheduleConfig:
    epochs: int | None = 10  # None: an iteration schedule, as many epochs as max_iters needs
    max_iters: int | None = None  # stop after this many iterations in total (None: run all epochs)
    val_every: int = 1  # validate every N epochs (and after the last one)
    seed: int = 0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint_every: int | None = 1  # write last.pt/best.pt every N epochs (always at the end); null = only at the end
    checkpoint_every_iters: int | None = None  # also write last.pt every N iterations, mid-epoch included (exact resume)
    latency_repeats: int = 10  # timed forward passes when profiling after evaluation
    compile: bool = False  # torch.compile the model for training (CUDA only; ignored on CPU)


@dataclass
class Recipe:
    name: str
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    description: str = ""
    profile: str = "full"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def eval_size(self) -> tuple[int, int]:
        return tuple(self.data.eval_size or self.data.size)


def _build(cls, raw: Any, where: str):
    """Build dataclass `cls` from a dict, recursing into nested dataclasses; unknown keys are errors."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        nested = hints[name] if dataclasses.is_dataclass(hints[name]) else None
        kwargs[name] = _build(nested, value, f"{where}.{name}") if nested else value
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise RecipeError(f"{where}: {e}") from None


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _check_size(value, where: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v >= 8 for v in value)):
        raise RecipeError(f"{where}: expected [width, height] in pixels (>= 8), got {value!r}")


def validate(recipe: Recipe, where: str) -> Recipe:
    from engine.models import ARCHS, HEADS  # local import: config must stay importable without torch models

    if recipe.model.arch not in ARCHS:
        raise RecipeError(f"{where}: model.arch {recipe.model.arch!r} is not one of {sorted(ARCHS)}")
    if recipe.model.head is not None and recipe.model.head not in HEADS[recipe.model.arch]:
        raise RecipeError(f"{where}: model.head {recipe.model.head!r}: {recipe.model.arch} has "
                          f"{', '.join(HEADS[recipe.model.arch])}")
    if recipe.model.arch == "unet" and (recipe.model.pretrained_backbone or recipe.model.aux_loss):
        raise RecipeError(f"{where}: unet has no pretrained backbone and no auxiliary head")
    if not 0.0 <= recipe.model.dropout < 1.0:
        raise RecipeError(f"{where}: model.dropout must be in [0, 1), got {recipe.model.dropout}")
    _check_size(recipe.data.size, f"{where}: data.size")
    if not isinstance(recipe.data.cache, bool):
        raise RecipeError(f"{where}: data.cache must be true or false, got {recipe.data.cache!r}")
    if isinstance(recipe.data.workers, bool) or not isinstance(recipe.data.workers, int) or recipe.data.workers < 0:
        raise RecipeError(f"{where}: data.workers must be a whole number >= 0, got {recipe.data.workers!r}")
    _check_size(recipe.data.eval_size, f"{where}: data.eval_size", allow_none=True)
    aug = recipe.data.augment
    _check_size(aug.crop, f"{where}: data.augment.crop", allow_none=True)
    if aug.scale is not None and not (len(aug.scale) == 2 and 0 < aug.scale[0] <= aug.scale[1]):
        raise RecipeError(f"{where}: data.augment.scale must be [min, max] with 0 < min <= max, got {aug.scale}")
    s = recipe.schedule
    if s.optimizer.name not in OPTIMIZERS:
        raise RecipeError(f"{where}: schedule.optimizer.name must be one of {OPTIMIZERS}, got {s.optimizer.name!r}")
    if s.scheduler.name not in SCHEDULERS:
        raise RecipeError(f"{where}: schedule.scheduler.name must be one of {SCHEDULERS}, got {s.scheduler.name!r}")
    if s.epochs is None and not s.max_iters:
        raise RecipeError(f"{where}: schedule.epochs: null (an iteration schedule) needs schedule.max_iters")
    if not (s.optimizer.lr > 0 and (s.epochs is None or s.epochs >= 1) and recipe.data.batch_size >= 1):
        raise RecipeError(f"{where}: lr, epochs and batch_size must be positive")
    if isinstance(s.val_every, bool) or not isinstance(s.val_every, int) or s.val_every < 1:
        raise RecipeError(f"{where}: schedule.val_every must be a whole number >= 1, got {s.val_every!r}")
    if not 0.0 <= s.scheduler.min_lr < s.optimizer.lr:
        raise RecipeError(f"{where}: schedule.scheduler.min_lr must be >= 0 and below the lr, got {s.scheduler.min_lr}")
    if s.checkpoint_every is not None and s.checkpoint_every < 1:
        raise RecipeError(f"{where}: schedule.checkpoint_every must be >= 1 or null (only at the end)")
    n = s.checkpoint_every_iters
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise RecipeError(f"{where}: schedule.checkpoint_every_iters must be a whole number >= 1 or null, got {n!r}")
    if not isinstance(s.compile, bool):
        raise RecipeError(f"{where}: schedule.compile must be true or false, got {s.compile!r}")
    if s.max_iters is not None and s.max_iters < 1:
        raise RecipeError(f"{where}: schedule.max_iters must be >= 1 or null")
    if s.loss.ce < 0 or s.loss.dice < 0 or s.loss.ce + s.loss.dice == 0:
        raise RecipeError(f"{where}: schedule.loss needs a positive ce and/or dice weight")
    return recipe


def recipe_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise RecipeError(f"recipe file {p} does not exist")
        return p
    p = settings.TRAINING_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise RecipeError(f"unknown variant {str(name_or_path)!r}; known variants: {', '.join(list_variants())}")
    return p


def _read(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    return raw


def _resolve(path: Path, chain: tuple[Path, ...] = (), bases: list[Path] | None = None) -> dict:
    """The file's mapping merged over its chain of `base:` files (the farthest first), `base` removed.
    The base files read are appended to `bases`, nearest first."""
    raw = _read(path)
    if chain and "name" in raw:
        raise RecipeError(f"{path}: a base must not set name (it is named by base: in {chain[-1]}); "
                          "each variant's name is its file name")
    if "base" not in raw:
        return raw
    ref = raw.pop("base")
    if not isinstance(ref, str) or not ref.strip():
        raise RecipeError(f"{path}: base must be a file name relative to this file (e.g. _base.yaml), got {ref!r}")
    target = path.parent / ref
    if not target.is_file():
        raise RecipeError(f"{path}: base: {ref!r} does not exist (looked for {target})")
    seen = chain + (path,)
    if any(target.resolve() == p.resolve() for p in seen):
        raise RecipeError(f"{path}: base: {ref!r} makes a cycle: {' -> '.join(str(p) for p in seen + (target,))}")
    if bases is not None:
        bases.append(target)
    try:
        base = _resolve(target, seen, bases)
    except RecipeError as e:
        if chain:  # already said by the nearer file's frame
            raise
        raise RecipeError(f"{path}: in base: {ref!r}: {e}") from None
    return _merge(base, raw)


def load_recipe(name_or_path: str | Path, profile: str = "full") -> Recipe:
    path = recipe_path(name_or_path)
    if path.name.startswith("_"):
        raise RecipeError(f"{path}: {path.stem!r} is a base (settings the variants share), not a variant; "
                          f"known variants: {', '.join(list_variants())}")
    bases: list[Path] = []
    raw = _resolve(path, bases=bases)
    profiles = raw.pop("profiles", None) or {}
    if profile != "full":
        if profile not in profiles:
            raise RecipeError(f"{path}: no profile {profile!r} (profiles: full, {', '.join(profiles)})")
        raw = _merge(raw, profiles[profile])
    raw.setdefault("name", path.stem)
    try:
        return validate(_build(Recipe, {**raw, "profile": profile}, str(path)), str(path))
    except RecipeError as e:
        if not bases:
            raise
        raise RecipeError(f"{e} (read with its base: {', '.join(str(b) for b in bases)})") from None


def recipe_from_dict(raw: dict, where: str) -> Recipe:
    """A recipe from its `to_dict()` (what a checkpoint and a run keep), checked like a file's."""
    return validate(_build(Recipe, raw, where), where)


def schedule_summary(recipe: Recipe) -> str:
    """One line: how long the recipe trains and on what, e.g. "80000 iterations x batch 8 = 640000
    images; 1024x512 crops of 2048x1024, scale 0.5-2.0; evaluated at 2048x1024; ImageNet backbone"."""
    s, d = recipe.schedule, recipe.data
    length = (f"{s.max_iters} iterations x batch {d.batch_size} = {s.max_iters * d.batch_size} images" if s.epochs is None
              else f"{s.epochs} epochs x batch {d.batch_size}" + (f" (at most {s.max_iters} iterations)" if s.max_iters else ""))
    crop = d.augment.crop or d.size
    scale = f", scale {d.augment.scale[0]:g}-{d.augment.scale[1]:g}" if d.augment.scale else ""
    w, h = recipe.eval_size
    start = "ImageNet backbone" if recipe.model.pretrained_backbone else "from scratch"
    return (f"{length}; {crop[0]}x{crop[1]} crops of {d.size[0]}x{d.size[1]}{scale}; evaluated at {w}x{h}; "
            f"{s.optimizer.name} {s.optimizer.lr:g} {s.scheduler.name}; {start}")


def list_variants() -> list[str]:
    """The variants in training/: every .yaml file but the bases (names starting with `_`)."""
    return sorted(p.stem for p in settings.TRAINING_DIR.glob("*.yaml") if not p.name.startswith("_"))

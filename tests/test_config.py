import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from engine import settings
from engine.config import RecipeError, list_variants, load_recipe

# The variant table of the design: name -> (arch, optimizer, lr, scheduler, regularization, loss)
TABLE = {
    "deeplabv3_r50_adam": ("deeplabv3_r50", "adam", 1e-4, "none", None, "ce"),
    "deeplabv3_r101_sgd": ("deeplabv3_r101", "sgd", 1e-3, "step", "weight_decay", "ce"),
    "deeplabv3_r101_adamw_dropout": ("deeplabv3_r101", "adamw", 1e-4, "step", "dropout", "ce"),
    "hrnetv2_w48_adamw": ("hrnetv2_w48", "adamw", 1e-4, "step", "weight_decay", "ce"),
    "hrnetv2_w48_sgd": ("hrnetv2_w48", "sgd", 1e-3, "step", "weight_decay", "ce"),
    "hrnetv2_w48_adamw_dropout": ("hrnetv2_w48", "adamw", 1e-4, "step", "dropout", "ce"),
    "unet_ce_dice": ("unet", "adam", 1e-4, "none", None, "ce+dice"),
}


def test_the_seven_variants_exist():
    assert list_variants() == sorted(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_recipe_matches_the_variant_table(name):
    arch, opt, lr, sched, reg, loss = TABLE[name]
    r = load_recipe(name)
    assert r.name == name and r.profile == "full"
    assert r.model.arch == arch
    assert r.schedule.optimizer.name == opt and r.schedule.optimizer.lr == pytest.approx(lr)
    assert r.schedule.scheduler.name == sched
    if sched == "step":
        assert (r.schedule.scheduler.step_size, r.schedule.scheduler.gamma) == (5, 0.5)
    if opt == "sgd":
        assert r.schedule.optimizer.momentum == 0.9
    assert (r.model.dropout == 0.3) == (reg == "dropout")
    assert (r.schedule.optimizer.weight_decay > 0) == (reg == "weight_decay")
    assert (r.schedule.loss.dice > 0) == (loss == "ce+dice") and r.schedule.loss.ce > 0
    # the seed's limitation "no augmentation" is fixed in the full recipes
    aug = r.data.augment
    assert aug.scale == [0.5, 2.0] and aug.crop and aug.hflip and aug.photometric
    assert r.data.size == [512, 256]
    # the training loop's speed settings: the in-memory cache on, torch.compile opt-in
    assert r.data.cache is True and r.schedule.compile is False
    # the report's figures came from ImageNet backbones: full starts from them (UNet has none)
    assert r.model.pretrained_backbone is (arch != "unet")


def test_cache_and_compile_default_off_for_a_recipe_that_does_not_name_them(tmp_path, monkeypatch):
    _write(tmp_path, monkeypatch, "model: {arch: unet}\n")
    r = load_recipe("mine")
    assert r.data.cache is False and r.schedule.compile is False


@pytest.mark.parametrize("name", sorted(TABLE))
def test_quick_profile_overrides_only_what_it_names(name):
    full, quick = load_recipe(name), load_recipe(name, "quick")
    assert quick.profile == "quick"
    assert quick.schedule.max_iters and quick.data.size[0] < full.data.size[0]
    assert quick.schedule.optimizer == full.schedule.optimizer  # same hyperparameters, smaller budget
    assert quick.model.pretrained_backbone is False  # the demo and the tests train from scratch, offline
    assert dataclasses.replace(quick.model, pretrained_backbone=full.model.pretrained_backbone) == full.model


# The published recipes the `reference` profile follows, one row per family: mmsegmentation's
# configs/_base_/schedules/schedule_80k.py and schedule_160k.py (SGD lr 0.01 momentum 0.9 weight decay
# 5e-4, PolyLR power 0.9 eta_min 1e-4, by iteration), configs/_base_/datasets/cityscapes.py
# (RandomResize (2048, 1024) ratio 0.5-2.0, RandomCrop 512x1024, RandomFlip, PhotoMetricDistortion;
# test: the whole 2048x1024 image), configs/deeplabv3/deeplabv3_r50b-d8_4xb2-80k_cityscapes-512x1024.py
# (batch 4x2, ASPPHead dropout 0.1, FCN auxiliary head loss weight 0.4), configs/hrnet/
# fcn_hr48_4xb2-160k_cityscapes-512x1024.py (batch 4x2, no auxiliary head, dropout_ratio -1) and
# configs/unet/unet-s5-d16_fcn_4xb4-160k_cityscapes-512x1024.py (batch 4x4, dropout 0.1).
# family -> (variants, iterations, batch, head, aux weight or None, dropout, pretrained)
REFERENCE = {
    "deeplabv3": (("deeplabv3_r50_adam", "deeplabv3_r101_sgd", "deeplabv3_r101_adamw_dropout"),
                  80_000, 8, "mmseg", 0.4, 0.1, True),
    "hrnetv2_w48": (("hrnetv2_w48_adamw", "hrnetv2_w48_sgd", "hrnetv2_w48_adamw_dropout"),
                    160_000, 8, None, None, 0.0, True),
    "unet": (("unet_ce_dice",), 160_000, 16, None, None, 0.1, False),
}


@pytest.mark.parametrize("family", sorted(REFERENCE))
def test_the_reference_profile_resolves_to_the_published_hyperparameters(family):
    variants, iters, batch, head, aux, dropout, pretrained = REFERENCE[family]
    for name in variants:
        r = load_recipe(name, "reference")
        o, sch, d = r.schedule.optimizer, r.schedule.scheduler, r.data
        assert (o.name, o.lr, o.momentum, o.weight_decay) == ("sgd", 0.01, 0.9, 5e-4), name
        assert (sch.name, sch.power, sch.min_lr) == ("poly", 0.9, 1e-4), name
        assert (r.schedule.epochs, r.schedule.max_iters, d.batch_size) == (None, iters, batch), name
        assert (d.size, d.augment.scale, d.augment.crop) == ([2048, 1024], [0.5, 2.0], [1024, 512]), name
        assert d.augment.hflip and d.augment.photometric and r.eval_size == (2048, 1024), name
        assert (r.schedule.loss.ce, r.schedule.loss.dice) == (1.0, 0.0), name
        assert (r.model.head, r.model.dropout, r.model.pretrained_backbone) == (head, dropout, pretrained), name
        assert r.model.aux_loss == (aux is not None) and (aux is None or r.model.aux_weight == aux), name
        assert 7_000 <= r.schedule.val_every * 2975 / batch <= 9_000, name  # ~mmsegmentation's 8000-iteration interval
        assert "reference profile" in r.description, name


def _write(tmp_path, monkeypatch, text):
    monkeypatch.setattr(settings, "TRAINING_DIR", tmp_path)
    (tmp_path / "mine.yaml").write_text(text)


def test_adding_a_variant_is_adding_a_yaml_file(tmp_path, monkeypatch):
    _write(tmp_path, monkeypatch, "model: {arch: unet}\nschedule: {epochs: 3, optimizer: {name: sgd, lr: 0.01}}\n"
                                  "profiles: {quick: {schedule: {epochs: 1}}}\n")
    assert list_variants() == ["mine"]
    r = load_recipe("mine", "quick")
    assert (r.name, r.model.arch, r.schedule.epochs, r.schedule.optimizer.lr) == ("mine", "unet", 1, 0.01)
    assert load_recipe("mine").schedule.epochs == 3


@pytest.mark.parametrize("text,needle", [
    ("model: {arch: unet, dropuot: 0.1}\n", "dropuot"),
    ("model: {arch: resnet9000}\n", "resnet9000"),
    ("model: {arch: unet}\nschedule: {optimizer: {name: rmsprop}}\n", "rmsprop"),
    ("model: {arch: unet}\ndata: {size: [512]}\n", "data.size"),
    ("model: {arch: unet}\ndata: {augment: {scale: [2.0, 0.5]}}\n", "scale"),
    ("model: [unet\n", "not valid YAML"),
    ("model: {arch: unet}\ndata: {cache: yes please}\n", "data.cache"),
    ("model: {arch: unet}\ndata: {workers: -1}\n", "data.workers"),
    ("model: {arch: unet}\nschedule: {compile: 1}\n", "schedule.compile"),
    ("schedule: {epochs: 1}\n", "model"),
    ("model: {arch: unet}\nschedule: {epochs: null}\n", "needs schedule.max_iters"),
    ("model: {arch: unet}\nschedule: {val_every: 0}\n", "schedule.val_every"),
    ("model: {arch: hrnetv2_w48, head: mmseg}\n", "model.head"),
    ("model: {arch: unet}\nschedule: {optimizer: {lr: 0.01}, scheduler: {name: poly, min_lr: 0.1}}\n", "min_lr"),
])
def test_bad_recipes_give_a_clear_error_naming_the_field(tmp_path, monkeypatch, text, needle):
    _write(tmp_path, monkeypatch, text)
    with pytest.raises(RecipeError, match="mine.yaml") as e:
        load_recipe("mine")
    assert needle in str(e.value)


def test_unknown_variant_and_profile(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match="known variants"):
        load_recipe("nope")
    with pytest.raises(RecipeError, match="no profile 'huge'"):
        load_recipe("unet_ce_dice", "huge")


# --- shared base (training/_base.yaml) -------------------------------------------------------------

DATA = Path(__file__).parent / "data"
SNAPSHOT = DATA / "recipes_resolved.json"  # {variant: {"full": Recipe.to_dict(), "quick": ...}}
UPDATE_NOTE = (f"a recipe's resolved values changed. If you changed a recipe on purpose, update {SNAPSHOT} "
               "deliberately (and say so in the change); if you only moved settings between files, "
               "the move changed a value.")


def _differences(expected, actual, where=""):
    """Key paths where two nested dicts differ, e.g. ['schedule.optimizer.lr: 0.001 != 0.0001']."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for k in sorted(set(expected) | set(actual)):
            key = f"{where}.{k}" if where else k
            if k not in actual:
                out.append(f"{key}: missing (snapshot has {expected[k]!r})")
            elif k not in expected:
                out.append(f"{key}: {actual[k]!r} is not in the snapshot")
            else:
                out += _differences(expected[k], actual[k], key)
        return out
    return [] if expected == actual else [f"{where}: snapshot {expected!r}, now {actual!r}"]


def test_the_snapshot_covers_exactly_the_variants():
    assert sorted(json.loads(SNAPSHOT.read_text())) == list_variants(), UPDATE_NOTE


@pytest.mark.parametrize("name", sorted(TABLE))
@pytest.mark.parametrize("profile", ["full", "quick", "reference"])
def test_resolved_recipe_equals_the_snapshot(name, profile):
    expected = json.loads(SNAPSHOT.read_text())[name][profile]
    actual = json.loads(json.dumps(load_recipe(name, profile).to_dict()))  # tuples -> lists, as in the snapshot
    diff = _differences(expected, actual)
    assert not diff, f"{name} ({profile}): " + "; ".join(diff) + f"\n{UPDATE_NOTE}"


def test_variants_command_prints_the_same_table(capsys):
    from engine.cli import main

    assert main(["variants"]) == 0
    assert capsys.readouterr().out == (DATA / "variants.txt").read_text()


def _same_as_base(variant, base, where=""):
    out = []
    for k, v in variant.items():
        key = f"{where}.{k}" if where else k
        if k not in base:
            continue
        if isinstance(v, dict) and isinstance(base[k], dict):
            out += _same_as_base(v, base[k], key)
        elif v == base[k]:
            out.append(f"{key} = {v!r}")
    return out


FAMILY_BASE = {"deeplabv3_r50": "_deeplabv3.yaml", "deeplabv3_r101": "_deeplabv3.yaml",
               "hrnetv2_w48": "_hrnetv2_w48.yaml", "unet": "_unet.yaml"}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_variant_files_hold_only_their_differences(name):
    from engine.config import _resolve

    raw = yaml.safe_load((settings.TRAINING_DIR / f"{name}.yaml").read_text())
    base_file = raw.pop("base")
    assert base_file == FAMILY_BASE[TABLE[name][0]]  # each variant over its family's base, over _base.yaml
    base = _resolve(settings.TRAINING_DIR / base_file)  # the family base merged over _base.yaml
    assert "name" not in base
    repeated = _same_as_base(raw, base)
    assert not repeated, f"{name}.yaml repeats what {base_file} says (drop these lines): {', '.join(repeated)}"
    assert raw.get("name", name) == name  # the name is the file's stem


def _files(tmp_path, monkeypatch, **files):
    monkeypatch.setattr(settings, "TRAINING_DIR", tmp_path)
    for stem, text in files.items():
        (tmp_path / f"{stem}.yaml").write_text(text)


def test_a_base_can_have_a_base_and_the_nearer_file_wins(tmp_path, monkeypatch):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "_root.yaml").write_text(
        "model: {arch: unet, dropout: 0.1}\ndata: {batch_size: 2, augment: {scale: [0.5, 1.5], hflip: true}}\n"
        "schedule: {epochs: 5, optimizer: {name: sgd, lr: 0.5}}\nprofiles: {quick: {schedule: {epochs: 1, seed: 7}}}\n")
    _files(tmp_path, monkeypatch,
           _mid="base: shared/_root.yaml\ndata: {augment: {scale: [0.75, 1.25]}}\nschedule: {epochs: 6}\n"
                "profiles: {quick: {schedule: {epochs: 2}}}\n",
           mine="base: _mid.yaml\nmodel: {dropout: 0.2}\nschedule: {optimizer: {lr: 0.25}}\n")
    assert list_variants() == ["mine"]
    r = load_recipe("mine")
    assert (r.name, r.model.arch, r.model.dropout) == ("mine", "unet", 0.2)
    assert (r.data.batch_size, r.data.augment.scale, r.data.augment.hflip) == (2, [0.75, 1.25], True)
    assert (r.schedule.epochs, r.schedule.optimizer.name, r.schedule.optimizer.lr) == (6, "sgd", 0.25)
    q = load_recipe("mine", "quick")  # the profiles merge too: epochs from _mid, seed from _root
    assert (q.schedule.epochs, q.schedule.seed, q.schedule.optimizer.lr, q.model.dropout) == (2, 7, 0.25, 0.2)


def test_a_base_cycle_is_an_error_naming_the_files(tmp_path, monkeypatch):
    _files(tmp_path, monkeypatch, _a="base: _b.yaml\n", _b="base: _a.yaml\n", mine="base: _a.yaml\nmodel: {arch: unet}\n")
    with pytest.raises(RecipeError, match="cycle") as e:
        load_recipe("mine")
    assert all(f in str(e.value) for f in ("mine.yaml", "_a.yaml", "_b.yaml"))
    _files(tmp_path, monkeypatch, mine="base: mine.yaml\nmodel: {arch: unet}\n")
    with pytest.raises(RecipeError, match="cycle.*mine.yaml -> .*mine.yaml"):
        load_recipe("mine")


@pytest.mark.parametrize("files,needle", [
    ({"mine": "base: _nope.yaml\nmodel: {arch: unet}\n"}, "_nope.yaml"),
    ({"mine": "base: _b.yaml\nmodel: {arch: unet}\n", "_b": "- a list\n"}, "mapping"),
    ({"mine": "base: [_b.yaml]\nmodel: {arch: unet}\n"}, "base must be a file name"),
    ({"mine": "base: 3\nmodel: {arch: unet}\n"}, "base must be a file name"),
    ({"mine": "base: _b.yaml\nmodel: {arch: unet}\n", "_b": "name: shared\n"}, "must not set name"),
])
def test_a_bad_base_gives_a_clear_error_naming_the_file_and_the_field(tmp_path, monkeypatch, files, needle):
    _files(tmp_path, monkeypatch, **files)
    with pytest.raises(RecipeError, match="mine.yaml") as e:
        load_recipe("mine")
    assert needle in str(e.value) and "base" in str(e.value)


def test_a_base_is_not_a_variant():
    assert "_base" not in list_variants()
    with pytest.raises(RecipeError, match="is a base.*not a variant"):
        load_recipe("_base")

import pytest

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
    assert quick.model == full.model


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

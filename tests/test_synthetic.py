"""The synthetic street scenes: official Cityscapes layout, valid labels, coverage, determinism."""
from __future__ import annotations

import copy
import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from engine.classes import CLASS_NAMES, LABEL_ID_TO_TRAIN_ID, NAME_TO_LABEL_ID, VALID_LABEL_IDS
from engine.data import synthetic
from engine.data.synthetic import render_scene, write_synthetic_dataset

SIZE = (128, 64)  # (width, height)
SUFFIXES = ("gtFine_labelIds", "gtFine_instanceIds", "gtFine_color")
IMAGE_RE = re.compile(r"^leftImg8bit/(train|val)/([a-z]+)/(\2_\d{6}_\d{6})_leftImg8bit\.png$")
GT_RE = re.compile(r"^gtFine/(train|val)/([a-z]+)/(\2_\d{6}_\d{6})_(gtFine_labelIds|gtFine_instanceIds|gtFine_color)\.png$")
VOID_IDS = {i for i in VALID_LABEL_IDS if LABEL_ID_TO_TRAIN_ID[i] == 255}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("synth")
    return root, write_synthetic_dataset(root, train=2, val=2, size=SIZE, seed=0)


def _gt(root: Path, split: str, suffix: str) -> list[Path]:
    return sorted((root / "gtFine" / split).glob(f"*/*_{suffix}.png"))


def test_layout_and_naming_follow_the_official_pattern(dataset):
    root, counts = dataset
    assert counts == {"train": 2, "val": 2}
    files = _files(root)
    images, gts = {}, {}
    for rel in files:
        if rel == "README.txt":
            continue
        m = IMAGE_RE.match(rel)
        if m:
            images[(m[1], m[3])] = rel
            continue
        m = GT_RE.match(rel)
        assert m, f"unexpected file {rel}"
        gts.setdefault((m[1], m[3]), set()).add(m[4])
    assert sorted(split for split, _ in images) == ["train", "train", "val", "val"]
    assert set(gts) == set(images), "every image needs ground truth with the same stem and vice versa"
    assert all(kinds == set(SUFFIXES) for kinds in gts.values())
    for (split, stem), rel in images.items():
        city = stem.split("_")[0]
        with Image.open(root / rel) as im:
            assert (im.mode, im.size) == ("RGB", SIZE)
        for suffix, mode in zip(SUFFIXES, ("L", "I;16", "RGB")):
            with Image.open(root / "gtFine" / split / city / f"{stem}_{suffix}.png") as im:
                assert (im.mode, im.size) == (mode, SIZE), (stem, suffix)
    readme = (root / "README.txt").read_text()
    assert "python -m engine synth" in readme and "seed: 0" in readme and "128x64" in readme


def test_the_project_loader_reads_it(dataset):
    from engine.data import cityscapes

    root, _ = dataset
    assert cityscapes.dataset_name(root) == "synthetic"
    for split in ("train", "val"):
        samples = cityscapes.find_samples(root, split)
        assert len(samples) == 2
        train_ids = cityscapes.read_label(samples[0])
        assert train_ids.shape == (SIZE[1], SIZE[0]) and cityscapes.read_image(samples[0].image).shape == (SIZE[1], SIZE[0], 3)


def test_label_maps_hold_official_label_ids_not_train_ids(dataset):
    root, _ = dataset
    seen = set()
    for path in _gt(root, "train", "gtFine_labelIds") + _gt(root, "val", "gtFine_labelIds"):
        label = _read(path)
        assert label.dtype == np.uint8 and label.ndim == 2
        values = set(np.unique(label).tolist())
        assert values <= VALID_LABEL_IDS, f"{path.name}: invalid ids {values - VALID_LABEL_IDS}"
        seen |= values
    assert seen & VOID_IDS, "void label ids (unlabeled, ego vehicle, out of roi, ...) must occur"
    # Label ids, not trainIds: road is 7 (trainId 0), sky 23, car 26 — trainIds stop at 18.
    assert {NAME_TO_LABEL_ID["road"], NAME_TO_LABEL_ID["sky"], NAME_TO_LABEL_ID["car"]} <= seen
    assert max(seen) > 18 and 255 not in seen


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_train_class_appears_in_each_split(dataset, split):
    root, _ = dataset
    counts = np.zeros(256, np.int64)
    for path in _gt(root, split, "gtFine_labelIds"):
        counts += np.bincount(LABEL_ID_TO_TRAIN_ID[_read(path)].ravel(), minlength=256)
    missing = [name for t, name in enumerate(CLASS_NAMES) if counts[t] < 8]
    assert not missing, f"{split}: classes with fewer than 8 pixels: {missing}"


@pytest.mark.parametrize("size", [SIZE, (64, 32)])
def test_render_scene_honours_require(size):
    """All 19 classes forced into one scene (a split of one image needs that), for several seeds."""
    width, height = size
    for seed in range(8):
        rgb, label, inst = render_scene(np.random.default_rng(seed), width, height, require=set(CLASS_NAMES))
        assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
        assert label.shape == inst.shape == (height, width) and label.dtype == np.uint8 and inst.dtype == np.int32
        counts = np.bincount(LABEL_ID_TO_TRAIN_ID[label].ravel(), minlength=256)
        need = synthetic.min_pixels(width, height)
        assert need >= 4 and all(counts[t] >= need for t in range(19)), [n for t, n in enumerate(CLASS_NAMES) if counts[t] < need]


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in ((a, 5), (b, 5), (c, 6)):
        write_synthetic_dataset(root, train=2, val=1, size=SIZE, seed=seed)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    images = [rel for rel in files_a if rel.startswith("leftImg8bit/")]
    assert len(images) == 3 and all(files_a[rel] != files_c.get(rel) for rel in images)
    one = render_scene(np.random.default_rng(1), *SIZE)
    two = render_scene(np.random.default_rng(1), *SIZE)
    assert all(np.array_equal(x, y) for x, y in zip(one, two))


def test_instance_ids_agree_with_label_ids(dataset):
    root, _ = dataset
    has_instances = {i for i, l in id2label.items() if i >= 0 and l.hasInstances}
    n_instances = 0
    for path in _gt(root, "train", "gtFine_labelIds") + _gt(root, "val", "gtFine_labelIds"):
        label = _read(path).astype(np.int64)
        inst = _read(Path(str(path).replace("_labelIds", "_instanceIds"))).astype(np.int64)
        assert inst.shape == label.shape
        is_inst = inst >= 1000
        assert np.array_equal(inst[is_inst] // 1000, label[is_inst])
        assert np.array_equal(inst[~is_inst], label[~is_inst])
        # Things carry instances (every pixel of a car is some car), stuff never does.
        assert np.array_equal(is_inst, np.isin(label, list(has_instances)))
        n_instances += len(np.unique(inst[is_inst]))
    assert n_instances > 8


def test_official_evaluator_reads_the_ground_truth(dataset, monkeypatch):
    """Instance-level scores need the *_instanceIds.png; a perfect prediction must score 1."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    root, _ = dataset
    gts = [str(p) for p in _gt(root, "val", "gtFine_labelIds")]
    args = copy.copy(ev.args)
    args.JSONOutput, args.quiet, args.evalInstLevelScore, args.colorized = False, True, True, False
    with redirect_stdout(io.StringIO()):
        result = ev.evaluateImgLists(gts, gts, args)
    assert result["averageScoreClasses"] == pytest.approx(1.0)
    assert result["averageScoreInstClasses"] == pytest.approx(1.0)


def test_color_png_uses_the_official_colours(dataset):
    root, _ = dataset
    lut = np.zeros((256, 3), np.uint8)
    for i, l in id2label.items():
        if i >= 0:
            lut[i] = l.color
    for path in _gt(root, "train", "gtFine_color") + _gt(root, "val", "gtFine_color"):
        label = _read(Path(str(path).replace("_color", "_labelIds")))
        assert np.array_equal(_read(path), lut[label]), path.name


@pytest.mark.parametrize("kwargs", [
    {"train": 0}, {"val": 0}, {"train": -1}, {"train": 1.5}, {"size": (63, 64)}, {"size": (128, 31)},
    {"size": (128,)}, {"size": None},
])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_synthetic_dataset(tmp_path / "out", **{"train": 1, "val": 1, "size": SIZE, **kwargs})
    assert not (tmp_path / "out" / "README.txt").exists()


def test_render_scene_rejects_bad_arguments():
    with pytest.raises(ValueError):
        render_scene(np.random.default_rng(0), 32, 64)
    with pytest.raises(ValueError):
        render_scene(np.random.default_rng(0), *SIZE, require={"spaceship"})


def test_a_crash_leaves_no_dataset_marked_complete(tmp_path, monkeypatch):
    write_synthetic_dataset(tmp_path, train=3, val=1, size=SIZE)
    assert (tmp_path / "README.txt").exists()
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return render_scene(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_scene", failing)
    with pytest.raises(RuntimeError):
        write_synthetic_dataset(tmp_path, train=2, val=1, size=SIZE)
    assert not (tmp_path / "README.txt").exists()


def test_rewriting_drops_stale_scenes(tmp_path):
    write_synthetic_dataset(tmp_path, train=3, val=2, size=SIZE)
    write_synthetic_dataset(tmp_path, train=2, val=1, size=SIZE)
    assert len(list((tmp_path / "leftImg8bit" / "train").glob("*/*.png"))) == 2
    assert len(list((tmp_path / "gtFine" / "val").glob("*/*.png"))) == 3

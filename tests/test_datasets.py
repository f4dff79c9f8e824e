"""The other datasets with Cityscapes' 19 classes (ACDC, BDD100K, KITTI, a folder), each read in its
official layout from the synthetic scenes written in it: the same pixels and labels as the
Cityscapes-layout copy, the same mIoU with one model, and a one-line error naming the file for
every broken input."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from engine import classes, settings
from engine.cli import main
from engine.data import ACDC_CONDITIONS, DATASETS, DatasetError, conditions, default_root, ensure_layout, open_dataset
from engine.data.check import check_dataset
from engine.data.synthetic_layouts import write_layout

SIZE = (128, 64)
SCENES = dict(train=2, val=2, size=SIZE, seed=0)
OTHERS = ("acdc", "bdd100k", "kitti", "folder")
CASES = [(kind, c) for kind in OTHERS for c in conditions(kind, "all")]  # acdc once per condition


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """{kind: root} of the same synthetic scenes in every layout."""
    base = tmp_path_factory.mktemp("layouts")
    for kind in DATASETS:
        write_layout(kind, base / kind, **SCENES)
    return {kind: base / kind for kind in DATASETS}


@pytest.fixture
def copy(layouts, tmp_path):
    def make(kind):
        shutil.copytree(layouts[kind], tmp_path / kind)
        return tmp_path / kind
    return make


def _pairs(ds):
    return [ds.load(i) for i in range(len(ds))]


@pytest.mark.parametrize("kind,condition", CASES)
def test_each_reader_reads_its_layout_with_the_labels_of_the_cityscapes_copy(layouts, kind, condition):
    ds = open_dataset(kind, layouts[kind], "val", condition=condition)
    clean = _pairs(open_dataset("cityscapes", layouts["cityscapes"], "val"))
    if kind == "kitti":  # one split: training/ holds the train scenes, then the val scenes
        assert ds.split == "training" and len(ds) == 4
        clean = _pairs(open_dataset("cityscapes", layouts["cityscapes"], "train")) + clean
    else:
        assert ds.split == "val" and len(ds) == 2
    assert ds.name == f"synthetic-{kind}" and ds.root == layouts[kind] and ds.condition == (condition or "")
    for (image, label), (clean_image, clean_label) in zip(_pairs(ds), clean):
        assert image.shape == (SIZE[1], SIZE[0], 3) and image.dtype == np.uint8 and label.dtype == np.uint8
        assert np.array_equal(label, clean_label)  # trainIds, whatever the file held
        diff = np.abs(image.astype(int) - clean_image).mean()
        if kind == "acdc":
            assert diff > 10, (condition, diff)  # a real shift of the image
        elif kind in ("bdd100k", "folder"):
            assert 0 < diff < 12  # JPEG (quality 90) of small noisy textures
        else:
            assert diff == 0
    x, y = ds[0]  # no transform: the pair itself
    assert x.shape == (SIZE[1], SIZE[0], 3) and y.shape == (SIZE[1], SIZE[0])


def test_acdc_conditions_differ_from_each_other_and_share_the_labels(layouts):
    images = {c: _pairs(open_dataset("acdc", layouts["acdc"], "train", condition=c)) for c in ACDC_CONDITIONS}
    for a in ACDC_CONDITIONS:
        for b in ACDC_CONDITIONS:
            if a < b:
                assert all(np.abs(x.astype(int) - y).mean() > 10 for (x, _), (y, _) in zip(images[a], images[b])), (a, b)
        assert all(np.array_equal(la, lb) for (_, la), (_, lb) in zip(images[a], images["fog"]))
    night, fog = np.mean([x.mean() for x, _ in images["night"]]), np.mean([x.mean() for x, _ in images["fog"]])
    assert night < 60 < fog  # dark nights, bright haze


def test_synthetic_layouts_are_deterministic_and_marked(layouts, tmp_path):
    write_layout("acdc", tmp_path / "again", **SCENES)
    for path in sorted(layouts["acdc"].rglob("*.png")):
        assert path.read_bytes() == (tmp_path / "again" / path.relative_to(layouts["acdc"])).read_bytes()
    readme = (layouts["bdd100k"] / "README.txt").read_text()
    assert "python -m engine synth --layout bdd100k" in readme and "seed: 0" in readme and "128x64" in readme
    assert Image.open(next((layouts["bdd100k"] / "images" / "10k" / "val").glob("*.jpg"))).format == "JPEG"


def test_real_data_is_named_by_its_kind_and_the_cityscapes_dataset_keeps_its_signature(copy):
    for kind in OTHERS:
        root = copy(kind)
        (root / "README.txt").unlink()
        assert open_dataset(kind, root, "val", condition="fog" if kind == "acdc" else None).name == kind
    from engine.data.cityscapes import CityscapesDataset

    ds = CityscapesDataset(copy("cityscapes"), "val", None, False)
    assert ds.name == "synthetic" and ds.condition == "" and len(ds) == 2


def test_conditions():
    assert conditions("acdc", "all") == conditions("acdc", None) == list(ACDC_CONDITIONS)
    assert conditions("acdc", "night") == ["night"]
    for kind in ("cityscapes", "bdd100k", "kitti", "folder"):
        assert conditions(kind, None) == conditions(kind, "") == [None]
    with pytest.raises(DatasetError, match="unknown ACDC condition 'haze'; choose one of fog, night, rain, snow or all"):
        conditions("acdc", "haze")
    with pytest.raises(DatasetError, match="kitti has no conditions"):
        conditions("kitti", "fog")
    with pytest.raises(DatasetError, match="unknown dataset 'mapillary'; choose one of cityscapes, acdc"):
        conditions("mapillary", None)


def test_default_roots_are_the_variables_else_the_synthetic_copies(monkeypatch, tmp_path):
    monkeypatch.delenv("KITTI_DATASET", raising=False)
    assert default_root("kitti") == settings.REPO_ROOT / "data" / "synthetic-kitti"
    monkeypatch.setenv("KITTI_DATASET", str(tmp_path))
    assert default_root("kitti") == tmp_path
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path / "cs"))
    assert default_root("cityscapes") == tmp_path / "cs"


def test_ensure_layout_writes_the_default_synthetic_copy_once(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(settings, "DATA_DIR", tmp_path / "data")
    monkeypatch.delenv("KITTI_DATASET", raising=False)
    root = ensure_layout("kitti")
    assert root == tmp_path / "data" / "synthetic-kitti" and "writing the built-in synthetic" in capsys.readouterr().out
    assert len(open_dataset("kitti")) == 22  # the built-in scenes: 16 train + 6 val
    assert ensure_layout("kitti") == root and capsys.readouterr().out == ""  # already there
    elsewhere = tmp_path / "mine"
    assert ensure_layout("kitti", elsewhere) == elsewhere and not elsewhere.exists()  # never writes a user's root


# --- every problem: a one-line DatasetError naming the file ----------------------------------------------

LABEL_DIR = {"acdc": "gt/fog/val", "bdd100k": "labels/sem_seg/masks/val", "kitti": "training/semantic",
             "folder": "labels/val"}
IMAGE_DIR = {"acdc": "rgb_anon/fog/val", "bdd100k": "images/10k/val", "kitti": "training/image_2",
             "folder": "images/val"}
ENV = {"acdc": "ACDC_DATASET", "bdd100k": "BDD100K_DATASET", "kitti": "KITTI_DATASET",
       "folder": "SEGBENCH_FOLDER_DATASET"}


def _open(kind, root, **kw):
    return open_dataset(kind, root, "val", condition="fog" if kind == "acdc" else None, **kw)


def _files(root, rel):
    return sorted(p for p in (root / rel).rglob("*") if p.is_file())


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


@pytest.mark.parametrize("kind", OTHERS)
def test_image_without_label_and_label_without_image(copy, kind):
    root = copy(kind)
    label = _files(root, LABEL_DIR[kind])[0]
    label.rename(label.parent.parent / "aside.png")
    with pytest.raises(DatasetError) as e:
        _open(kind, root)
    assert "has no label: expected " + str(label) in _one_line(e)
    (label.parent.parent / "aside.png").rename(label)
    orphan = label.with_name("zz" + label.name)
    shutil.copy(label, orphan)
    with pytest.raises(DatasetError, match="have no image, e.g. " + orphan.name) as e:
        _open(kind, root)
    assert str(orphan.parent) in _one_line(e)


@pytest.mark.parametrize("kind", ("acdc", "kitti", "folder"))
def test_train_ids_where_label_ids_are_expected(copy, kind):
    root = copy(kind)
    label = _files(root, LABEL_DIR[kind])[0]
    Image.fromarray(classes.label_ids_to_train_ids(np.array(Image.open(label)))).save(label)
    ds = _open(kind, root)
    with pytest.raises(DatasetError, match=f"{label}: values \\[255\\] are not Cityscapes label ids") as e:
        [ds.load(i) for i in range(len(ds))]
    assert "looks like a trainId map" in _one_line(e)
    if kind == "folder":  # the folder says which flag reads it
        assert "--label-format trainIds" in str(e.value)


def test_label_ids_where_train_ids_are_expected(copy):
    root = copy("bdd100k")
    label = _files(root, LABEL_DIR["bdd100k"])[0]
    Image.fromarray(classes.train_ids_to_label_ids(np.array(Image.open(label)))).save(label)
    ds = _open("bdd100k", root)
    with pytest.raises(DatasetError, match=f"{label}: values .* are not trainIds .*looks like a label-id map") as e:
        [ds.load(i) for i in range(len(ds))]
    assert "BDD100K's sem_seg masks hold trainIds" in _one_line(e)


@pytest.mark.parametrize("kind", OTHERS)
def test_empty_split_and_missing_root(copy, kind, tmp_path):
    root = copy(kind)
    for path in _files(root, IMAGE_DIR[kind]) + _files(root, LABEL_DIR[kind]):
        path.unlink()
    with pytest.raises(DatasetError, match="split '.*' is empty: no .* (in|under) " + str(root / IMAGE_DIR[kind])):
        _open(kind, root)
    with pytest.raises(DatasetError, match=f"dataset root {tmp_path / 'nowhere'} does not exist. Set {ENV[kind]}"):
        _open(kind, tmp_path / "nowhere")


def test_kitti_has_one_labelled_split_and_acdc_needs_a_condition(layouts):
    assert open_dataset("kitti", layouts["kitti"], "train").split == "training"
    with pytest.raises(DatasetError, match="KITTI's 'test' split has no labels"):
        open_dataset("kitti", layouts["kitti"], "test")
    with pytest.raises(DatasetError, match="ACDC condition None is not one of fog, night, rain, snow"):
        open_dataset("acdc", layouts["acdc"], "val")
    with pytest.raises(DatasetError, match="a label format applies to the folder dataset only"):
        open_dataset("kitti", layouts["kitti"], "val", label_format="trainIds")


def test_a_flat_folder_of_mixed_formats_with_train_ids(tmp_path, layouts):
    """A city's own photos: no split folders (any split reads them all: split 'all'), any image format."""
    clean = open_dataset("cityscapes", layouts["cityscapes"], "val")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i, (image, label) in enumerate(_pairs(clean)):
        Image.fromarray(image).save(tmp_path / "images" / f"street{i}{('.bmp', '.webp')[i]}", lossless=True)
        Image.fromarray(label).save(tmp_path / "labels" / f"street{i}.png")
    ds = open_dataset("folder", tmp_path, "val", label_format="trainIds")
    assert ds.split == "all" and ds.name == "folder" and [s.stem for s in ds.samples] == ["street0", "street1"]
    for (image, label), (clean_image, clean_label) in zip(_pairs(ds), _pairs(clean)):
        assert np.array_equal(image, clean_image) and np.array_equal(label, clean_label)
    with pytest.raises(DatasetError, match="label format 'rgb' is not one of labelIds, trainIds"):
        open_dataset("folder", tmp_path, label_format="rgb")


# --- check-data and synth on every layout ---------------------------------------------------------------

@pytest.mark.parametrize("kind", OTHERS)
def test_check_data_is_clean_on_each_layout_and_names_a_planted_problem(copy, kind, capsys):
    root = copy(kind)
    flags = ["check-data", "--dataset", kind, "--data-root", str(root)] + (["--condition", "all"] if kind == "acdc"
                                                                           else [])
    assert main(flags) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "no problems found" in out and f"(synthetic-{kind})" in out
    expected_rows = {"acdc": 8, "bdd100k": 2, "kitti": 1, "folder": 2}[kind]  # condition x split, or split
    assert out.count(" image/label pairs (") == expected_rows
    label = _files(root, LABEL_DIR[kind])[0]
    label.unlink()
    stray = root / IMAGE_DIR[kind] / "notes.txt"
    stray.write_text("x")
    assert main(flags) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("problem: ")]
    assert any(p.startswith("problem: ") and ": image without a label (expected " + label.name in p for p in problems)
    assert any(p.startswith(f"problem: {stray}: unexpected file in the layout") for p in problems)
    assert len(problems) == 2, problems


def test_check_data_reports_a_wrong_label_format(copy):
    root = copy("folder")
    report = check_dataset(root, kind="folder", label_format="trainIds")
    assert not report.ok and all("--label-format labelIds" in p for p in report.problems)
    assert check_dataset(root, kind="folder", label_format="trainIds", full=False).ok  # values are the full check's


def test_synth_writes_each_layout(tmp_path, capsys):
    for kind in OTHERS:
        assert main(["synth", "--layout", kind, "--out", str(tmp_path / kind), "--train", "1", "--val", "1",
                     "--size", "64x32"]) == 0
        assert f"in the {kind} layout to {tmp_path / kind}" in capsys.readouterr().out
        assert len(_open(kind, tmp_path / kind)) == (2 if kind == "kitti" else 1)


# --- the key check: each layout gives the mIoU of the Cityscapes-layout copy of the same pixels ---------------

def _cityscapes_copy(ds, root):
    """The decoded pixels and trainIds of `ds`, written as PNGs in the Cityscapes layout."""
    for i, sample in enumerate(ds.samples):
        image, label = ds.load(i)
        for kind, array, suffix in (("leftImg8bit", image, "leftImg8bit"), ("gtFine", label, "gtFine_labelTrainIds")):
            d = root / kind / "val" / "city"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(d / f"city_{i:06d}_000019_{suffix}.png")
    return root


@pytest.fixture(scope="module")
def model(trained):
    from engine import checkpoints

    path = checkpoints.resolve(trained.variant, None, trained.weights)
    return checkpoints.build_from(checkpoints.load(path)), tuple(trained.recipe.data.size)


def _miou(model, dataset):
    from engine.data.transforms import eval_collate
    from engine.evaluate import evaluate_model

    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=eval_collate)
    return evaluate_model(model, loader, torch.device("cpu"), progress=False)


@pytest.mark.parametrize("kind,condition", CASES)
def test_each_layout_gives_the_miou_of_its_cityscapes_copy(layouts, model, kind, condition, tmp_path):
    from engine.data.cityscapes import CityscapesDataset
    from engine.data.transforms import EvalTransform

    net, size = model
    ds = open_dataset(kind, layouts[kind], "val", EvalTransform(size), condition=condition)
    reference = CityscapesDataset(_cityscapes_copy(ds, tmp_path / "copy"), "val", EvalTransform(size))
    got, expected = _miou(net, ds), _miou(net, reference)
    assert got.num_images == expected.num_images == len(ds) and got.miou > 0
    assert got.miou == expected.miou and got.per_class_iou == expected.per_class_iou, (kind, condition)

"""`python -m engine check-data` and the cheap check training runs first: a tiny synthetic dataset,
broken on purpose one way per test; each problem is named, the CLI exits 1, a clean dataset exits 0."""
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from engine import classes
from engine.cli import main
from engine.data.check import check_dataset, require_clean
from engine.data.cityscapes import DatasetError
from engine.data.synthetic import write_synthetic_dataset
from tests.conftest import tiny_recipe


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    write_synthetic_dataset(root, train=3, val=2, size=(64, 32), seed=0)
    return root


@pytest.fixture
def root(clean, tmp_path):
    shutil.copytree(clean, tmp_path / "data")
    return tmp_path / "data"


def _first(root, split="train", kind="leftImg8bit"):
    return sorted((root / kind / split).rglob(f"*_{kind}.png" if kind == "leftImg8bit" else "*_gtFine_labelIds.png"))[0]


def _check(capsys, root, *flags):
    """(exit code, stdout) of the real CLI, in-process."""
    code = main(["check-data", "--data-root", str(root), *flags])
    return code, capsys.readouterr().out


def _broken(capsys, root, expected, *flags):
    code, out = _check(capsys, root, *flags)
    assert code == 1, out
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert any(expected in p for p in problems), out
    return problems


def test_clean_dataset_exits_0_and_reports_split_sizes(capsys, root):
    code, out = _check(capsys, root)
    assert code == 0, out
    assert re.search(r"^  train +3 image/label pairs \(3 images, 3 label maps\)$", out, re.M)
    assert re.search(r"^  val +2 image/label pairs \(2 images, 2 label maps\)$", out, re.M)
    assert "no problems found" in out and "problem:" not in out
    assert not re.search(r"^  test ", out, re.M)  # no test folders: not a problem, not reported
    assert _check(capsys, root, "--quick")[0] == 0
    assert check_dataset(root).ok


def test_cityscapes_named_dataset_mentions_official_sizes_without_failing(capsys, root):
    (root / "README.txt").unlink()  # now named "cityscapes"
    code, out = _check(capsys, root)
    assert code == 0 and "official Cityscapes (gtFine) sizes: train 2975, val 500, test 1525" in out


def test_image_without_label(capsys, root):
    image = _first(root)
    _first(root, kind="gtFine").unlink()
    [problem] = _broken(capsys, root, f"{image}: image without a label")
    assert "_gtFine_labelTrainIds.png" in problem
    assert check_dataset(root).counts["train"] == {"images": 3, "labels": 2, "pairs": 2}


def test_label_without_image_any_official_suffix(capsys, root):
    label = _first(root, kind="gtFine")
    orphan = label.with_name("synthtown_000099_000019_gtFine_labelIds.png")
    shutil.copy(label, orphan)
    color = label.with_name("synthtown_000098_000019_gtFine_color.png")
    shutil.copy(label.with_name(label.name.replace("labelIds", "color")), color)
    problems = _broken(capsys, root, f"{orphan}: no image synthtown_000099_000019_leftImg8bit.png")
    assert any(p.startswith(f"problem: {color}: no image") for p in problems)


def test_label_in_the_wrong_city_folder_is_unpaired(capsys, root):
    label = _first(root, kind="gtFine")
    moved = root / "gtFine" / "train" / "elsewhere" / label.name
    moved.parent.mkdir()
    label.rename(moved)
    problems = _broken(capsys, root, f"{moved}: no image")
    assert any("image without a label" in p for p in problems)


def test_unexpected_names_in_the_layout(capsys, root):
    image = _first(root)
    jpg = image.with_name(image.name.replace(".png", ".jpg"))
    jpg.write_bytes(image.read_bytes())
    loose = root / "gtFine" / "train" / "notes.txt"
    loose.write_text("x")
    (image.parent / ".DS_Store").write_bytes(b"")  # hidden files are left alone
    problems = _broken(capsys, root, f"{jpg}: unexpected file in the layout; expected only *_leftImg8bit.png files")
    assert any(f"{loose}: unexpected file in the layout; expected only <city>/ folders" in p for p in problems)
    assert len(problems) == 2


def test_size_mismatch_is_found_from_headers(capsys, root):
    label = _first(root, kind="gtFine")
    Image.open(label).resize((32, 16), Image.NEAREST).save(label)
    expected = f"{_first(root)}: image is 64x32 but its label {label.name} is 32x16"
    _broken(capsys, root, expected)
    _broken(capsys, root, expected, "--quick")


def test_train_ids_saved_under_the_label_ids_name(capsys, root):
    label = _first(root, kind="gtFine")
    train_ids = classes.label_ids_to_train_ids(np.array(Image.open(label)))
    assert 255 in train_ids  # like every trainId map of a real frame (void: out of roi, ego vehicle...)
    Image.fromarray(train_ids).save(label)
    [problem] = _broken(capsys, root, f"{label}: values [255] are not Cityscapes label ids")
    assert "looks like a trainId map" in problem and "a *_labelTrainIds map saved under the _labelIds name" in problem
    assert f"rename it to {label.name.replace('labelIds', 'labelTrainIds')}" in problem
    assert _check(capsys, root, "--quick")[0] == 0  # pixel values are the full check's


def test_label_ids_saved_under_the_train_ids_name(capsys, root):
    label = _first(root, kind="gtFine")
    renamed = label.with_name(label.name.replace("labelIds", "labelTrainIds"))
    label.rename(renamed)
    [problem] = _broken(capsys, root, f"{renamed}: values [")
    assert "are not trainIds (0-18, 255)" in problem and "looks like a label-id map" in problem


def test_unexpected_label_value_is_listed(capsys, root):
    label = _first(root, kind="gtFine")
    arr = np.array(Image.open(label))
    arr[0, :3] = 77
    Image.fromarray(arr).save(label)
    [problem] = _broken(capsys, root, f"{label}: values [77] are not Cityscapes label ids (0-33).")
    assert "looks like" not in problem


@pytest.mark.parametrize("kind", ["leftImg8bit", "gtFine"])
def test_truncated_png_is_a_problem_not_a_traceback(capsys, root, kind):
    victim = _first(root, kind=kind)
    victim.write_bytes(victim.read_bytes()[:100])  # the header survives: only decoding finds it
    _broken(capsys, root, f"{victim}: ")
    assert _check(capsys, root, "--quick")[0] == 0


def test_unreadable_file_is_found_from_headers(capsys, root):
    victim = _first(root)
    victim.write_bytes(b"not a png")
    _broken(capsys, root, f"{victim}: cannot open the image", "--quick")


def test_16_bit_image(capsys, root):
    image = _first(root)
    Image.fromarray(np.full((32, 64), 4000, np.uint16)).save(image)
    assert Image.open(image).mode.startswith("I")
    _broken(capsys, root, f"{image}: image mode is I", "--quick")


def test_color_label_under_the_label_ids_name(capsys, root):
    label = _first(root, kind="gtFine")
    shutil.copy(label.with_name(label.name.replace("labelIds", "color")), label)
    _broken(capsys, root, f"{label}: label mode is RGB; expected a single-channel 8-bit map", "--quick")


def test_empty_or_missing_val_split(capsys, root):
    for kind in ("leftImg8bit", "gtFine"):
        for city in (root / kind / "val").iterdir():
            shutil.rmtree(city)
    _broken(capsys, root, "split 'val' is empty")
    shutil.rmtree(root / "gtFine" / "val")
    _broken(capsys, root, f"{root / 'gtFine' / 'val'} is missing")


def test_splits_flag_checks_only_those_splits(capsys, root):
    _first(root, split="val", kind="gtFine").unlink()
    assert _check(capsys, root, "--splits", "train")[0] == 0
    _broken(capsys, root, "image without a label", "--splits", "val")
    _broken(capsys, root, f"{root / 'leftImg8bit' / 'test'} is missing", "--splits", "test")


def test_training_refuses_a_broken_dataset_before_building_a_model(capsys, root, tmp_path):
    from engine.store import Store
    from engine.train import train

    label = _first(root, kind="gtFine")
    shutil.copy(label, label.with_name("synthtown_000099_000019_gtFine_labelIds.png"))
    Image.open(label).resize((32, 16), Image.NEAREST).save(label)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(DatasetError, match=r"^2 problem\(s\) in the dataset: .*no image.*but its label.*check-data"):
        train(tiny_recipe("unet_ce_dice"), store=store, data_root=root, device="cpu", weights_dir=tmp_path / "w",
              progress=False)
    assert store.leaderboard() == [] and not (tmp_path / "w").exists()  # no run started, nothing written
    code = main(["train", "--variant", "unet_ce_dice", "--profile", "quick", "--data-root", str(root),
                 "--db", f"sqlite:///{tmp_path / 'r.db'}", "--weights-dir", str(tmp_path / "w"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: 2 problem(s) in the dataset")


def test_training_check_decodes_no_pixels(root):
    label = _first(root, kind="gtFine")
    arr = np.array(Image.open(label))
    arr[0, 0] = 77  # found by the full check only
    Image.fromarray(arr).save(label)
    require_clean(root)
    assert not check_dataset(root).ok

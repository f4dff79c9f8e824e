"""The official-layout reader: pairing, label conversion, and a clear error for every broken input."""
import numpy as np
import pytest
from PIL import Image

from engine import classes
from engine.data.cityscapes import CityscapesDataset, DatasetError, dataset_name


def _write(root, split="train", city="aachen", seq=0, frame=19, *, label=None, kind="labelIds", image=True, size=(16, 8)):
    stem = f"{city}_{seq:06d}_{frame:06d}"
    w, h = size
    if image:
        d = root / "leftImg8bit" / split / city
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(d / f"{stem}_leftImg8bit.png")
    if label is not False:
        d = root / "gtFine" / split / city
        d.mkdir(parents=True, exist_ok=True)
        arr = np.full((h, w), classes.NAME_TO_LABEL_ID["road"], np.uint8) if label is None else label
        Image.fromarray(arr).save(d / f"{stem}_gtFine_{kind}.png")
    return stem


def test_reads_official_layout_and_converts_label_ids_to_train_ids(tmp_path):
    label = np.zeros((8, 16), np.uint8)  # unlabeled -> 255
    label[:4] = classes.NAME_TO_LABEL_ID["sky"]
    label[4:, :8] = classes.NAME_TO_LABEL_ID["car"]
    label[4:, 8:] = classes.NAME_TO_LABEL_ID["ego vehicle"]  # void -> 255
    _write(tmp_path, label=label)
    _write(tmp_path, frame=20)
    ds = CityscapesDataset(tmp_path, "train")
    assert len(ds) == 2 and ds.name == "cityscapes"
    image, y = ds[0]
    assert image.shape == (8, 16, 3) and image.dtype == np.uint8
    sky, car = classes.CLASS_NAMES.index("sky"), classes.CLASS_NAMES.index("car")
    assert (y[:4] == sky).all() and (y[4:, :8] == car).all() and (y[4:, 8:] == classes.IGNORE_INDEX).all()


def test_label_train_ids_files_are_preferred_when_present(tmp_path):
    _write(tmp_path)
    _write(tmp_path, label=np.full((8, 16), 11, np.uint8), kind="labelTrainIds")  # 11 = person as trainId
    assert (CityscapesDataset(tmp_path, "train")[0][1] == 11).all()


def test_default_root_is_cityscapes_dataset_variable(tmp_path, monkeypatch):
    _write(tmp_path, split="val")
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path))
    assert CityscapesDataset(split="val").root == tmp_path


def test_synthetic_dataset_is_named_so(tmp_path):
    _write(tmp_path)
    (tmp_path / "README.txt").write_text("Synthetic street scenes written by `python -m engine synth`.")
    assert dataset_name(tmp_path) == "synthetic"


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*CITYSCAPES_DATASET"):
        CityscapesDataset(tmp_path / "nowhere", "train")


def test_empty_split(tmp_path):
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    (tmp_path / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(DatasetError, match="split 'val' is empty"):
        CityscapesDataset(tmp_path, "val")


def test_image_without_label_names_the_file(tmp_path):
    _write(tmp_path)
    stem = _write(tmp_path, frame=21, label=False)
    with pytest.raises(DatasetError, match=f"{stem}_leftImg8bit.png has no label"):
        CityscapesDataset(tmp_path, "train")


def test_label_without_image_names_the_file(tmp_path):
    _write(tmp_path)
    stem = _write(tmp_path, frame=22, image=False)
    with pytest.raises(DatasetError, match=f"have no image, e.g. {stem}"):
        CityscapesDataset(tmp_path, "train")


def test_train_ids_saved_as_label_ids_are_refused(tmp_path):
    label = np.full((8, 16), classes.IGNORE_INDEX, np.uint8)
    label[:4] = 0
    stem = _write(tmp_path, label=label)
    with pytest.raises(DatasetError, match=f"{stem}_gtFine_labelIds.png: values \\[255\\] .*looks like a trainId map"):
        CityscapesDataset(tmp_path, "train")[0]


def test_color_label_is_refused(tmp_path):
    _write(tmp_path)
    d = tmp_path / "gtFine" / "train" / "aachen"
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(d / "aachen_000000_000019_gtFine_labelIds.png")
    with pytest.raises(DatasetError, match="single-channel"):
        CityscapesDataset(tmp_path, "train")[0]


def test_bad_train_ids_are_refused(tmp_path):
    _write(tmp_path, label=np.full((8, 16), 40, np.uint8), kind="labelTrainIds")
    with pytest.raises(DatasetError, match="are not trainIds"):
        CityscapesDataset(tmp_path, "train")[0]


def test_image_and_label_of_different_sizes(tmp_path):
    _write(tmp_path, label=np.zeros((4, 16), np.uint8))
    with pytest.raises(DatasetError, match="is 16x8 but its label"):
        CityscapesDataset(tmp_path, "train")[0]


def test_corrupt_image_names_the_file(tmp_path):
    stem = _write(tmp_path)
    (tmp_path / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=f"{stem}_leftImg8bit.png: cannot read image"):
        CityscapesDataset(tmp_path, "train")[0]

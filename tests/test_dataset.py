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
    with pytest.raises(DatasetError, match=f"{stem}_leftImg8bit.png: unreadable or corrupt image"):
        CityscapesDataset(tmp_path, "train")[0]


# --- the in-memory cache (data.cache) -------------------------------------------------------------

def _transforms():
    from engine.config import AugmentConfig
    from engine.data.transforms import EvalTransform, TrainTransform

    full = AugmentConfig(scale=[0.5, 2.0], crop=[64, 32], hflip=True, photometric=True)
    return {"train": TrainTransform([64, 32], full), "val": EvalTransform([48, 24])}


@pytest.mark.parametrize("split", ["train", "val"])
def test_cached_dataset_yields_exactly_the_uncached_tensors(synth_root, split):
    import torch

    transform = _transforms()[split]
    plain = CityscapesDataset(synth_root, split, transform)
    cached = CityscapesDataset(synth_root, split, transform, cache=True)
    cached.build_cache()
    assert cached.cache_built and cached.cache_bytes > 0
    for rep in range(3):  # repeated access: the cache is never modified by the augmentation
        for i in range(len(plain)):
            torch.manual_seed(100 * rep + i)
            x0, y0 = plain[i]
            torch.manual_seed(100 * rep + i)
            x1, y1 = cached[i]
            assert x0.dtype == x1.dtype == torch.float32 and y0.dtype == y1.dtype == torch.long
            assert torch.equal(x0, x1) and torch.equal(y0, y1), (split, i, rep)
    if split == "val":
        assert y1.shape == (64, 128)  # labels stay at full resolution


def _first(batch):
    return batch[0]


def test_cache_is_built_once_in_the_main_process_and_shared_with_workers(synth_root, tmp_path):
    """Built before the DataLoader starts its workers, the cache is all they need: with the files
    gone they still yield every sample, equal to what was read from disk."""
    import shutil

    import torch

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    transform = _transforms()["val"]  # deterministic: comparable across processes
    expected = [CityscapesDataset(root, "train", transform)[i] for i in range(4)]
    ds = CityscapesDataset(root, "train", transform, cache=True)
    ds.build_cache(workers=2)  # built with worker processes, stored here
    shutil.rmtree(root / "leftImg8bit")
    shutil.rmtree(root / "gtFine")
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=_first)
    got = list(loader)
    assert len(got) == 4
    for (x0, y0), (x1, y1) in zip(expected, got):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_an_unbuilt_cache_is_built_on_first_access_here(synth_root):
    ds = CityscapesDataset(synth_root, "train", _transforms()["val"], cache=True)
    assert not ds.cache_built
    ds[0]
    assert ds.cache_built and ds.cache_bytes == 4 * (3 * 24 * 48 + 64 * 128)


def test_cache_needs_a_two_stage_transform(synth_root):
    with pytest.raises(ValueError, match="prepare"):
        CityscapesDataset(synth_root, "train", None, cache=True)


def test_a_broken_file_fails_the_cache_build_naming_it(synth_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    victim = sorted((root / "leftImg8bit" / "train").rglob("*.png"))[2]
    victim.write_bytes(b"truncated")
    ds = CityscapesDataset(root, "train", _transforms()["train"], cache=True)
    with pytest.raises(DatasetError, match=victim.name):
        ds.build_cache()
    assert not ds.cache_built

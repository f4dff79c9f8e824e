import numpy as np
import torch

from engine.classes import IGNORE_INDEX
from engine.config import AugmentConfig
from engine.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform


def _pair(w=96, h=48):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = np.zeros((h, w), np.uint8)
    label[:, : w // 2] = 3  # left half class 3, right half class 7
    label[:, w // 2:] = 7
    image[:, : w // 2] = 10  # the left half of the image is dark
    return image, label


def test_resize_to_any_training_size_keeps_labels_discrete():
    image, label = _pair()
    for size in ([64, 32], [50, 70]):
        x, y = TrainTransform(size)(image, label)
        assert x.shape == (3, size[1], size[0]) and x.dtype == torch.float32
        assert y.shape == (size[1], size[0]) and y.dtype == torch.long
        assert set(y.unique().tolist()) <= {3, 7}  # nearest-neighbour: no blended label values


def test_normalisation_is_imagenet():
    image = np.full((8, 8, 3), 255, np.uint8)
    x, _ = TrainTransform([8, 8])(image, np.zeros((8, 8), np.uint8))
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(x[:, 0, 0], torch.tensor(expected), atol=1e-5)


def test_flip_moves_image_and_label_together():
    image, label = _pair()
    t = TrainTransform([96, 48], AugmentConfig(hflip=True))
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        x, y = t(image, label)
        dark_left = bool(x[:, :, :10].mean() < x[:, :, -10:].mean())
        assert dark_left == (y[0, 0].item() == 3)  # wherever the dark half goes, class 3 goes
        seen.add(dark_left)
    assert seen == {True, False}  # both outcomes happen


def test_scale_and_crop_pad_the_label_with_ignore():
    image, label = _pair()
    t = TrainTransform([96, 48], AugmentConfig(scale=[0.5, 0.5], crop=[96, 48]))
    x, y = t(image, label)
    assert x.shape == (3, 48, 96) and y.shape == (48, 96)
    assert (y == IGNORE_INDEX).float().mean() > 0.7  # the half-size image covers a quarter of the crop
    assert set(y.unique().tolist()) <= {3, 7, IGNORE_INDEX}


def test_photometric_distortion_changes_the_image_never_the_label():
    image, label = _pair()
    t = TrainTransform([96, 48], AugmentConfig(photometric=True))
    plain = TrainTransform([96, 48])(image, label)[0]
    changed = False
    for seed in range(8):
        torch.manual_seed(seed)
        x, y = t(image, label)
        assert torch.equal(y, torch.from_numpy(label).long())
        changed |= not torch.allclose(x, plain)
    assert changed


def test_eval_keeps_the_label_at_full_resolution():
    image, label = _pair(200, 100)
    x, y = EvalTransform([64, 32])(image, label)
    assert x.shape == (3, 32, 64) and y.shape == (100, 200)

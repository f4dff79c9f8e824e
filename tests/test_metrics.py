import math

import numpy as np
import pytest
import torch

from engine.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from engine.losses import SegmentationLoss, dice_loss
from engine.config import LossConfig
from engine.metrics import ConfusionMatrix


def brute_force(target, pred):
    """IoU per class by counting pixels, the textbook way."""
    valid = target != IGNORE_INDEX
    ious = []
    for c in range(NUM_CLASSES):
        t, p = (target == c) & valid, (pred == c) & valid
        union = (t | p).sum()
        ious.append(float((t & p).sum() / union) if union else math.nan)
    return ious, float((target == pred)[valid].mean())


def test_confusion_matrix_matches_counting_pixels():
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix()
    targets, preds = [], []
    for _ in range(3):
        t = rng.integers(0, 12, size=(40, 60))  # classes 12..18 never occur: their IoU must be None
        t[rng.random(t.shape) < 0.1] = IGNORE_INDEX
        p = np.where(rng.random(t.shape) < 0.6, t, rng.integers(0, 12, size=t.shape))
        p[p == IGNORE_INDEX] = 0
        cm.update(torch.from_numpy(t), torch.from_numpy(p))
        targets.append(t), preds.append(p)
    m = cm.compute()
    ious, acc = brute_force(np.concatenate(targets), np.concatenate(preds))
    for name, expected in zip(CLASS_NAMES, ious):
        got = m.per_class_iou[name]
        assert (got is None) if math.isnan(expected) else got == pytest.approx(expected, abs=1e-12)
    assert m.miou == pytest.approx(np.nanmean(ious), abs=1e-12)
    assert m.pixel_accuracy == pytest.approx(acc, abs=1e-12)


def test_class_only_in_prediction_counts_with_iou_zero():
    t = torch.zeros(4, 4, dtype=torch.long)
    p = t.clone()
    p[0, 0] = 5  # a false positive of a class absent from ground truth
    cm = ConfusionMatrix()
    cm.update(t, p)
    m = cm.compute()
    assert m.per_class_iou[CLASS_NAMES[5]] == 0.0
    assert m.miou == pytest.approx((15 / 16 + 0.0) / 2)


def test_ignored_pixels_count_nowhere():
    t = torch.full((4, 4), IGNORE_INDEX, dtype=torch.long)
    t[0] = 1
    p = torch.full((4, 4), 2, dtype=torch.long)
    p[0] = 1
    cm = ConfusionMatrix()
    cm.update(t, p)
    m = cm.compute()
    assert m.miou == 1.0 and m.pixel_accuracy == 1.0 and m.per_class_iou[CLASS_NAMES[2]] is None


def test_losses_ignore_255_and_dice_is_zero_for_a_perfect_prediction():
    target = torch.randint(0, NUM_CLASSES, (2, 8, 8))
    perfect = torch.nn.functional.one_hot(target, NUM_CLASSES).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(perfect, target) < 1e-3
    all_ignored = torch.full((2, 8, 8), IGNORE_INDEX)
    loss = SegmentationLoss(LossConfig(ce=1.0, dice=1.0))({"out": torch.randn(2, NUM_CLASSES, 8, 8)}, all_ignored)
    assert torch.isfinite(loss)
    # changing logits on ignored pixels does not change the loss
    t = target.clone()
    t[:, :4] = IGNORE_INDEX
    logits = torch.randn(2, NUM_CLASSES, 8, 8)
    other = logits.clone()
    other[:, :, :4] = torch.randn(2, NUM_CLASSES, 4, 8)
    fn = SegmentationLoss(LossConfig(ce=1.0, dice=0.5))
    assert torch.allclose(fn({"out": logits}, t), fn({"out": other}, t))

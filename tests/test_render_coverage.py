"""The pure pixel and statistics functions the dashboard and CLI show results with."""
import csv
import io

import numpy as np
import pytest

from engine import render
from engine.classes import CATEGORIES, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE, class_ids
from engine.coverage import CSV_COLUMNS, SUMMARY_COLUMNS, aggregate, class_pixels, coverage_rows, summary, to_csv
from engine.errors import UsageError


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), rng.integers(0, NUM_CLASSES, (6, 10)).astype(np.uint8)


def test_overlay_blends_by_alpha(scene):
    image, labels = scene
    assert np.array_equal(render.overlay(image, labels, 0.0), image)
    assert np.array_equal(render.overlay(image, labels, 1.0), PALETTE[labels])
    half = render.overlay(image, labels, 0.5)
    expected = np.rint(image * 0.5 + PALETTE[labels] * 0.5)
    assert np.abs(half.astype(float) - expected).max() <= 1


def test_hidden_classes_show_the_image_and_black_in_mask_only(scene):
    image, labels = scene
    visible = [0, 1, 2]
    out = render.overlay(image, labels, 1.0, visible=visible)
    shown = np.isin(labels, visible)
    assert np.array_equal(out[shown], PALETTE[labels][shown]) and np.array_equal(out[~shown], image[~shown])
    mask = render.mask_only(labels, visible=[])
    assert not mask.any()
    assert np.array_equal(render.mask_only(labels), PALETTE[labels])


def test_category_groups_cover_the_19_classes_once():
    groups = [class_ids([c]) for c in CATEGORIES]
    assert sorted(c for g in groups for c in g) == list(range(NUM_CLASSES))
    assert class_ids(["vehicle"]) == [CLASS_NAMES.index(n) for n in
                                      ("car", "truck", "bus", "train", "motorcycle", "bicycle")]
    assert class_ids(["sky", "road", "sky"]) == [0, CLASS_NAMES.index("sky")]   # classes and categories mix
    with pytest.raises(UsageError, match="unknown class or category 'animals'"):
        class_ids(["animals"])


def test_disagreement_map(scene):
    image, a = scene
    b = a.copy()
    b[0, :3] = (b[0, :3] + 1) % NUM_CLASSES
    d = render.disagreement(a, b)
    assert d.sum() == 3 and d[0, :3].all() and np.array_equal(d, render.disagreement(b, a))


def test_side_by_side(scene):
    image, _ = scene
    out = render.side_by_side(image, image, gap=4)
    assert out.shape == (6, 24, 3) and np.array_equal(out[:, 14:], image) and (out[:, 10:14] == 255).all()
    with pytest.raises(ValueError):
        render.side_by_side(image, image[:3])


def test_coverage_shares_are_a_bincount_and_sum_to_one(scene):
    _, labels = scene
    labels = labels.copy()
    labels[0, 0] = IGNORE_INDEX  # not counted anywhere
    rows = coverage_rows("a.png", "unet_ce_dice", labels)
    assert [r["class_id"] for r in rows] == list(range(NUM_CLASSES))
    counts = np.bincount(labels[labels != IGNORE_INDEX], minlength=NUM_CLASSES)
    assert [r["pixels"] for r in rows] == counts.tolist() == class_pixels(labels).tolist()
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert rows[0]["class_name"] == "road" and rows[0]["category"] == "flat"


def test_csv_schema_and_summary(scene):
    _, labels = scene
    rows = coverage_rows("a.png", "m", labels) + coverage_rows("b.png", "m", np.zeros_like(labels))
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert tuple(parsed[0]) == CSV_COLUMNS and len(parsed) == 2 * NUM_CLASSES
    assert float(parsed[0]["share"]) == pytest.approx(rows[0]["share"])
    s = summary(rows)
    assert [r["source"] for r in s] == ["a.png", "b.png"] and tuple(s[0]) == SUMMARY_COLUMNS
    assert s[1]["top_class"] == "road" and s[1]["top_share"] == 1.0 and s[1]["share_flat"] == 1.0
    assert sum(v for k, v in s[0].items() if k.startswith("share_")) == pytest.approx(1.0)
    assert tuple(next(csv.reader(io.StringIO(to_csv(s, SUMMARY_COLUMNS))))) == SUMMARY_COLUMNS


def test_aggregate_sums_pixels_over_images_per_model(scene):
    _, labels = scene
    big = np.zeros((30, 10), np.uint8)  # all road, 5x the pixels of `labels`
    rows = coverage_rows("a.png", "m", labels) + coverage_rows("b.png", "m", big) + coverage_rows("a.png", "n", big)
    agg = aggregate(rows)
    m = [r for r in agg if r["model"] == "m"]
    assert [r["class_id"] for r in m] == list(range(NUM_CLASSES)) and {r["source"] for r in agg} == {"all images"}
    expected = class_pixels(labels) + class_pixels(big)
    assert [r["pixels"] for r in m] == expected.tolist()
    assert sum(r["share"] for r in m) == pytest.approx(1.0)
    assert m[0]["share"] == pytest.approx(expected[0] / expected.sum())  # pixel-weighted, not a mean of shares
    assert [r["share"] for r in agg if r["model"] == "n"][0] == 1.0


def test_disagreement_overlay_colours_only_contested_pixels(scene):
    image, a = scene
    b = a.copy()
    b[2, 4] = (b[2, 4] + 1) % NUM_CLASSES
    out = render.disagreement_overlay(image, a, b, alpha=1.0)
    assert np.array_equal(out[2, 4], PALETTE[a[2, 4]])
    rest = np.ones(a.shape, bool)
    rest[2, 4] = False
    assert np.array_equal(out[rest], render.grey(image)[rest])
    hidden = render.disagreement_overlay(image, a, b, alpha=1.0, visible=[c for c in range(NUM_CLASSES) if c != a[2, 4]])
    assert np.array_equal(hidden, render.grey(image))


def test_error_overlay_colours_only_wrong_labelled_pixels_by_what_was_predicted():
    image = np.full((4, 6, 3), 200, np.uint8)
    truth = np.zeros((4, 6), np.uint8)              # road everywhere ...
    truth[:, 5] = IGNORE_INDEX                       # ... but the last column, which is ignored
    pred = truth.copy()
    pred[0, 0], pred[1, 1], pred[:, 5] = 13, 11, 10   # two wrong pixels (car, person); sky on the ignored column
    assert render.errors(pred, truth).sum() == 2
    out = render.error_overlay(image, pred, truth, alpha=1.0)
    assert (out[0, 0] == PALETTE[13]).all() and (out[1, 1] == PALETTE[11]).all()
    untouched = np.ones((4, 6), bool)
    untouched[0, 0] = untouched[1, 1] = False
    assert (out[untouched] == render.grey(image)[untouched]).all()  # right and ignored pixels: the grey photo
    hidden = render.error_overlay(image, pred, truth, alpha=1.0, visible=[11])
    assert (hidden[0, 0] == render.grey(image)[0, 0]).all() and (hidden[1, 1] == PALETTE[11]).all()
    with pytest.raises(ValueError, match="differ in size"):
        render.errors(pred, truth[:2])

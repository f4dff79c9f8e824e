"""Per-image results: a real evaluation's image rows add up to its confusion matrix exactly, each
image's mIoU is the official cityscapesscripts evaluator's on that image alone, kept predictions are
the ones scored; the trimap boundary band and the boundary / interior IoUs on hand-made masks; and
`python -m engine errors` on the dashboard's store."""
from __future__ import annotations

import glob
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import classes, per_image
from engine.classes import CLASS_NAMES, NUM_CLASSES
from engine.cli import main
from engine.data.base import read_image
from engine.evaluate import load_checkpoint, predict_labels, read_label_png
from engine.metrics import (BOUNDARY_FRACTION, ImageResults, boundary_band, boundary_width, confusion, iou_counts,
                            ious, mean_iou, named)
from engine.store import Store


@pytest.fixture(scope="module")
def evaluated(dashboard_data):
    """The dashboard store's evaluation of `trained` on the synthetic val split, its predictions kept
    (conftest; read only): (what evaluate_checkpoint returned, its evaluation row, its image rows)."""
    summary = dashboard_data.results[dashboard_data.variants[0]]
    with Store(dashboard_data.db) as store:
        ev = store.evaluation(summary["evaluation_id"])
        rows = store.image_results(ev["id"])
    return summary, ev, rows


def _gts(root: Path) -> list[str]:
    return sorted(glob.glob(str(root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png")))


def _train_ids(gt_file: str) -> np.ndarray:
    return classes.label_ids_to_train_ids(np.asarray(Image.open(gt_file)))


def test_image_rows_add_up_to_the_evaluations_confusion(evaluated, synth_root):
    summary, ev, rows = evaluated
    gts = _gts(synth_root)
    assert ev["images"] == ev["num_images"] == len(rows) == len(gts) == 2
    assert [r["position"] for r in rows] == [0, 1]
    assert [r["image"] for r in rows] == [Path(g).name.removesuffix("_gtFine_labelIds.png") for g in gts]
    assert [r["folder"] for r in rows] == [Path(g).parent.name for g in gts]
    assert all((synth_root / r["image_file"]).is_file() and r["image_file"].startswith("leftImg8bit/val/")
               for r in rows)
    assert all((r["width"], r["height"], r["boundary_px"]) == (128, 64, boundary_width(64, 128)) for r in rows)
    assert ev["data_kind"] == "cityscapes" and Path(ev["data_root"]) == Path(synth_root).resolve()
    assert ev["boundary_fraction"] == BOUNDARY_FRACTION

    mat = np.asarray(ev["confusion"], np.int64)
    assert mat.shape == (NUM_CLASSES, NUM_CLASSES) and ev["confusion"] == summary["confusion"]
    assert (per_image.confusion_matrix(rows) == mat).all()
    assert mat.sum() == sum(int((_train_ids(g) != classes.IGNORE_INDEX).sum()) for g in gts)  # every scored pixel
    inter, union = iou_counts(mat)
    assert np.sum([r["intersection"] for r in rows], 0).tolist() == inter.tolist()
    assert np.sum([r["union"] for r in rows], 0).tolist() == union.tolist()
    for r in rows:  # each image's counts are those of its own matrix
        assert (r["intersection"], r["union"]) == tuple(c.tolist() for c in iou_counts(per_image.confusion_matrix([r])))
    band = np.asarray(ev["boundary_confusion"], np.int64)
    assert (band <= mat).all() and 0 < band.sum() < mat.sum()
    b_inter, b_union = iou_counts(band)
    assert np.sum([r["boundary_intersection"] for r in rows], 0).tolist() == b_inter.tolist()
    assert np.sum([r["boundary_union"] for r in rows], 0).tolist() == b_union.tolist()

    assert ev["per_class_iou"] == named(ious(inter, union)) and summary["per_class_iou"] == ev["per_class_iou"]
    assert ev["miou"] == mean_iou(inter, union)
    assert ev["pixel_accuracy"] == pytest.approx(np.trace(mat) / mat.sum(), abs=1e-12)
    means = per_image.interior_boundary_means(ev)
    assert means["miou"] == ev["miou"] and means["boundary_miou"] == mean_iou(b_inter, b_union)


def test_each_images_miou_equals_the_official_evaluator_on_that_image(evaluated, synth_root, tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    _, ev, rows = evaluated
    args = official.args
    args.cityscapesPath, args.predictionPath, args.predictionWalk = str(synth_root), str(tmp_path), None
    args.quiet, args.JSONOutput, args.colorized = True, False, False
    assert ev["predictions_dir"] and sorted(p.name for p in Path(ev["predictions_dir"]).iterdir()) == \
        sorted(f"{r['image']}.png" for r in rows)  # one kept PNG per image, nothing else
    classes_seen = set()
    for r, gt in zip(rows, _gts(synth_root)):
        kept = read_label_png(Path(ev["predictions_dir"]) / f"{r['image']}.png")
        truth = _train_ids(gt)
        assert kept.shape == truth.shape == (r["height"], r["width"]) and kept.dtype == np.uint8
        # the kept prediction is the one the row scored
        assert (confusion(torch.from_numpy(truth), torch.from_numpy(kept)).numpy()
                == per_image.confusion_matrix([r])).all()
        pred_file = tmp_path / f"{r['image']}_pred_labelIds.png"
        Image.fromarray(classes.train_ids_to_label_ids(kept)).save(pred_file)
        theirs = official.evaluateImgLists([str(pred_file)], [gt], args)
        assert abs(r["miou"] - theirs["averageScoreClasses"]) < 1e-6, r["image"]
        for name, iou in per_image.per_class_iou(r).items():
            assert (math.isnan(theirs["classScores"][name]) if iou is None
                    else abs(iou - theirs["classScores"][name]) < 1e-6), (r["image"], name)
        classes_seen.add(frozenset(n for n, v in per_image.per_class_iou(r).items() if v is not None))
    assert len(classes_seen) == 2 and all(len(s) >= 5 for s in classes_seen)  # two different, non-trivial images


def test_predict_labels_reproduces_the_kept_prediction(evaluated, trained, synth_root):
    """What the Drill-down page recomputes for an evaluation that kept no predictions."""
    _, ev, rows = evaluated
    m = load_checkpoint(variant=trained.variant, weights_dir=trained.weights, device="cpu")
    r = rows[-1]
    kept = read_label_png(Path(ev["predictions_dir"]) / f"{r['image']}.png")
    again = predict_labels(m, read_image(synth_root / r["image_file"]), kept.shape)
    assert again.dtype == np.uint8 and (again == kept).all()


# --- the trimap band on hand-made masks ---

def test_boundary_width_is_a_fraction_of_the_diagonal():
    assert boundary_width(1024, 2048) == 23 and boundary_width(64, 128) == 1 and boundary_width(2, 2) == 1
    assert boundary_width(300, 400) == 5  # 1% of 500


def test_band_of_a_straight_edge_spans_both_sides_plus_d():
    label = np.zeros((20, 40), np.uint8)
    label[:, 20:] = 13  # edge between columns 19 and 20: both are boundary pixels
    band = boundary_band(label, 3)
    expected = np.zeros_like(band)
    expected[:, 16:24] = True  # 19 - 3 .. 20 + 3
    assert band.dtype == bool and (band == expected).all()
    assert (boundary_band(label, 1)[0] == (np.abs(np.arange(40) - 19.5) <= 1.5)).all()


def test_a_uniform_label_has_no_band():
    assert not boundary_band(np.full((10, 12), 7, np.uint8), 5).any()
    assert not boundary_band(np.full((10, 12), 255, np.uint8), 5).any()


def test_a_band_given_with_an_image_must_be_a_bool_map_of_its_size():
    label = torch.zeros((4, 6), dtype=torch.uint8)
    acc = ImageResults([(i, f"i{i}", "", f"i{i}.png") for i in range(3)])
    for wrong in (label, torch.zeros((4, 5), dtype=torch.bool)):  # a label passed as the band; another size
        with pytest.raises(ValueError, match="bool map the size of its label"):
            acc.add(label, label, wrong)
    acc.add(label, label, np.zeros((4, 6), bool))  # precomputed, as the loader's workers give it
    assert acc.results[0].confusion[0, 0] == 24 and acc.results[0].boundary_confusion.sum() == 0


def test_the_edge_of_an_ignored_region_is_a_boundary():
    label = np.zeros((12, 10), np.uint8)
    label[8:] = 255  # e.g. the ego vehicle at the bottom
    band = boundary_band(label, 2)
    assert (band == (np.abs(np.arange(12) - 7.5) <= 2.5)[:, None]).all()  # rows 5..10


def test_the_band_is_euclidean_not_square():
    label = np.zeros((15, 15), np.uint8)
    c = 7
    label[c, c] = 11
    d = 2
    edge = [(c, c), (c - 1, c), (c + 1, c), (c, c - 1), (c, c + 1)]  # the pixel and its 4-neighbours
    yy, xx = np.mgrid[:15, :15]
    expected = np.zeros((15, 15), bool)
    for y, x in edge:
        expected |= (yy - y) ** 2 + (xx - x) ** 2 <= d * d
    band = boundary_band(label, d)
    assert (band == expected).all()
    assert band[c + 3, c] and band[c, c - 3]  # 2 px beyond a 4-neighbour
    assert not band[c + 2, c + 2] and not band[c + 3, c + 1]  # sqrt(5) from the nearest boundary pixel
    assert expected.sum() == 25 and (expected == (np.abs(yy - c) + np.abs(xx - c) <= 3)).all()  # a diamond here


def _score(label: np.ndarray, pred: np.ndarray):
    acc = ImageResults([(0, "hand", "", "hand.png")])
    full = acc.add(torch.from_numpy(label), torch.from_numpy(pred))  # the band computed in add()
    ev = {"confusion": full.tolist(), "boundary_confusion": acc.boundary_confusion()}
    return acc.results[0], ev


def _halves(n: int = 40) -> np.ndarray:
    label = np.zeros((n, n), np.uint8)  # road | car
    label[:, n // 2:] = 13
    return label


def test_wrong_only_far_from_the_edge_leaves_the_boundary_perfect():
    label = _halves()
    pred = label.copy()
    pred[:10, :5] = 13  # a car where there is road, far from the edge
    r, ev = _score(label, pred)
    assert r.boundary_px == boundary_width(40, 40) == 1 and (r.width, r.height) == (40, 40)
    assert r.boundary_miou == 1.0 and r.miou < 1.0 and r.pixel_accuracy == 1 - 50 / 1600
    split = per_image.interior_boundary(ev)
    road, car = split[0], split[13]
    assert (road["boundary_iou"], car["boundary_iou"]) == (1.0, 1.0)
    band = boundary_band(label, r.boundary_px)
    direct = ious(*iou_counts(_counts(label, pred, ~band)))
    assert road["interior_iou"] == pytest.approx(direct[0]) and car["interior_iou"] == pytest.approx(direct[13])
    # the band is columns 18..21: 40 x 18 interior pixels of each class, 50 road ones predicted car
    assert road["interior_iou"] == pytest.approx((40 * 18 - 50) / (40 * 18))
    assert car["interior_iou"] == pytest.approx(40 * 18 / (40 * 18 + 50))
    assert all(s["iou"] is None and s["boundary_iou"] is None and s["interior_iou"] is None
               for s in split if s["class_id"] not in (0, 13))
    means = per_image.interior_boundary_means(ev)
    assert means["boundary_miou"] == 1.0 and means["interior_miou"] < 1.0 and means["miou"] == r.miou


def test_wrong_only_at_the_edge_leaves_the_interior_perfect():
    label = _halves()
    pred = label.copy()
    pred[:, 19] = 13  # the edge one column too far left: within the band
    r, ev = _score(label, pred)
    assert r.boundary_miou < 1.0 and r.miou < 1.0
    split = per_image.interior_boundary(ev)
    assert split[0]["interior_iou"] == split[13]["interior_iou"] == 1.0
    band_cols = 4  # columns 18..21 (edge columns 19, 20 and 1 px either side)
    assert split[0]["boundary_iou"] == pytest.approx(1 / 2)  # road: column 18 of its band columns 18, 19
    assert split[13]["boundary_iou"] == pytest.approx(2 / 3)  # car: columns 20, 21 of the 3 predicted car
    assert np.asarray(ev["boundary_confusion"]).sum() == 40 * band_cols
    means = per_image.interior_boundary_means(ev)
    assert means["interior_miou"] == 1.0 and means["boundary_miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_band_and_interior_partition_the_pixels():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, (6, 8), dtype=np.uint8).repeat(6, 0).repeat(6, 1)  # 36x48 blocks of 3 classes
    label[:4] = 255
    pred = np.where(rng.random(label.shape) < 0.2, rng.integers(0, 4, label.shape), label).astype(np.uint8)
    pred[label == 255] = 1
    r, ev = _score(label, pred)
    band = boundary_band(label, r.boundary_px)
    full, inside, outside = _counts(label, pred), _counts(label, pred, band), _counts(label, pred, ~band)
    assert (r.confusion == full).all() and (r.boundary_confusion == inside).all() and (inside + outside == full).all()
    assert full.sum() == (label != 255).sum() and 0 < inside.sum() < full.sum()
    for s in per_image.interior_boundary(ev):
        c = s["class_id"]
        for key, mat in (("iou", full), ("boundary_iou", inside), ("interior_iou", outside)):
            want = ious(*iou_counts(mat))[c]
            assert (s[key] is None) if np.isnan(want) else s[key] == pytest.approx(want), (key, c)


# --- python -m engine errors, on the dashboard's store (read only) ---

def _errors(capsys, db, *args) -> tuple[int, str, str]:
    code = main(["errors", "--db", db, *args])
    out, err = capsys.readouterr()
    return code, out, err


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_errors_lists_the_worst_images_by_a_measure(dashboard_data, capsys):
    db, a = dashboard_data.db, dashboard_data.variants[0]
    code, out, _ = _errors(capsys, db, "--variant", a, "--json")
    assert code == 0
    images = _lines(out)
    with Store(db) as s:
        ev = per_image.evaluation_of(s, a)
        rows = {r["image"]: r for r in s.image_results(ev["id"])}
    assert ev["dataset"] == "synthetic" and sorted(i["image"] for i in images) == sorted(rows) and len(rows) == 2
    assert [i["value"] for i in images] == sorted(i["value"] for i in images)  # worst first
    for i in images:
        assert i["value"] == i["miou"] == rows[i["image"]]["miou"] and not i["image"].endswith(".png")
        assert list(i["per_class_iou"]) == CLASS_NAMES and len(i["per_class_boundary_iou"]) == 19
        assert i["boundary_miou"] == rows[i["image"]]["boundary_miou"] and 0 <= i["pixel_accuracy"] <= 1
        assert i["per_class_iou"] == per_image.per_class_iou(rows[i["image"]])

    code, out, _ = _errors(capsys, db, "--variant", a, "--json", "--top", "1")
    assert code == 0 and _lines(out) == images[:1]
    code, out, _ = _errors(capsys, db, "--variant", a, "--json", "--by", "boundary")
    assert [i["value"] for i in _lines(out)] == sorted(i["boundary_miou"] for i in images)

    # a class in one image only (ground truth or prediction): the other has no IoU for it and is left out
    present = {name: {img for img, r in rows.items() if r["union"][c]} for c, name in enumerate(CLASS_NAMES)}
    name = next(n for n, imgs in present.items() if len(imgs) == 1)
    code, out, _ = _errors(capsys, db, "--variant", a, "--json", "--by", f"class:{name}")
    [only] = _lines(out)
    assert code == 0 and {only["image"]} == present[name] and only["value"] == only["per_class_iou"][name]

    code, out, _ = _errors(capsys, db, "--variant", a)  # the table
    assert code == 0 and f"{a}: the 2 worst images by mIoU" in out and images[0]["image"] in out


def test_errors_vs_sorts_by_how_much_b_beats_a(dashboard_data, capsys):
    db, (a, b) = dashboard_data.db, dashboard_data.variants
    code, out, _ = _errors(capsys, db, "--variant", a, "--vs", b, "--json")
    assert code == 0
    pairs = _lines(out)
    assert len(pairs) == 2 and [p["delta"] for p in pairs] == sorted((p["delta"] for p in pairs), reverse=True)
    for p in pairs:
        assert p["image"] == p["vs"]["image"] and p["value"] == p["miou"] and p["value_vs"] == p["vs"]["miou"]
        assert p["delta"] == pytest.approx(p["vs"]["miou"] - p["miou"])
    code, out, _ = _errors(capsys, db, "--variant", b, "--vs", a, "--json", "--top", "1")
    [swapped] = _lines(out)
    assert code == 0 and swapped["image"] == pairs[-1]["image"]
    assert swapped["delta"] == pytest.approx(-pairs[-1]["delta"])


def test_errors_refuses_an_unknown_class_or_variant(dashboard_data, capsys):
    db, (a, _) = dashboard_data.db, dashboard_data.variants
    code, out, err = _errors(capsys, db, "--variant", a, "--by", "class:nonsense")
    assert code == 2 and not out and err.count("\n") == 1 and "nonsense" in err
    assert all(name in err for name in CLASS_NAMES)
    code, out, err = _errors(capsys, db, "--variant", "no_such_model")
    assert code == 2 and not out and err.count("\n") == 1 and err.startswith("error: ")
    assert "no_such_model" in err and "python -m engine evaluate --variant no_such_model" in err
    code, out, err = _errors(capsys, db, "--variant", a, "--vs", "no_such_model")
    assert code == 2 and "python -m engine evaluate --variant no_such_model" in err


def _counts(label: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """19x19 counts of the labelled pixels (within `mask`), computed here independently of engine.metrics."""
    keep = (label != 255) if mask is None else (label != 255) & mask
    out = np.zeros((19, 19), np.int64)
    np.add.at(out, (label[keep].astype(int), pred[keep].astype(int)), 1)
    return out

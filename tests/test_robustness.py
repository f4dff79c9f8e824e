"""`python -m engine robustness`: the corruption sweep on real tiny checkpoints and real files.

The clean pass equals `evaluate` exactly; two runs (cache cold, warm, or none) are identical; a
corruption's mIoU equals `evaluate` on a copy of the dataset written with that corruption applied;
a 2-process torchrun sweep equals one process; what is recorded in the store."""
from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import robustness
from engine.cli import main
from engine.data.cityscapes import find_samples, read_image
from engine.evaluate import evaluate_checkpoint
from engine.store import Store
from tests.test_distributed import _torchrun

CORRUPTIONS = ["gaussian_noise", "fog"]  # noise and weather: two groups, two library code paths


@pytest.fixture(scope="module")
def swept(trained, synth_root, tmp_path_factory):
    """One sweep recorded in a copy of `trained`'s store, with its cache folder."""
    import sqlite3

    tmp = tmp_path_factory.mktemp("robustness")
    with sqlite3.connect(trained.db.removeprefix("sqlite:///")) as src, sqlite3.connect(tmp / "r.db") as dst:
        src.backup(dst)
    db, cache = f"sqlite:///{tmp / 'r.db'}", tmp / "cache"
    res = robustness.sweep_checkpoint(variant=trained.variant, weights_dir=trained.weights, data_root=synth_root,
                                      corruptions=CORRUPTIONS, severities=[1, 3], device="cpu", store=Store(db),
                                      cache_dir=cache, workers=2, progress=False)
    return res, db, cache


def _figures(res: dict) -> list:
    return [res["clean_miou"], res["mpc"], res["rpc"], res["groups"],
            [(r["corruption"], r["severity"], r["miou"], r["pixel_accuracy"], r["per_class_iou"])
             for r in res["results"]]]


def test_the_clean_pass_equals_evaluate_exactly(swept, trained, synth_root):
    res, _, _ = swept
    ev = evaluate_checkpoint(variant=trained.variant, weights_dir=trained.weights, data_root=synth_root,
                             device="cpu", progress=False)
    assert res["clean_miou"] == ev["miou"] and res["num_images"] == ev["num_images"] == 2
    assert [(r["corruption"], r["severity"]) for r in res["results"]] == [
        ("gaussian_noise", 1), ("gaussian_noise", 3), ("fog", 1), ("fog", 3)]
    assert res["groups"].keys() == {"noise", "weather"}
    assert res["mpc"] == pytest.approx(np.mean([r["miou"] for r in res["results"]]))
    assert res["rpc"] == pytest.approx(res["mpc"] / res["clean_miou"])
    assert res["groups"]["noise"] == pytest.approx(np.mean([r["miou"] for r in res["results"][:2]]))
    assert res["library"].startswith("imagecorruptions-imaug ")


def test_two_runs_are_identical_with_the_cache_warm_or_without_it(swept, trained, synth_root):
    res, _, cache = swept
    files = sorted(cache.rglob("*.png"))
    assert len(files) == 2 * 2 * 2  # images x corruptions x severities, each once
    assert not list(cache.rglob("*.tmp*"))
    stamps = [f.stat().st_mtime_ns for f in files]
    common = dict(variant=trained.variant, weights_dir=trained.weights, data_root=synth_root, corruptions=CORRUPTIONS,
                  severities=[1, 3], device="cpu", progress=False)
    warm = robustness.sweep_checkpoint(**common, cache_dir=cache, workers=0)
    assert [f.stat().st_mtime_ns for f in sorted(cache.rglob("*.png"))] == stamps  # read, not rewritten
    fresh = robustness.sweep_checkpoint(**common, cache_dir=False, workers=1)
    assert _figures(warm) == _figures(res) == _figures(fresh)
    assert res["results"][0]["miou"] != res["results"][1]["miou"] or res["results"][0]["pixel_accuracy"] != \
        res["results"][1]["pixel_accuracy"]  # severity changes the input


def test_a_corruption_equals_evaluate_on_a_copy_of_the_dataset_written_corrupted(swept, trained, synth_root,
                                                                                tmp_path):
    res, _, _ = swept
    copy = tmp_path / "fog3"
    shutil.copytree(synth_root / "gtFine" / "val", copy / "gtFine" / "val")
    for s in find_samples(synth_root, "val"):
        out = copy / "leftImg8bit" / "val" / s.image.parent.name / s.image.name
        out.parent.mkdir(parents=True, exist_ok=True)
        image = robustness.corrupt(read_image(s.image), "fog", 3, robustness.seed_for(s.stem, "fog", 3))
        cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ev = evaluate_checkpoint(variant=trained.variant, weights_dir=trained.weights, data_root=copy, device="cpu",
                             progress=False)
    [fog3] = [r for r in res["results"] if (r["corruption"], r["severity"]) == ("fog", 3)]
    assert (fog3["miou"], fog3["pixel_accuracy"], fog3["per_class_iou"]) == \
        (ev["miou"], ev["pixel_accuracy"], ev["per_class_iou"])


def test_the_sweep_is_recorded_and_shown_on_the_leaderboard(swept, trained, capsys):
    res, db, _ = swept
    store = Store(db)
    [sweep] = store.robustness()
    assert sweep["id"] == res["robustness_id"]
    run = store.run_by_uid(store.runs()[0]["uid"])
    assert sweep["run_id"] == run["id"] and sweep["dataset"] == "synthetic" and sweep["condition"] == ""
    assert sweep["mpc"] == res["mpc"] and sweep["rpc"] == res["rpc"] and sweep["clean_miou"] == res["clean_miou"]
    assert [(r["corruption"], r["group"], r["severity"], r["miou"]) for r in sweep["results"]] == \
        [(r["corruption"], r["group"], r["severity"], r["miou"]) for r in res["results"]]
    ckpt = Path(sweep["checkpoint"])
    assert ckpt.is_file() and store.checkpoint_record(ckpt)["sha256"] == sweep["checkpoint_sha256"]
    [row] = store.leaderboard()
    assert row["mpc"] == res["mpc"] and row["rpc"] == res["rpc"]
    assert main(["runs", "--db", db, "--json"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["mpc"] == res["mpc"] and shown["rpc"] == res["rpc"]
    assert main(["runs", "--db", db]) == 0
    assert f"{res['mpc']:.4f}" in capsys.readouterr().out


def test_cli_json_prints_one_object(trained, synth_root, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    args = ["robustness", "--checkpoint", str(trained.weights / trained.variant / "best.pt"), "--data-root",
            str(synth_root), "--corruptions", "pixelate", "--severities", "2", "--limit", "1", "--device", "cpu",
            "--db", db, "--cache-dir", str(tmp_path / "c"), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"variant", "dataset", "split", "clean_miou", "mpc", "rpc", "groups", "results"} <= out.keys()
    assert out["num_images"] == 1 and out["groups"].keys() == {"digital"}
    [r] = out["results"]
    assert r.keys() >= {"corruption", "severity", "miou", "per_class_iou"} and r["corruption"] == "pixelate"
    assert Store(db).robustness()[0]["run_id"] is None  # a store without the training run: recorded unlinked
    assert main(args[:-1]) == 0
    text = capsys.readouterr()
    assert "mPC" in text.out and "rPC" in text.out and "cached in" in text.err


def test_a_two_process_torchrun_sweep_equals_one_process(trained, synth_root, tmp_path):
    best = trained.weights / trained.variant / "best.pt"
    p = _torchrun("robustness", "--checkpoint", str(best), "--data-root", str(synth_root), "--device", "cpu",
                  "--db", f"sqlite:///{tmp_path / 'r.db'}", "--corruptions", "shot_noise,contrast",
                  "--severities", "2", "--no-cache", "--workers", "0", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    [line] = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]  # rank 0 alone prints
    dist = json.loads(line)
    single = robustness.sweep_checkpoint(checkpoint=best, data_root=synth_root, corruptions=["shot_noise", "contrast"],
                                         severities=[2], device="cpu", cache_dir=False, workers=0, progress=False)
    assert dist["num_images"] == 2
    assert _figures(dist) == _figures(single)
    assert len(Store(f"sqlite:///{tmp_path / 'r.db'}").robustness()) == 1  # rank 0 alone records


def test_selecting_corruptions_and_severities():
    assert robustness.select("benchmark") == [n for g in ("noise", "blur", "weather", "digital")
                                              for n in robustness.groups()[g]]
    assert len(robustness.select("benchmark")) == 15 and len(robustness.select("all")) == 19
    assert robustness.select(["fog,noise", "fog"]) == ["gaussian_noise", "shot_noise", "impulse_noise", "fog"]
    assert robustness.select("held-out") == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    with pytest.raises(robustness.CorruptionError, match="unknown corruption 'rain'.*benchmark, all"):
        robustness.select("rain")
    assert robustness.check_severities([3, 1, 3]) == (1, 3)
    with pytest.raises(robustness.CorruptionError, match="severities must be among 1, 2, 3, 4, 5"):
        robustness.check_severities([0, 6])


def test_corrupt_is_deterministic_per_seed_and_keeps_the_size():
    image = (np.indices((70, 90)).sum(0)[..., None] * [1, 2, 3] % 256).astype(np.uint8)
    for name in robustness.select("all"):
        a = robustness.corrupt(image, name, 2, seed=5)
        assert a.shape == image.shape and a.dtype == np.uint8, name
        assert np.array_equal(a, robustness.corrupt(image, name, 2, seed=5)), name
    assert not np.array_equal(robustness.corrupt(image, "gaussian_noise", 2, 5),
                              robustness.corrupt(image, "gaussian_noise", 2, 6))
    assert robustness.corrupt(image, "fog", 0) is image
    with pytest.raises(robustness.CorruptionError, match="at least 32x32"):
        robustness.corrupt(image[:20], "fog", 1)


def _fill(args):
    cache, image_file, stem = args
    image = read_image(image_file)
    return robustness.corrupted_image(Path(image_file), stem, image, "zoom_blur", 1, Path(cache)).tobytes()


def test_two_processes_filling_the_cache_at_once(synth_root, tmp_path):
    [s, *_] = find_samples(synth_root, "val")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        outs = pool.map(_fill, [(str(tmp_path), str(s.image), s.stem)] * 4)
    assert len(set(outs)) == 1
    [file] = tmp_path.rglob("*.png")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p != file]  # no temporary file left
    assert robustness.cache_bytes(tmp_path) == file.stat().st_size
    fresh = robustness.corrupt(read_image(s.image), "zoom_blur", 1, robustness.seed_for(s.stem, "zoom_blur", 1))
    assert outs[0] == fresh.tobytes()

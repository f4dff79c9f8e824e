"""Deployment variants (`python -m engine compress`): pruned and INT8 models made from a real tiny
checkpoint trained by the engine, saved as data, rebuilt, evaluated and recorded like any model."""
from __future__ import annotations

import io
import json
import pickle
import sqlite3
from contextlib import redirect_stdout
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine import checkpoints, compress
from engine.checkpoints import CheckpointError
from engine.cli import main
from engine.data.cityscapes import CityscapesDataset
from engine.data.transforms import EvalTransform
from engine.profiling import count_params, gflops
from engine.store import Store

CPU = torch.device("cpu")
INT8_MIN_AGREEMENT = 0.97   # INT8 labels vs the float model's, on the tiny trained model's val pixels


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained):
    """A copy of `trained`'s store and a weights folder holding its checkpoint, to derive models into."""
    tmp = tmp_path_factory.mktemp("compress")
    with sqlite3.connect(trained.db.removeprefix("sqlite:///")) as src, sqlite3.connect(tmp / "results.db") as dst:
        src.backup(dst)
    weights = tmp / "weights"
    weights.mkdir()
    (weights / trained.variant).symlink_to(trained.weights / trained.variant, target_is_directory=True)
    return SimpleNamespace(db=f"sqlite:///{tmp / 'results.db'}", weights=weights, variant=trained.variant, tmp=tmp)


def _parent(trained) -> compress.Parent:
    return compress.load_parent(variant=trained.variant, weights_dir=trained.weights)


def _val_images(root, size, n=2) -> torch.Tensor:
    data = CityscapesDataset(root, "val", EvalTransform(size))
    return torch.stack([data[i][0] for i in range(n)])


def _pruned(parent, ratio, size=(64, 32), **kw):
    model = checkpoints.build_from(parent.ckpt)
    figures = compress.prune(model, ratio, size, **kw)
    figures.update(importance=kw.get("importance", "l1"), ratio=ratio, finetune_iters=0)
    return model, figures


@pytest.fixture(scope="module")
def half(trained, tmp_path_factory):
    """The trained model pruned to half its FLOPs (in memory) and its checkpoint, before any fine-tuning."""
    parent = _parent(trained)
    model, figures = _pruned(parent, 0.5)
    path = tmp_path_factory.mktemp("half") / "pruned.pt"
    compress.save_pruned(path, model, parent, figures)
    return SimpleNamespace(parent=parent, model=model, figures=figures, path=path)


def test_pruned_checkpoint_is_data_and_rebuilds_the_smaller_model_exactly(half, synth_root):
    raw = torch.load(half.path, weights_only=True)  # plain data: no class is unpickled
    assert raw["pruning"]["layers"] and raw["derived"]["method"] == "prune"
    rebuilt = checkpoints.build_from(checkpoints.load(half.path))
    full = checkpoints.build_from(half.parent.ckpt)
    assert count_params(rebuilt) < 0.7 * count_params(full)
    x = _val_images(synth_root, (64, 32))
    with torch.inference_mode():
        assert torch.equal(rebuilt(x)["out"], half.model(x)["out"])  # before any fine-tuning: the same logits
        odd = rebuilt(torch.randn(1, 3, 37, 91))["out"]
    assert odd.shape == (1, 19, 37, 91)  # any input size, 19 classes: the classifier is never pruned
    assert half.figures["flops_ratio"] <= 0.5
    assert gflops(rebuilt, (64, 32)) <= 0.55 * gflops(full, (64, 32))


def test_a_planted_pickle_in_a_pruned_checkpoint_is_refused(half, tmp_path):
    ckpt = torch.load(half.path, weights_only=True)
    control = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(control), "w"))

    ckpt["pruning"]["layers"]["classifier.0"] = Payload()
    path = tmp_path / "pruned.pt"
    with open(path, "wb") as f:
        pickle.dump(ckpt, f)  # what an attacker can write: the rest of the checkpoint is genuine
    with pytest.raises(CheckpointError, match="refused to load"):
        checkpoints.load(path)
    assert not control.exists()


def test_ratio_zero_without_fine_tuning_is_the_parent_as_a_derived_run(workspace, synth_root, trained):
    [res] = compress.compress(variant=workspace.variant, method="prune", ratios=[0.0], finetune_iters=0,
                              store=Store(workspace.db), data_root=synth_root, device="cpu",
                              weights_dir=workspace.weights, progress=False)
    assert res["name"] == f"{workspace.variant}+prune0" and res["steps"] == 0
    ours, theirs = checkpoints.load(res["checkpoint"]), checkpoints.load(trained.result.best_checkpoint)
    assert ours["model"].keys() == theirs["model"].keys()
    assert all(torch.equal(ours["model"][k], v) for k, v in theirs["model"].items())  # the parent's weights exactly
    x = _val_images(synth_root, (64, 32))
    with torch.inference_mode():  # so the parent's labels, exactly
        assert torch.equal(checkpoints.build_from(ours)(x)["out"].argmax(1), checkpoints.build_from(theirs)(x)["out"].argmax(1))
    assert res["miou"] == pytest.approx(res["miou_before_finetune"])  # no training happened
    assert Store(workspace.db).epochs(res["run_id"]) == []


def test_taylor_importance_prunes_to_the_asked_flops(trained):
    parent = _parent(trained)
    recipe = compress.recipe_from_dict(parent.recipe, "test")
    model = checkpoints.build_from(parent.ckpt)
    from engine.losses import SegmentationLoss

    batches = [(torch.randn(2, 3, 32, 64), torch.randint(0, 19, (2, 32, 64)))]
    figures = compress.prune(model, 0.2, (64, 32), importance="taylor", grad_batches=batches,
                             loss_fn=SegmentationLoss(recipe.schedule.loss))
    assert 0.65 < figures["flops_ratio"] <= 0.8 and figures["steps"] > 0
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture(scope="module")
def fp32_onnx(trained, tmp_path_factory):
    from engine.onnx_backend import export_onnx

    return export_onnx(_parent(trained).path, tmp_path_factory.mktemp("onnx") / "fp32.onnx")


@pytest.mark.parametrize("vnni", [True, False], ids=["full-range", "reduce-range"])
def test_int8_labels_agree_with_float_on_the_trained_model(trained, synth_root, tmp_path, monkeypatch, vnni,
                                                            fp32_onnx):
    """Both weight ranges the product may pick (by the CPU) keep the labels: forced here, not probed."""
    monkeypatch.setattr(compress, "cpu_has_vnni", lambda: vnni)
    parent, fp32 = _parent(trained), fp32_onnx
    from engine.onnx_runtime import OnnxModel

    calibration = compress._calibration_batches(synth_root, parent.eval_size, 4)
    settings = compress.quantize_onnx(fp32, tmp_path / "int8.onnx", calibration, num_classes=19)
    assert settings["reduce_range"] is not vnni and settings["float_nodes"]  # the classifier stays float
    int8 = OnnxModel((tmp_path / "int8.onnx").read_bytes(), checkpoints.build_from(parent.ckpt))
    x = _val_images(synth_root, parent.eval_size)
    with torch.inference_mode():
        agreement = (int8(x)["out"].argmax(1) == checkpoints.build_from(parent.ckpt)(x)["out"].argmax(1)).float().mean()
    assert agreement >= INT8_MIN_AGREEMENT
    assert (tmp_path / "int8.onnx").stat().st_size < 0.4 * fp32.stat().st_size


def _cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def derived(workspace, synth_root):
    code, out = _cli("compress", "--variant", workspace.variant, "--method", "prune+int8", "--ratio", "0.5",
                     "--finetune-iters", "2", "--calibration-images", "2",
                     "--calibration-size", "96x48", "--json", "--data-root", str(synth_root),
                     "--db", workspace.db, "--weights-dir", str(workspace.weights), "--device", "cpu")
    assert code == 0
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_compress_makes_named_first_class_models(derived, workspace):
    parent = workspace.variant
    assert [d["name"] for d in derived] == [f"{parent}+prune0.5", f"{parent}+prune0.5+int8"]
    assert [(d["parent"], d["method"], d["ratio"]) for d in derived] == [
        (parent, "prune", 0.5), (f"{parent}+prune0.5", "int8", None)]
    for d in derived:
        assert {"name", "parent", "method", "ratio", "params", "size_mb", "gflops", "miou"} <= set(d)
        assert 0.0 <= d["miou"] <= 1.0 and d["params"] > 0
    pruned, int8 = derived
    assert pruned["miou_before_finetune"] is not None and pruned["finetune_iters"] == 2
    assert int8["precision"] == "int8" and int8["size_mb"] < 0.4 * pruned["size_mb"]
    assert int8["calibration_size"] == "96x48" and int8["calibration_images"] == 2 and 0 <= int8["agreement"] <= 1
    assert int8["params"] == pruned["params"] and int8["gflops"] == pytest.approx(pruned["gflops"])

    store = Store(workspace.db)
    runs = {r["variant"]: r for r in store.leaderboard()}
    assert runs[pruned["name"]]["parent_variant"] == parent and runs[pruned["name"]]["method"] == "prune"
    assert runs[int8["name"]]["parent_variant"] == pruned["name"] and runs[int8["name"]]["method"] == "int8"
    assert runs[pruned["name"]]["derivation"]["miou_before_finetune"] == pytest.approx(pruned["miou_before_finetune"])
    assert runs[int8["name"]]["latency_precision"] == "int8" and runs[int8["name"]]["miou"] == pytest.approx(int8["miou"])
    assert len(store.epochs(runs[pruned["name"]]["run_id"])) >= 1  # fine-tuning is a training run with epoch rows

    code, out = _cli("runs", "--json", "--db", workspace.db)
    listed = {r["variant"]: r for r in json.loads(out)}
    assert listed[int8["name"]]["parent_variant"] == pruned["name"] and listed[pruned["name"]]["ratio"] == 0.5


def test_derived_models_load_checked_and_work_as_variants(derived, workspace, synth_root, tmp_path):
    pruned, int8 = derived
    store = Store(workspace.db)
    ckpt = checkpoints.load(int8["checkpoint"], store=store)  # sha256 recorded when written, checked now
    assert ckpt["derived"]["parent_sha256"] == checkpoints.sha256(pruned["checkpoint"])
    assert ckpt["pruning"] == checkpoints.load(pruned["checkpoint"])["pruning"]
    code, out = _cli("evaluate", "--variant", int8["name"], "--json", "--data-root", str(synth_root), "--db",
                     workspace.db, "--weights-dir", str(workspace.weights), "--device", "cpu")
    assert code == 0 and json.loads(out)["miou"] == pytest.approx(int8["miou"])
    image = next((synth_root / "leftImg8bit" / "val").rglob("*.png"))
    for name in (pruned["name"], int8["name"]):
        code, _ = _cli("segment", "--variant", name, "--input", str(image), "--output", str(tmp_path / name),
                       "--db", workspace.db, "--weights-dir", str(workspace.weights), "--device", "cpu", "--quiet")
        assert code == 0 and list((tmp_path / name).glob("*_trainIds.png"))
    onnx_out = tmp_path / "deploy.onnx"
    assert _cli("export-onnx", "--variant", int8["name"], "--out", str(onnx_out), "--weights-dir",
                str(workspace.weights))[0] == 0
    assert onnx_out.read_bytes() == checkpoints.int8_onnx_bytes(ckpt)
    from engine.inference import Segmenter

    seg = Segmenter(int8["checkpoint"], "cpu")
    assert seg.precision == "int8" and seg.backend_name == "onnxruntime-cpu"
    labels = seg.predict(np.zeros((40, 70, 3), np.uint8))
    assert labels.shape == (40, 70) and labels.max() < 19


def test_tampered_int8_graph_is_refused(derived, tmp_path):
    ckpt = checkpoints.load(derived[1]["checkpoint"])
    ckpt["int8"]["onnx"][100] ^= 1
    torch.save(ckpt, tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="does not match its recorded sha256"):
        checkpoints.build_from(checkpoints.load(tmp_path / "t.pt"))


def test_fine_tuning_resumes_exactly_after_a_crash(workspace, synth_root, tmp_path, monkeypatch):
    """Fine-tuning is a training run: crashed after 2 of 4 iterations (last.pt written every
    iteration), `--resume` reuses pruned.pt, continues the same run and ends with the weights of
    an uninterrupted fine-tuning."""
    import engine.train as train_mod

    ckpt = checkpoints.load(workspace.weights / workspace.variant / "best.pt")
    ckpt["recipe"]["schedule"]["checkpoint_every_iters"] = 1
    dirs = {}
    for name in ("straight", "crashed"):
        (tmp_path / name / workspace.variant).mkdir(parents=True)
        torch.save(ckpt, tmp_path / name / workspace.variant / "best.pt")
        dirs[name] = tmp_path / name
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")

    def run(weights, resume=False):
        return compress.compress(variant=workspace.variant, method="prune", ratios=[0.2], finetune_iters=4,
                                 store=store, data_root=synth_root, device="cpu", weights_dir=weights,
                                 resume=resume, progress=False)[0]

    run(dirs["straight"])
    real, calls = train_mod.train_step, []

    def crashing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return real(*args)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "train_step", crashing)
        with pytest.raises(RuntimeError, match="power cut"):
            run(dirs["crashed"])
    out = dirs["crashed"] / f"{workspace.variant}+prune0.2"
    pruned_sha = checkpoints.sha256(out / "pruned.pt")
    assert checkpoints.load(out / "last.pt")["iteration"] == 2
    [failed] = [r for r in store.runs() if r["status"] == "failed"]
    resumed = run(dirs["crashed"], resume=True)
    assert checkpoints.sha256(out / "pruned.pt") == pruned_sha  # not pruned again
    assert resumed["run_id"] == failed["id"] and store.run(failed["id"])["status"] == "completed"
    a = checkpoints.load(dirs["straight"] / f"{workspace.variant}+prune0.2" / "last.pt")
    b = checkpoints.load(out / "last.pt")
    assert a["iteration"] == b["iteration"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_clean_removes_derived_models_of_the_synthetic_scenes(derived, workspace):
    from engine.clean import plan_clean

    removed = {str(p) for p in plan_clean(workspace.db, workspace.weights).remove}
    pruned_dir = workspace.weights / derived[0]["name"]
    assert {derived[0]["checkpoint"], derived[1]["checkpoint"], str(pruned_dir / "pruned.pt")} <= removed

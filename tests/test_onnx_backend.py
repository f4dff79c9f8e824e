"""ONNX export and the ONNX Runtime backend, on the real tiny DeepLabV3-R50 checkpoint from `trained`
(copied into tmp_path: nothing is written next to the shared fixture's weights)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from engine import checkpoints, onnx_backend
from engine.data.transforms import to_tensor
from engine.runtime import forward_logits
from engine.onnx_backend import OnnxForward, OnnxUnavailable, ensure_onnx, export_onnx, onnx_path_for


@pytest.fixture
def ckpt_path(trained, tmp_path):
    path = tmp_path / trained.variant / "best.pt"
    path.parent.mkdir()
    shutil.copy(trained.weights / trained.variant / "best.pt", path)
    onnx_backend._fresh.clear()
    return path


def images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Random RGB images normalised the way the data pipeline does."""
    rng = np.random.default_rng(seed)
    return torch.stack([to_tensor(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(n)]).contiguous()


def torch_logits(path, x: torch.Tensor) -> torch.Tensor:
    model = checkpoints.build_from(checkpoints.load(path))
    with torch.inference_mode():
        return forward_logits(model, x)


def test_export_matches_torch_at_any_size(ckpt_path):
    path = export_onnx(ckpt_path)
    assert path == onnx_path_for(ckpt_path) == ckpt_path.with_name("best.onnx") and path.is_file()
    assert not [p for p in ckpt_path.parent.iterdir() if p.name.endswith(".tmp")]
    fwd = OnnxForward(path, torch.device("cpu"), threads=2)
    assert fwd.providers == ["CPUExecutionProvider"] and fwd.name == "onnxruntime-cpu"
    for shape in [(2, 64, 96), (1, 40, 72)]:
        x = images(*shape)
        got, want = fwd(x), torch_logits(ckpt_path, x)
        assert got.dtype == torch.float32 and got.device == x.device
        assert got.shape == want.shape == (shape[0], 19, *shape[1:])
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
        assert (got.argmax(1) == want.argmax(1)).float().mean() >= 0.999


def test_metadata_and_reexport_when_checkpoint_changes(ckpt_path):
    path = export_onnx(ckpt_path)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    ckpt = checkpoints.load(ckpt_path)
    assert meta == {"segbench_checkpoint_sha256": checkpoints.sha256(ckpt_path), "segbench_arch": ckpt["arch"],
                    "segbench_format": checkpoints.FORMAT}
    mtime = path.stat().st_mtime_ns
    assert ensure_onnx(ckpt_path) == path and path.stat().st_mtime_ns == mtime  # up to date: sha compared
    assert ensure_onnx(ckpt_path) == path and path.stat().st_mtime_ns == mtime  # cached comparison
    x = images(1, 32, 64)
    before = OnnxForward(path, torch.device("cpu"))(x)

    bias = [k for k in ckpt["model"] if k.startswith("classifier.") and k.endswith(".bias")][-1]
    ckpt["model"][bias] += torch.arange(19, dtype=torch.float32)
    new_sha = checkpoints.save(ckpt_path, ckpt["model"], arch=ckpt["arch"], recipe=ckpt["recipe"],
                               run_uid=ckpt["run_uid"], epoch=ckpt["epoch"], iteration=ckpt["iteration"],
                               metrics=ckpt["metrics"])
    assert ensure_onnx(ckpt_path) == path and path.stat().st_mtime_ns != mtime
    assert onnx_backend.recorded_sha256(path) == new_sha
    after = OnnxForward(path, torch.device("cpu"))(x)
    assert (after - before).abs().max() > 0.5
    torch.testing.assert_close(after, torch_logits(ckpt_path, x), atol=1e-3, rtol=1e-3)


def test_errors(ckpt_path, tmp_path, monkeypatch):
    missing = tmp_path / "nope" / "best.pt"
    with pytest.raises(checkpoints.CheckpointError):
        export_onnx(missing)
    with pytest.raises(checkpoints.CheckpointError):
        ensure_onnx(missing)
    assert not missing.parent.exists()

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00garbage, not a protobuf\xff" * 10)
    with pytest.raises(OnnxUnavailable, match="broken.onnx"):
        OnnxForward(broken, torch.device("cpu"))

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(OnnxUnavailable, match="onnxruntime"):
        OnnxForward(broken, torch.device("cpu"))


def test_import_does_not_need_onnxruntime():
    code = "import sys, engine.onnx_backend; assert 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(checkpoints.settings.REPO_ROOT))


def test_padding_archs_export_for_any_size(tmp_path):
    """UNet pads to a multiple of 16 behind a Python `if`: the export must pad for sizes the dummy input
    did not have (40x72 is not a multiple of 16), or the graph breaks at the first skip connection."""
    torch.manual_seed(0)
    from engine.models import build_model

    model = build_model("unet").eval()
    path = tmp_path / "unet" / "best.pt"
    checkpoints.save(path, model.state_dict(), arch="unet", recipe={"model": {}}, run_uid="t", epoch=0,
                     iteration=0, metrics={})
    x = images(1, 40, 72)
    got = OnnxForward(export_onnx(path), torch.device("cpu"))(x)
    torch.testing.assert_close(got, torch_logits(path, x), atol=1e-3, rtol=1e-3)

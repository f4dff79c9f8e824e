"""Checkpoints are data, not code; files are written atomically; a checkpoint's sha256 is checked
against the one recorded when it was written. Real files and real SQLite stores (no mocks)."""
from __future__ import annotations

import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import checkpoints, files
from engine.checkpoints import CheckpointError
from engine.store import Store
from tests.conftest import tiny_recipe

REPO = Path(__file__).resolve().parent.parent


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---- atomic writes ----

def test_atomic_write_replaces_whole_file_with_usual_permissions(tmp_path):
    target = tmp_path / "sub" / "out.csv"  # parent folders are created
    files.atomic_write(target, "a,b\n1,2\n")
    files.atomic_write(target, b"a,b\n3,4\n")
    assert target.read_text() == "a,b\n3,4\n" and _leftovers(target.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_writer_failing_half_way_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target, fresh = tmp_path / "out.csv", tmp_path / "new.csv"
    target.write_text("old complete contents\n")
    for path in (target, fresh):
        with pytest.raises(RuntimeError, match="disk full"):
            with files.atomic_path(path) as tmp:
                with open(tmp, "w") as f:
                    f.write("half of the new")
                    f.flush()
                    raise RuntimeError("disk full")
    assert target.read_text() == "old complete contents\n"
    assert not fresh.exists() and _leftovers(tmp_path) == []


CRASH = """
import os, signal, sys
from engine import files
with files.atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "w") as f:
        f.write("half of the new")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_crash_half_way_never_leaves_a_partial_file_under_the_real_name(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old complete contents\n")
    proc = subprocess.run([sys.executable, "-c", CRASH, str(target)], cwd=REPO, capture_output=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == "old complete contents\n"  # a killed process can only leave a hidden .tmp


def _tiny_save(path, store=None, value=0.0, **kw) -> str:
    return checkpoints.save(path, {"w": torch.full((4,), value)}, arch="tiny", recipe={}, run_uid="u" * 32,
                            epoch=0, iteration=0, metrics={}, store=store, **kw)


def test_checkpoint_save_failing_half_way_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    digest = _tiny_save(path, value=1.0)
    with pytest.raises(Exception):  # torch.save cannot pickle a lambda: it fails while writing
        checkpoints.save(path, {"w": torch.zeros(4)}, arch="tiny", recipe={}, run_uid="u", epoch=1, iteration=1,
                         metrics={"bad": lambda: None})
    assert checkpoints.sha256(path) == digest and checkpoints.load(path)["model"]["w"][0] == 1.0
    assert _leftovers(tmp_path) == []


def test_onnx_export_failing_half_way_leaves_no_file(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from engine.models import build_model
    from engine.onnx_backend import OnnxUnavailable, export_onnx

    r = tiny_recipe("unet_ce_dice")  # a real (untrained) tiny model: the export needs a real graph
    model = build_model(r.model.arch, num_classes=19, dropout=0.0, aux_loss=False)
    ckpt = tmp_path / "best.pt"
    checkpoints.save(ckpt, model.state_dict(), arch=r.model.arch, recipe=r.to_dict(), run_uid="u", epoch=0,
                     iteration=0, metrics={})
    out = tmp_path / "best.onnx"
    out.write_bytes(b"previous export")

    def invalid(path, *a, **kw):
        assert Path(path).stat().st_size > 0 and Path(path).name.endswith(".tmp")  # checked under its temp name
        raise onnx.checker.ValidationError("planted: invalid graph")

    monkeypatch.setattr(onnx.checker, "check_model", invalid)
    with pytest.raises(OnnxUnavailable, match="planted: invalid graph"):
        export_onnx(ckpt, out)
    assert out.read_bytes() == b"previous export" and _leftovers(tmp_path) == []


# ---- a checkpoint whose pickle would run code ----

class _RunsCode:
    """Unpickling this calls `func(arg)`: the payload of a malicious checkpoint."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _payloads(marker: Path):
    return {"os.system": _RunsCode(os.system, f"touch {shlex.quote(str(marker))}"),
            "exec": _RunsCode(exec, f"open({str(marker)!r}, 'w').write('pwned')")}


def _plant(path: Path, payload, how: str) -> None:
    if how == "torch.save":
        torch.save({"format": checkpoints.FORMAT, "model": {}, "payload": payload}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"format": checkpoints.FORMAT, "payload": payload}, f)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("kind", ["os.system", "exec"])
def test_planted_pickle_is_refused_and_its_code_never_runs(tmp_path, how, kind):
    marker = tmp_path / "pwned"
    bad = tmp_path / "weights" / "evil" / "best.pt"
    bad.parent.mkdir(parents=True)
    _plant(bad, _payloads(marker)[kind], how)

    control = tmp_path / "control"  # the payload is live: an unrestricted unpickler runs it
    pickle.loads(pickle.dumps(_payloads(control)[kind]))
    assert control.exists()

    for store in (None, Store(f"sqlite:///{tmp_path / 'results.db'}")):
        with pytest.raises(CheckpointError, match=r"refused to load: it holds pickled Python objects") as e:
            checkpoints.load(bad, store=store)
        assert "\n" not in str(e.value) and "weights_only=False" not in str(e.value)
    assert not marker.exists()


def test_planted_pickle_through_the_cli_is_one_error_line(tmp_path, capsys):
    from engine.cli import main

    marker, bad = tmp_path / "pwned", tmp_path / "evil.pt"
    _plant(bad, _payloads(marker)["os.system"], "torch.save")
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "img.png")
    rc = main(["segment", "--checkpoint", str(bad), "--input", str(tmp_path / "img.png"),
               "--output", str(tmp_path / "out"), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: refused to load") and "Traceback" not in err


# ---- sha256 recorded when written, checked when loaded ----

def test_tampered_checkpoint_is_refused_with_its_recorded_sha256(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    path = tmp_path / "w" / "v" / "best.pt"
    digest = _tiny_save(path, store=store, value=2.0)
    rec = store.checkpoint_record(path)
    assert rec["sha256"] == digest == checkpoints.sha256(path) and rec["kind"] == "best"
    assert checkpoints.load(path, store=store)["model"]["w"][0] == 2.0

    other = tmp_path / "elsewhere.pt"  # a well-formed checkpoint the store never saw: still loads
    _tiny_save(other, value=3.0)
    assert checkpoints.load(other, store=store)["model"]["w"][0] == 3.0

    shutil.copyfile(other, path)  # replaced behind the store's back (a valid file, other weights)
    with pytest.raises(CheckpointError) as e:
        checkpoints.load(path, store=store)
    msg = str(e.value)
    assert msg.startswith(f"{path}: sha256 {checkpoints.sha256(path)[:12]}… does not match the {digest[:12]}… "
                          f"recorded when it was written (")
    assert msg.endswith("the file was changed or corrupted") and "\n" not in msg
    with open(path, "r+b") as f:  # corrupted in place: the same clear error, before any unpickling
        f.seek(100)
        f.write(b"\xff")
    with pytest.raises(CheckpointError, match="does not match"):
        checkpoints.load(path, store=store)

    _tiny_save(path, store=store, value=4.0)  # written again through save: recorded again
    assert checkpoints.load(path, store=store)["model"]["w"][0] == 4.0
    store.close()


def test_training_records_every_checkpoint_it_writes(trained, tmp_path):
    from engine.inference import Segmenter

    store = Store(trained.db)
    run = store.run(trained.result.run_id)
    for path, kind in ((trained.result.best_checkpoint, "best"), (trained.result.last_checkpoint, "last")):
        rec = store.checkpoint_record(path)
        assert rec["sha256"] == checkpoints.sha256(path) and rec["kind"] == kind
        assert rec["run_id"] == run["id"] and rec["run_uid"] == run["uid"]
    seg = Segmenter(trained.result.best_checkpoint, device="cpu", store=store)  # verified, then built
    assert seg.ckpt["run_uid"] == run["uid"]
    store.close()


def test_segment_checks_the_checkpoint_against_the_store_it_is_given(trained, tmp_path, capsys):
    from engine.cli import main

    path = tmp_path / "w" / trained.variant / "best.pt"
    path.parent.mkdir(parents=True)
    shutil.copyfile(trained.weights / trained.variant / "best.pt", path)
    image = tmp_path / "street.png"
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(image)
    db = f"sqlite:///{tmp_path / 'results.db'}"
    args = ["segment", "--checkpoint", str(path), "--input", str(image), "--output", str(tmp_path / "o"), "--quiet",
            "--db", db]
    with Store(db) as store:
        store.record_checkpoint(path, checkpoints.sha256(path), kind="best")
    assert main(args) == 0
    with Store(db) as store:  # the store remembers other bytes under this name
        store.record_checkpoint(path, "0" * 64, kind="best")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "does not match the 000000000000… recorded" in err and "Traceback" not in err
    assert main([*args[:-2], "--db", f"sqlite:///{tmp_path / 'none.db'}"]) == 0  # no store there: nothing to check
    assert not (tmp_path / "none.db").exists()

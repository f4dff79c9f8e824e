"""Which INT8 flow `compress` uses, measured: ONNX Runtime (fp32, QDQ S8S8, QOperator U8S8) against
eager fp32 PyTorch on one checkpoint at one size, and PyTorch's PT2E flow with the x86 Inductor
quantizer when torchao is installed (`pip install torchao`; it is not a requirement of the product).

    python scripts/bench_int8_flows.py --variant deeplabv3_r50_adam --size 1024x512

Prints one JSON object: ms per image (median of 3 after a warm-up), label agreement with eager fp32
on two synthetic scenes, file sizes, and the error of a flow that fails.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import checkpoints  # noqa: E402
from engine.compress import quantize_onnx  # noqa: E402
from engine.data.synthetic import render_scene  # noqa: E402
from engine.data.transforms import to_tensor  # noqa: E402
from engine.onnx_backend import _Logits, export_onnx  # noqa: E402
from engine.onnx_runtime import OnnxForward  # noqa: E402


def ms(f, x, repeats=3) -> float:
    f(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="deeplabv3_r50_adam")
    p.add_argument("--size", default="1024x512")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    path = checkpoints.resolve(a.variant)
    model = checkpoints.build_from(checkpoints.load(path))
    rng = np.random.default_rng(0)
    images = [TF.resize(to_tensor(render_scene(rng, 2 * w, 2 * h)[0])[None], [h, w], antialias=True) for _ in range(6)]
    calibration, test = images[:4], images[4:]
    out: dict = {"variant": a.variant, "size": a.size, "threads": torch.get_num_threads(), "torch": torch.__version__}
    with torch.inference_mode():
        ref = [model(x)["out"].argmax(1) for x in test]
        out["eager_fp32_ms"] = ms(lambda x: model(x), test[0])

    def agreement(f) -> float:
        return float(np.mean([(f(x).argmax(1) == r).float().mean().item() for x, r in zip(test, ref)]))

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(path, Path(tmp) / "fp32.onnx")
        q = Path(tmp) / "qop.onnx"
        quantize_onnx(fp32, q, [x.numpy() for x in calibration], num_classes=19)
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        qdq = Path(tmp) / "qdq.onnx"
        reader = iter({"image": x.numpy()} for x in calibration)
        quantize_static(str(fp32), str(qdq), type("R", (), {"get_next": lambda self: next(reader, None)})(),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
        for name, file in (("onnxruntime_fp32", fp32), ("onnxruntime_qdq_s8s8", qdq), ("onnxruntime_qoperator_u8s8", q)):
            f = OnnxForward(file, torch.device("cpu"))
            out[f"{name}_ms"], out[f"{name}_agreement"] = ms(f, test[0]), agreement(f)
            out[f"{name}_mb"] = file.stat().st_size / 1e6
    try:  # PyTorch 2 export quantization, x86 Inductor backend (torchao)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        with torch.no_grad():
            prepared = prepare_pt2e(torch.export.export(_Logits(model, model.pad_multiple).eval(), (test[0],)).module(), quantizer)
            for x in calibration:
                prepared(x)
            compiled = torch.compile(convert_pt2e(prepared), options={"freezing": True})
            out["pt2e_inductor_ms"], out["pt2e_inductor_agreement"] = ms(compiled, test[0]), agreement(compiled)
    except Exception as e:  # noqa: BLE001  (what fails is the finding)
        out["pt2e_inductor_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()

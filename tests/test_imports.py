"""engine.models.imports: published Cityscapes checkpoints (official HRNet, mmsegmentation) into our models.

The published files cannot be downloaded here. Each test builds a state dict laid out as the published
file is: one of our models with random weights and BatchNorm statistics, renamed by this test into the
publisher's names; checks that layout against the one written down below from the public model code
(every key and shape, and the totals); saves it as the publisher does; imports it; and compares the
imported model's logits with the source model's. Real files, a real SQLite store, the real CLI.

Where the layouts come from (file @ commit, lines):

HRNet/HRNet-Semantic-Segmentation (`hrnet_cs_8090_torch11.pth`: tools/train.py's `final_state.pth`)
- tools/train.py @06142dc: the loss is CrossEntropy(weight=train_dataset.class_weights) (186-194), the model
  FullModel(model, criterion) (196), saved as `model.module.state_dict()` (268-269, 276-277): keys `model.*`
  and `loss.*`; tools/test.py @081bd42 strips `model.` with `k[6:]` (80-83).
- lib/utils/utils.py @06142dc: FullModel (21-36): `self.model`, `self.loss` (30-31).
- lib/core/criterion.py @081bd42: CrossEntropy (11-16) holds nn.CrossEntropyLoss(weight=...) as `criterion`,
  whose `weight` is a buffer: `loss.criterion.weight` (19,).
- lib/models/seg_hrnet.py @605d941: BasicBlock conv1/bn1/conv2/bn2 (32-61); Bottleneck conv1-3/bn1-3 (64-102);
  HighResolutionModule `branches` (143-174) and `fuse_layers` (176-220: j > i Sequential(conv 1x1, bn);
  j < i, i - j Sequential(conv 3x3 s2, bn[, relu])); stem conv1/bn1/conv2/bn2 (264-271); layer1, transition1-3,
  stage2-4 (273-308); `last_layer` = [Conv2d 720->720 1x1 (bias: the default), BatchNorm2d, ReLU, Conv2d 720->19]
  (312-327); _make_transition_layer (329-363); _make_layer, `downsample` = Sequential(conv, bn) (365-380).
- experiments/cityscapes/seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml @074f331: MODEL
  (17-70): ALIGN_CORNERS False (19), FINAL_CONV_KERNEL 1 (22), blocks 4 per branch, modules 1/4/3, channels
  48/96/192/384.
  -> 1830 backbone keys (306 BatchNorms x 5 + 300 convs), + 9 last_layer + 1 loss = 1840.

open-mmlab/mmsegmentation (files {"meta": ..., "state_dict": ...}), with open-mmlab/mmcv
- mmseg/models/segmentors/encoder_decoder.py @fb3391c: `backbone` (35), `decode_head` (48), `auxiliary_head` (52-60).
- mmcv/cnn/bricks/conv_module.py @013f784: bias='auto' is no bias under a norm (103-105); `conv` (118-127);
  the norm named by build_norm_layer without postfix (143-150). mmcv/cnn/bricks/norm.py @056372f: BN, SyncBN
  are torch's BatchNorm2d / SyncBatchNorm (11, 15); a _BatchNorm subclass is abbreviated "bn" (infer_abbr
  24-70, 53-54); name = abbreviation + postfix (109-112): ConvModule's `bn`, the backbones' `bn1`, `bn2`, `bn3`
  (never `norm1`: that is only a property returning them, hrnet.py 424-432).
- mmseg/models/backbones/hrnet.py @034a5c8: HRModule (14-214; fuse_layers 125-189: j > i Sequential(conv, bn,
  Upsample), j < i as seg_hrnet.py); stem conv1, bn1, conv2, bn2 (351-374); layer1, transition1-3, stage2-4
  (376-420); _make_transition_layer (434-479); _make_layer (481-493): the same names as seg_hrnet.py's.
- configs/_base_/models/fcn_hr18.py @57ac1a0: FCNHead (36-50): in_index (0, 1, 2, 3), resize_concat,
  kernel_size 1, num_convs 1, concat_input False, dropout_ratio -1; configs/hrnet/fcn_hr48_512x1024_160k_cityscapes.py
  @57ac1a0 (3-11): channels 48/96/192/384, head channels 720.
- mmseg/models/decode_heads/fcn_head.py @0b5f81f: `convs` = Sequential of ConvModule (32-52), `conv_cat` only
  with concat_input (53-61). mmseg/models/decode_heads/decode_head.py @0255eb9: `conv_seg` = Conv2d(channels,
  num_classes, 1) with bias (131); Dropout2d, no parameters (132-135); resize_concat sums the channels (174-175).
  -> FCN-HRNetV2p-W48: 1830 backbone keys + decode_head.convs.0 (1 + 5) + conv_seg (2) = 1838.
- mmseg/models/backbones/resnet.py @03b0197: Bottleneck conv1-3, bn1-3 (163-208); arch_settings 50: (3, 4, 6, 3),
  101: (3, 4, 23, 3) (384-390); `layer{i+1}` (517-518); stem conv1 (7x7) + bn1 without deep_stem (622-635; the
  ResNetV1c deep stem `stem.*`, 590-621). mmseg/models/utils/res_layer.py @230246f: downsample Sequential(conv,
  bn) (43-65). configs/deeplabv3/deeplabv3_r50b-d8_512x1024_80k_cityscapes.py @bd15201 (3) and
  deeplabv3_r101b-d8_512x1024_80k_cityscapes.py @bd15201 (3-5): backbone type ResNet (torchvision's layout).
- mmseg/models/decode_heads/aspp_head.py @306731f: ASPPModule of ConvModules, 1x1 for dilation 1, else 3x3
  (32-42); `image_pool` = [AdaptiveAvgPool2d, ConvModule 1x1] (69-77); `aspp_modules` (78-84); `bottleneck`
  ConvModule 3x3 over (len(dilations) + 1) x channels (85-92); image pool first in the concat (97-105).
- configs/_base_/models/deeplabv3_r50-d8.py @2fc821e: ASPPHead (17-28): in 2048, channels 512, dilations
  (1, 12, 24, 36), dropout 0.1, 19 classes; auxiliary FCNHead (29-41): in 1024, channels 256, num_convs 1
  (kernel 3: fcn_head.py 24), concat_input False, dropout 0.1.
  -> R-50b: 318 backbone keys (16 blocks x 18 + 4 downsamples x 6 + stem 6) + 38 decode head + 8 auxiliary = 364;
     R-101b: 624 + 46 = 670.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine import checkpoints
from engine.models import build_model
from engine.models.imports import ImportCheckpointError, convert, import_checkpoint
from engine.store import Store

W48 = (48, 96, 192, 384)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the published layouts, from the public code above ----

def _conv(name: str, cout: int, cin: int, k: int, bias: bool = False) -> dict:
    return {f"{name}.weight": (cout, cin, k, k), **({f"{name}.bias": (cout,)} if bias else {})}


def _bn(name: str, c: int) -> dict:
    return {**{f"{name}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")},
            f"{name}.num_batches_tracked": ()}


def hrnet_w48_backbone(p: str) -> dict:
    """Every key and shape of HRNetV2-W48's backbone as seg_hrnet.py (and mmseg's hrnet.py) build it."""
    keys = {**_conv(p + "conv1", 64, 3, 3), **_bn(p + "bn1", 64), **_conv(p + "conv2", 64, 64, 3), **_bn(p + "bn2", 64)}
    cin = 64
    for b in range(4):  # layer1: 4 Bottlenecks 64 -> 256, a downsample on the first
        q = f"{p}layer1.{b}."
        keys |= {**_conv(q + "conv1", 64, cin, 1), **_bn(q + "bn1", 64), **_conv(q + "conv2", 64, 64, 3),
                 **_bn(q + "bn2", 64), **_conv(q + "conv3", 256, 64, 1), **_bn(q + "bn3", 256)}
        if b == 0:
            keys |= {**_conv(q + "downsample.0", 256, 64, 1), **_bn(q + "downsample.1", 256)}
        cin = 256
    pre = [256]
    for stage, modules in ((2, 1), (3, 4), (4, 3)):
        cur, t = W48[:stage], f"{p}transition{stage - 1}."
        for i, c in enumerate(cur):
            if i < len(pre) and c != pre[i]:  # Sequential(conv 3x3, bn, relu)
                keys |= {**_conv(f"{t}{i}.0", c, pre[i], 3), **_bn(f"{t}{i}.1", c)}
            elif i >= len(pre):  # a new branch: Sequential(Sequential(conv 3x3 s2, bn, relu))
                keys |= {**_conv(f"{t}{i}.0.0", c, pre[-1], 3), **_bn(f"{t}{i}.0.1", c)}
        for m in range(modules):
            s = f"{p}stage{stage}.{m}."
            for i, c in enumerate(cur):
                for b in range(4):  # BasicBlocks, no downsample (channels unchanged)
                    q = f"{s}branches.{i}.{b}."
                    keys |= {**_conv(q + "conv1", c, c, 3), **_bn(q + "bn1", c), **_conv(q + "conv2", c, c, 3),
                             **_bn(q + "bn2", c)}
            for i, ci in enumerate(cur):
                for j, cj in enumerate(cur):
                    f = f"{s}fuse_layers.{i}.{j}."
                    if j > i:
                        keys |= {**_conv(f + "0", ci, cj, 1), **_bn(f + "1", ci)}
                    for k in range(i - j):  # j < i: i - j stride-2 convs, the last one to branch i's width
                        out = ci if k == i - j - 1 else cj
                        keys |= {**_conv(f"{f}{k}.0", out, cj, 3), **_bn(f"{f}{k}.1", out)}
        pre = list(cur)
    return keys


def resnet_backbone(blocks: tuple[int, ...]) -> dict:
    """torchvision's ResNet = mmsegmentation's ResNet ("b"): stem, Bottlenecks, downsample on each first block."""
    keys, cin = {**_conv("backbone.conv1", 64, 3, 7), **_bn("backbone.bn1", 64)}, 64
    for layer, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), 1):
        for b in range(n):
            q = f"backbone.layer{layer}.{b}."
            keys |= {**_conv(q + "conv1", planes, cin, 1), **_bn(q + "bn1", planes),
                     **_conv(q + "conv2", planes, planes, 3), **_bn(q + "bn2", planes),
                     **_conv(q + "conv3", planes * 4, planes, 1), **_bn(q + "bn3", planes * 4)}
            if b == 0:
                keys |= {**_conv(q + "downsample.0", planes * 4, cin, 1), **_bn(q + "downsample.1", planes * 4)}
            cin = planes * 4
    return keys


def cm(name: str, cout: int, cin: int, k: int) -> dict:
    """mmcv's ConvModule with a norm: `conv` without bias, `bn`."""
    return {**_conv(f"{name}.conv", cout, cin, k), **_bn(f"{name}.bn", cout)}


OFFICIAL_HEAD = {**_conv("model.last_layer.0", 720, 720, 1, bias=True), **_bn("model.last_layer.1", 720),
                 **_conv("model.last_layer.3", 19, 720, 1, bias=True), "loss.criterion.weight": (19,)}
MMSEG_FCN_HEAD = {**cm("decode_head.convs.0", 720, 720, 1), **_conv("decode_head.conv_seg", 19, 720, 1, bias=True)}
MMSEG_ASPP_HEADS = {**cm("decode_head.image_pool.1", 512, 2048, 1), **cm("decode_head.aspp_modules.0", 512, 2048, 1),
                    **{k: v for i in (1, 2, 3) for k, v in cm(f"decode_head.aspp_modules.{i}", 512, 2048, 3).items()},
                    **cm("decode_head.bottleneck", 512, 5 * 512, 3), **_conv("decode_head.conv_seg", 19, 512, 1, True),
                    **cm("auxiliary_head.convs.0", 256, 1024, 3), **_conv("auxiliary_head.conv_seg", 19, 256, 1, True)}
LAYOUTS = {  # (every key and shape, the total)
    "hrnet-official": ({**hrnet_w48_backbone("model."), **OFFICIAL_HEAD}, 1840),
    "mmseg-hrnet": ({**hrnet_w48_backbone("backbone."), **MMSEG_FCN_HEAD}, 1838),
    "mmseg-r50b": ({**resnet_backbone((3, 4, 6, 3)), **MMSEG_ASPP_HEADS}, 364),
    "mmseg-r101b": ({**resnet_backbone((3, 4, 23, 3)), **MMSEG_ASPP_HEADS}, 670),
}
REPRESENTATIVE = {  # written out by hand from the code above
    "hrnet-official": {"model.conv1.weight": (64, 3, 3, 3), "model.layer1.0.downsample.0.weight": (256, 64, 1, 1),
                       "model.transition1.1.0.0.weight": (96, 256, 3, 3),
                       "model.stage2.0.fuse_layers.0.1.0.weight": (48, 96, 1, 1),
                       "model.stage4.2.fuse_layers.3.0.2.0.weight": (384, 48, 3, 3),
                       "model.stage4.2.branches.3.3.conv2.weight": (384, 384, 3, 3),
                       "model.last_layer.0.weight": (720, 720, 1, 1), "model.last_layer.0.bias": (720,),
                       "model.last_layer.1.running_mean": (720,), "model.last_layer.3.weight": (19, 720, 1, 1),
                       "model.last_layer.3.bias": (19,), "loss.criterion.weight": (19,)},
    "mmseg-hrnet": {"backbone.bn2.running_var": (64,), "backbone.transition3.3.0.0.weight": (384, 192, 3, 3),
                    "backbone.stage3.3.fuse_layers.0.2.0.weight": (48, 192, 1, 1),
                    "decode_head.convs.0.conv.weight": (720, 720, 1, 1), "decode_head.convs.0.bn.weight": (720,),
                    "decode_head.conv_seg.weight": (19, 720, 1, 1), "decode_head.conv_seg.bias": (19,)},
    "mmseg-r50b": {"backbone.conv1.weight": (64, 3, 7, 7), "backbone.layer3.5.conv2.weight": (256, 256, 3, 3),
                   "backbone.layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
                   "decode_head.image_pool.1.conv.weight": (512, 2048, 1, 1),
                   "decode_head.aspp_modules.3.conv.weight": (512, 2048, 3, 3),
                   "decode_head.bottleneck.conv.weight": (512, 2560, 3, 3), "decode_head.conv_seg.weight": (19, 512, 1, 1),
                   "auxiliary_head.convs.0.conv.weight": (256, 1024, 3, 3), "auxiliary_head.convs.0.bn.running_var": (256,),
                   "auxiliary_head.conv_seg.weight": (19, 256, 1, 1)},
    "mmseg-r101b": {"backbone.layer3.22.conv3.weight": (1024, 256, 1, 1),
                    "decode_head.bottleneck.conv.weight": (512, 2560, 3, 3)},
}
ABSENT = {"mmseg-hrnet": ["decode_head.convs.0.conv.bias", "decode_head.conv_cat.conv.weight"],
          "mmseg-r50b": ["decode_head.image_pool.1.conv.bias", "backbone.stem.0.weight", "backbone.layer3.6.conv1.weight"]}


def assert_published_layout(state: dict, layout: str) -> None:
    expected, total = LAYOUTS[layout]
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert len(expected) == total and len(shapes) == total, (len(expected), len(shapes))
    assert shapes.items() >= REPRESENTATIVE[layout].items()
    assert not set(ABSENT.get(layout, ())) & shapes.keys()
    assert shapes == expected, sorted(set(shapes.items()) ^ set(expected.items()))[:10]


# ---- our models, renamed into the publishers' names (by this test, not by the converter) ----

def randomized(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm affine parameters, and running statistics near those of a random batch (so that the
    activations keep a sane scale through a randomly initialised network), perturbed at random."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.normal_(0, 0.1, generator=g)
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: here, the statistics of the one batch below
        model.train()(torch.randn(2, 3, 64, 64, generator=g))
        for m in norms:
            m.momentum = 0.1
            m.running_mean.add_(torch.randn(m.num_features, generator=g) * 0.2 * m.running_var.sqrt())
            m.running_var.mul_(torch.empty(m.num_features).uniform_(0.7, 1.4, generator=g))
            m.num_batches_tracked.fill_(80000)
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.1, generator=g)
    return model.eval()


def _mmseg_names(ours: dict, modules: dict[str, str]) -> dict:
    out = {}
    for key, value in ours.items():
        module, _, param = key.rpartition(".")
        out[f"{modules.get(module, module)}.{param}"] = value
    return out


def official_layout(model: nn.Module, bias: torch.Tensor) -> dict:
    sd = model.state_dict()
    out = {"model." + k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    out |= {"model.last_layer." + k.removeprefix("classifier."): v for k, v in sd.items() if k.startswith("classifier.")}
    out["model.last_layer.0.bias"] = bias
    return out | {"loss.criterion.weight": torch.rand(19) + 0.5}  # Cityscapes' class weights


def mmseg_hrnet_layout(model: nn.Module) -> dict:
    return _mmseg_names(model.state_dict(), {"classifier.0": "decode_head.convs.0.conv",
                                             "classifier.1": "decode_head.convs.0.bn", "classifier.3": "decode_head.conv_seg"})


def mmseg_deeplab_layout(model: nn.Module) -> dict:
    names = {"classifier.0.image_pool.1.0": "decode_head.image_pool.1.conv",
             "classifier.0.image_pool.1.1": "decode_head.image_pool.1.bn",
             "classifier.0.bottleneck.0": "decode_head.bottleneck.conv",
             "classifier.0.bottleneck.1": "decode_head.bottleneck.bn", "classifier.2": "decode_head.conv_seg",
             "aux_classifier.0": "auxiliary_head.convs.0.conv", "aux_classifier.1": "auxiliary_head.convs.0.bn",
             "aux_classifier.4": "auxiliary_head.conv_seg"}
    names |= {f"classifier.0.aspp.{i}.{j}": f"decode_head.aspp_modules.{i}.{part}"
              for i in range(4) for j, part in enumerate(("conv", "bn"))}
    return _mmseg_names(model.state_dict(), names)


def mmseg_file(path, state: dict) -> None:
    """As mmcv's save_checkpoint writes it: meta (plain types here) + state_dict."""
    meta = {"mmcv_version": "1.3.0", "CLASSES": ("road", "sidewalk"), "PALETTE": [[128, 64, 128], [244, 35, 232]],
            "iter": 80000, "config": "model = dict(type='EncoderDecoder', ...)"}
    torch.save({"meta": meta, "state_dict": state}, path)


def logits(model: nn.Module, x: torch.Tensor) -> dict:
    with torch.no_grad():
        return model.eval()(x)


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = max(1.0, b.abs().max().item())
    assert torch.isfinite(b).all() and (a - b).abs().max().item() <= 1e-5 * scale


def imported_model(result: dict, store: Store) -> nn.Module:
    ckpt = checkpoints.load(result["checkpoint"], store=store)  # sha256 checked against the store's record
    return checkpoints.build_from(ckpt)


@pytest.fixture(scope="module")
def hrnet_source():
    torch.manual_seed(0)
    return randomized(build_model("hrnetv2_w48"), seed=1)


@pytest.fixture(scope="module")
def r50_source():
    torch.manual_seed(4)
    return randomized(build_model("deeplabv3_r50", head="mmseg", dropout=0.1, aux_loss=True), seed=5)


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'results.db'}")


X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))


# ---- round trips ----

def test_official_hrnet_round_trip_folds_the_head_conv_bias(hrnet_source, store, tmp_path):
    bias = torch.randn(720, generator=torch.Generator().manual_seed(3)) * 0.5
    published = official_layout(hrnet_source, bias)
    assert_published_layout(published, "hrnet-official")
    path = tmp_path / "hrnet_cs_8090_torch11.pth"
    torch.save(published, path)  # tools/train.py: torch.save(model.module.state_dict(), ...)
    # the published model: last_layer.0 with its bias, the BatchNorm's own statistics
    head_conv = nn.Conv2d(720, 720, 1)
    with torch.no_grad():
        head_conv.weight.copy_(hrnet_source.classifier[0].weight)
        head_conv.bias.copy_(bias)
    ours_without_bias = logits(hrnet_source, X)["out"]
    original, hrnet_source.classifier[0] = hrnet_source.classifier[0], head_conv
    try:
        expected = logits(hrnet_source, X)["out"]
    finally:
        hrnet_source.classifier[0] = original
    assert (expected - ours_without_bias).abs().max() > 1e-2  # the bias matters: folding it is tested

    result = import_checkpoint(path, "hrnet-official", "hrnetv2_w48_official", published_miou=0.809,
                               source_url="https://github.com/HRNet/HRNet-Semantic-Segmentation", store=store,
                               weights_dir=tmp_path / "weights")
    assert result["arch"] == "hrnetv2_w48" and result["source_sha256"] == checkpoints.sha256(path)
    model = imported_model(result, store)
    assert model.aux_classifier is None and not any(isinstance(m, nn.Dropout2d) for m in model.classifier)
    assert_close(logits(model, X)["out"], expected)
    run = store.run(result["run_id"])
    assert run["hyperparameters"]["model"].items() >= {"dropout": 0.0, "aux_loss": False, "head": None}.items()
    assert run["profile"] == "imported" and run["source"] == {
        "format": "hrnet-official", "file": path.name, "sha256": result["source_sha256"],
        "url": "https://github.com/HRNet/HRNet-Semantic-Segmentation", "published_miou": 0.809}


def test_mmseg_hrnet_round_trip(hrnet_source, store, tmp_path):
    published = mmseg_hrnet_layout(hrnet_source)
    assert_published_layout(published, "mmseg-hrnet")
    path = tmp_path / "fcn_hr48_512x1024_160k_cityscapes_20200602_190946-59b7973e.pth"
    mmseg_file(path, published)
    result = import_checkpoint(path, "mmseg", "fcn_hr48_mmseg", store=store, weights_dir=tmp_path / "weights")
    assert result["arch"] == "hrnetv2_w48"
    assert_close(logits(imported_model(result, store), X)["out"], logits(hrnet_source, X)["out"])


def test_mmseg_deeplabv3_r50b_round_trip_and_recorded(r50_source, store, tmp_path, capsys):
    source = r50_source
    published = mmseg_deeplab_layout(source)
    assert_published_layout(published, "mmseg-r50b")
    path = tmp_path / "deeplabv3_r50b-d8_512x1024_80k_cityscapes_20201225_155148-ec368954.pth"
    mmseg_file(path, published)
    url = "https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/deeplabv3_r50b-d8_512x1024_80k_cityscapes"
    weights, name = tmp_path / "weights", "deeplabv3_r50b_mmseg"
    result = import_checkpoint(path, "mmseg", name, published_miou=0.8028, source_url=url, store=store,
                               weights_dir=weights)
    assert result["arch"] == "deeplabv3_r50" and result["already_imported"] is False
    model = imported_model(result, store)
    want, got = logits(source, X), logits(model, X)
    assert set(got) == {"out", "aux"}
    assert_close(got["out"], want["out"])
    assert_close(got["aux"], want["aux"])

    # a checkpoint of ours: its recipe is the family's reference profile, imported; the file's sha256 recorded
    ckpt = checkpoints.load(result["checkpoint"], store=store)
    assert ckpt["recipe"]["name"] == name and ckpt["recipe"]["profile"] == "imported"
    assert ckpt["recipe"]["model"].items() >= {"head": "mmseg", "dropout": 0.1, "aux_loss": True}.items()
    assert ckpt["recipe"]["data"]["eval_size"] == [2048, 1024]
    assert ckpt["recipe"]["description"] == f"Imported from mmseg checkpoint {path.name}"
    assert ckpt["imported"] == {"format": "mmseg", "file": path.name, "sha256": checkpoints.sha256(path),
                                "url": url, "published_miou": 0.8028}
    run = store.run(result["run_id"])
    assert run["variant"] == name and run["profile"] == "imported" and run["status"] == "completed"
    assert run["arch"] == "deeplabv3_r50" and run["backbone"] == "resnet50" and run["dataset"] == "cityscapes"
    assert run["source"] == ckpt["imported"] and run["checkpoint"] == result["checkpoint"]
    assert store.checkpoint_record(result["checkpoint"])["sha256"] == result["sha256"]

    # the same file again (the CLI): already imported, nothing changes; another file under the same name: refused
    from engine.cli import main

    db = f"sqlite:///{tmp_path / 'results.db'}"
    code = main(["import-checkpoint", "--format", "mmseg", str(path), "--name", name, "--db", db,
                 "--weights-dir", str(weights)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{name}: already imported from mmseg checkpoint {path} as deeplabv3_r50 (run {result['run_id']})" in out
    assert f"sha256 {result['sha256']}" in out and f"sha256 {result['source_sha256']}" in out
    assert f"next: python -m engine evaluate --variant {name} --dataset cityscapes --db {db} --weights-dir {weights}" in out
    assert checkpoints.sha256(result["checkpoint"]) == result["sha256"]
    other = tmp_path / "other.pth"
    other.write_bytes(b"not the same file")
    with pytest.raises(ImportCheckpointError, match=f"already holds a model imported from {path.name}"):
        import_checkpoint(other, "mmseg", name, store=store, weights_dir=weights)
    assert [r["variant"] for r in store.runs()] == [name]


def test_mmseg_deeplabv3_r101b_is_detected_and_its_layout_matches():
    torch.manual_seed(6)
    model = build_model("deeplabv3_r101", head="mmseg", dropout=0.1, aux_loss=True)
    published = mmseg_deeplab_layout(model)
    assert_published_layout(published, "mmseg-r101b")
    arch, ours, settings = convert(published, "mmseg")
    assert arch == "deeplabv3_r101" and settings == {"head": "mmseg", "dropout": 0.1, "aux_loss": True}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert all(ours[k] is v for k, v in published.items() if k.startswith("backbone."))  # renamed, not copied


# ---- refusals ----

def test_missing_and_unexpected_keys_are_one_error_listing_them(r50_source, tmp_path):
    published = mmseg_deeplab_layout(r50_source)
    published["decode_head.conv_seg.weight"] = torch.zeros(19, 256, 1, 1)  # mis-shaped
    missing = dict(published)
    del missing["decode_head.conv_seg.bias"], missing["backbone.layer2.1.bn2.running_var"]
    mmseg_file(tmp_path / "missing.pth", missing)
    with pytest.raises(ImportCheckpointError) as e:
        import_checkpoint(tmp_path / "missing.pth", "mmseg", "m", weights_dir=tmp_path / "w")
    text = str(e.value)
    assert "\n" not in text and "2 missing (backbone.layer2.1.bn2.running_var, decode_head.conv_seg.bias)" in text
    assert "1 mis-shaped (decode_head.conv_seg.weight (19, 256, 1, 1) vs ours (19, 512, 1, 1))" in text
    extra = dict(published, **{"decode_head.conv_seg.weight": torch.zeros(19, 512, 1, 1),
                               "decode_head.conv_cat.conv.weight": torch.zeros(1)})
    mmseg_file(tmp_path / "extra.pth", extra)
    with pytest.raises(ImportCheckpointError, match=r"1 unexpected \(decode_head\.conv_cat\.conv\.weight\)$"):
        import_checkpoint(tmp_path / "extra.pth", "mmseg", "m", weights_dir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_pickled_objects_and_wrong_formats_are_refused_with_what_to_do(tmp_path):
    path = tmp_path / "with_numpy_meta.pth"
    torch.save({"meta": {"hook_msgs": {"best_score": np.float64(0.79)}}, "state_dict": {"x": torch.zeros(1)}}, path)
    with pytest.raises(ImportCheckpointError, match="pickles Python objects.*re-save its state dict alone"):
        import_checkpoint(path, "mmseg", "m", weights_dir=tmp_path / "w")
    (tmp_path / "page.pth").write_text("<html>a download page, not the checkpoint</html>")
    with pytest.raises(ImportCheckpointError, match="page.pth: not a PyTorch checkpoint"):
        import_checkpoint(tmp_path / "page.pth", "hrnet-official", "m", weights_dir=tmp_path / "w")
    mmseg_like = {"backbone.conv1.weight": torch.zeros(1), "decode_head.conv_seg.weight": torch.zeros(1)}
    with pytest.raises(ImportCheckpointError, match="not an official HRNet.*--format mmseg"):
        convert(mmseg_like, "hrnet-official")
    with pytest.raises(ImportCheckpointError, match="not an mmsegmentation checkpoint of a model we can import.*"
                                                    "decode_head.conv_seg.*FCN-HRNetV2p-W48.*R-50b"):
        convert(mmseg_like, "mmseg")
    with pytest.raises(ImportCheckpointError, match="--format hrnet-official"):
        convert({"model.conv1.weight": torch.zeros(1)}, "mmseg")
    with pytest.raises(ImportCheckpointError, match="ResNetV1c"):
        convert({"backbone.stem.0.weight": torch.zeros(1), "decode_head.aspp_modules.0.conv.weight": torch.zeros(1)}, "mmseg")
    with pytest.raises(ImportCheckpointError, match="formats: hrnet-official, mmseg"):
        convert(mmseg_like, "detectron2")


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    from engine.cli import main

    code = main(["import-checkpoint", "--format", "mmseg", str(tmp_path / "none.pth"), "--name", "x",
                 "--db", f"sqlite:///{tmp_path / 'r.db'}", "--weights-dir", str(tmp_path / "w")])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: no file at") and err.count("\n") == 1


def test_our_input_normalisation_is_the_published_models():
    """mmsegmentation: configs/_base_/datasets/cityscapes.py @0683f04 (4-5): mean 123.675/116.28/103.53, std
    58.395/57.12/57.375 on RGB 0-255 (to_rgb). HRNet-Semantic-Segmentation: lib/datasets/base_dataset.py @06142dc:
    ImageNet mean/std (24-25) on the BGR-read image flipped to RGB, / 255 (input_transform 41-46). Ours: the same
    ImageNet mean/std after scaling RGB (engine.images decodes to RGB) to [0, 1]."""
    from engine.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor

    assert np.allclose(np.array(IMAGENET_MEAN) * 255, [123.675, 116.28, 103.53])
    assert np.allclose(np.array(IMAGENET_STD) * 255, [58.395, 57.12, 57.375])
    rgb = np.array([[[255, 128, 0]]], dtype=np.uint8)
    mmseg = (rgb[0, 0] - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    assert np.allclose(to_tensor(rgb)[:, 0, 0].numpy(), mmseg, atol=1e-6)


# ---- an imported model is a model like any other ----

def _cityscapes_copy(synth_root, dst):
    """The synthetic scenes in the official layout without the marker that names them synthetic: what
    a Cityscapes download looks like to the reader (dataset "cityscapes"), so the imported run's own
    evaluation (on the dataset it was trained on) is the one its leaderboard row shows."""
    import shutil

    for part in ("leftImg8bit", "gtFine"):
        shutil.copytree(synth_root / part, dst / part)
    return dst


def test_an_imported_run_appears_on_every_page(r50_source, dashboard_data, synth_root, tmp_path, monkeypatch,
                                               capsys):
    import sqlite3

    from streamlit.testing.v1 import AppTest

    from engine.robustness import sweep_checkpoint

    with sqlite3.connect(dashboard_data.db.removeprefix("sqlite:///")) as src, sqlite3.connect(tmp_path / "r.db") as dst:
        src.backup(dst)  # the dashboard's store of trained runs, plus the imported one
    db, weights = f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "weights"
    weights.mkdir()
    for folder in dashboard_data.weights.iterdir():
        (weights / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    store = Store(db)
    path = tmp_path / "deeplabv3_r50b-d8_512x1024_80k_cityscapes.pth"
    mmseg_file(path, mmseg_deeplab_layout(r50_source))
    name = "deeplabv3_r50b_mmseg"
    import_checkpoint(path, "mmseg", name, published_miou=0.7963, source_url="https://example.org/r50b", store=store,
                      weights_dir=weights)
    cityscapes = _cityscapes_copy(synth_root, tmp_path / "cityscapes")
    from engine.cli import main  # `python -m engine evaluate --variant NAME`, as for a trained model

    assert main(["evaluate", "--variant", name, "--db", db, "--weights-dir", str(weights), "--data-root",
                 str(cityscapes), "--device", "cpu", "--eval-size", "64x32", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    [evaluation] = store.evaluations(store.runs()[-1]["id"])
    assert evaluated["variant"] == name and evaluation["dataset"] == "cityscapes" and evaluation["eval_size"] == "64x32"
    sweep_checkpoint(variant=name, weights_dir=weights, device="cpu", eval_size=(64, 32), store=store,
                     data_root=cityscapes, corruptions=["gaussian_noise"], severities=(1,), limit=1, workers=0,
                     cache_dir=False, progress=False)
    store.close()
    for k, v in {"RESULTS_DB": db, "WEIGHTS_DIR": str(weights), "SEGBENCH_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)

    def page(view: str) -> AppTest:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"),
                               default_timeout=180)
        at.run()
        at.switch_page(f"views/{view}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    def chart_names(at) -> str:
        return " ".join(c.proto.spec for c in at.get("plotly_chart"))

    at = page("leaderboard")
    board = at.dataframe[0].value.set_index("variant")
    assert board.loc[name, "method"] == "imported" and board.loc[name, "miou"] == pytest.approx(evaluated["miou"])
    note = next(c.value for c in at.caption if name in c.value)
    assert "imported from a mmseg checkpoint" in note and "published mIoU 0.7963" in note
    assert f"measured here {evaluated['miou']:.4f} on 64x32 ({evaluated['miou'] - 0.7963:+.4f})" in note
    assert name in chart_names(page("tradeoffs"))
    assert name in chart_names(page("per_class"))
    robustness = page("robustness")
    assert any(name in str(o) for m in robustness.multiselect for o in m.options)
    drill = page("drilldown")
    assert any(name in str(o) for o in drill.selectbox(key="drill_a").options)
    for view in ("compare", "coverage"):  # pick it, as any model, for the pixels
        assert any(name in str(o) for s in page(view).selectbox for o in s.options), view

"""engine.models: shapes for any input size, aux/dropout heads, gradients, offline-safe pretrained loading."""
import functools
import socket
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.models import ARCHS, BACKBONES, build_model
from engine.models import pretrained
from engine.models.pretrained import PretrainedWeightsUnavailable

AUX_ARCHS = ["deeplabv3_r50", "deeplabv3_r101", "hrnetv2_w48"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True, scope="module")
def release_shared_models():
    """The four shared builds (about 1 GB) are freed when this module ends, not kept for the whole session."""
    yield
    shared_model.cache_clear()


def test_registry_and_unknown_arch():
    assert set(ARCHS) == set(BACKBONES) == {"deeplabv3_r50", "deeplabv3_r101", "hrnetv2_w48", "unet"}
    with pytest.raises(ValueError, match="deeplabv3_r50.*unet"):
        build_model("segformer_b5")
    with pytest.raises(ValueError, match="aux"):
        build_model("unet", aux_loss=True)


@functools.cache
def shared_model(arch):
    """One build per arch for the shape/dropout/head tests (the big builds take a second or two each)."""
    torch.manual_seed(0)
    return build_model(arch, dropout=0.5, aux_loss=arch in AUX_ARCHS)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_output_shapes_any_size(arch):
    aux = arch in AUX_ARCHS
    model = shared_model(arch).eval()
    with torch.no_grad():
        for n, h, w in [(1, 33, 47), (2, 40, 72)]:  # odd, and a multiple of 8 but not of 32
            out = model(torch.randn(n, 3, h, w))
            assert isinstance(out, dict) and set(out) == ({"out", "aux"} if aux else {"out"})
            for v in out.values():
                assert v.shape == (n, 19, h, w) and torch.isfinite(v).all()
    assert build_model(arch, num_classes=5).classifier[-1].out_channels == 5


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_the_model_pads_its_input_to_its_own_multiple(arch):
    """`pad_multiple` (what the ONNX export pads to) is the multiple the model itself pads to: its output
    for any size equals that of the input zero-padded to the multiple, cropped back."""
    model = shared_model(arch).eval()
    m = model.pad_multiple
    assert isinstance(m, int) and m >= 1
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        padded = model(F.pad(x, (0, -47 % m, 0, -33 % m)))["out"][..., :33, :47]
        assert torch.allclose(model(x)["out"], padded, atol=1e-5)


def _zeroed_channel_fraction(model, x):
    """Fraction of (sample, channel) maps that are entirely zero at the final classifier conv's input."""
    seen = {}
    hook = model.classifier[-1].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    out = model(x)["out"]
    hook.remove()
    return (seen["x"].flatten(2).abs().amax(-1) == 0).float().mean().item(), out


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_dropout_before_classifier(arch):
    model = shared_model(arch)
    final, drop = model.classifier[-1], model.classifier[-2]
    assert isinstance(final, nn.Conv2d) and final.kernel_size == (1, 1) and final.out_channels == 19
    assert isinstance(drop, nn.Dropout2d) and drop.p == 0.5
    x = torch.randn(2, 3, 33, 47)
    with torch.no_grad():
        model.train()
        frac, a = _zeroed_channel_fraction(model, x)
        b = model(x)["out"]
        assert 0.3 < frac < 0.7, frac  # Dropout2d zeroes whole channels, about p of them
        assert a.shape == (2, 19, 33, 47) and not torch.allclose(a, b)
        model.eval()
        assert torch.equal(model(x)["out"], model(x)["out"])


def test_no_dropout_by_default():
    model = build_model("unet").train()
    assert not any(isinstance(m, (nn.Dropout, nn.Dropout2d)) for m in model.modules())
    x = torch.randn(2, 3, 33, 47)
    with torch.no_grad():
        frac, a = _zeroed_channel_fraction(model, x)
        assert frac == 0 and torch.equal(a, model(x)["out"])


def test_hrnet_head_sees_720_channels_from_four_branches():
    model = shared_model("hrnetv2_w48").eval()
    info = model.backbone.feature_info
    assert info.channels() == [48, 96, 192, 384] and info.reduction() == [4, 8, 16, 32]
    seen = {}
    hooks = [model.classifier.register_forward_hook(lambda m, i, o: seen.update(main=i[0].shape)),
             model.aux_classifier.register_forward_hook(lambda m, i, o: seen.update(aux=i[0].shape))]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    for h in hooks:
        h.remove()
    assert seen["main"] == seen["aux"] == (1, 720, 16, 24)  # stride 4
    assert model.classifier[0].in_channels == 720 and model.classifier[0].out_channels == 720


@pytest.mark.parametrize("arch", ["unet", "deeplabv3_r50"])
def test_backward_reaches_every_parameter(arch):
    torch.manual_seed(0)
    aux = arch in AUX_ARCHS
    model = build_model(arch, num_classes=4, aux_loss=aux).train()
    out = model(torch.randn(2, 3, 32, 40))
    target = torch.randint(0, 4, (2, 32, 40))
    loss = sum(F.cross_entropy(v, target) for v in out.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, missing


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SEGBENCH_OFFLINE", "1")
    return tmp_path


def _no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")


@pytest.mark.parametrize("arch, cache_hint", [("deeplabv3_r50", "resnet50-0676ba61.pth"),
                                              ("hrnetv2_w48", "models--timm--hrnet_w48")])
def test_pretrained_offline_fails_fast(arch, cache_hint, empty_caches, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _no_network)
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained_backbone: false") as err:
        build_model(arch, pretrained_backbone=True)
    assert time.monotonic() - start < 5
    assert cache_hint in str(err.value) and str(empty_caches) in str(err.value)


@pytest.mark.parametrize("arch, host", [("deeplabv3_r50", "download.pytorch.org"), ("hrnetv2_w48", "huggingface.co")])
def test_pretrained_unreachable_host_fails(arch, host, empty_caches, monkeypatch):
    monkeypatch.delenv("SEGBENCH_OFFLINE")
    probed = []

    def refuse(address, timeout=None):
        probed.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(PretrainedWeightsUnavailable, match="unreachable"):
        build_model(arch, pretrained_backbone=True)
    assert probed == [((host, 443), pretrained.PROBE_TIMEOUT_S)]


def test_pretrained_deeplab_loads_torchvision_cache(empty_caches, monkeypatch):
    from torchvision.models import ResNet50_Weights, resnet50

    monkeypatch.setattr(socket, "create_connection", _no_network)
    sd = resnet50().state_dict()
    sd["conv1.weight"].fill_(0.125)
    path = empty_caches / "torch/hub/checkpoints" / ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    torch.save(sd, path)
    model = build_model("deeplabv3_r50", pretrained_backbone=True)
    assert torch.all(model.backbone.conv1.weight == 0.125)


def test_pretrained_hrnet_loads_hf_cache(empty_caches, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setattr(socket, "create_connection", _no_network)
    repo = empty_caches / "hf/hub/models--timm--hrnet_w48.ms_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    # a partial checkpoint suffices: timm loads feature backbones non-strictly
    save_file({"conv1.weight": torch.full((64, 3, 3, 3), 0.25)}, repo / "snapshots" / ("0" * 40) / "model.safetensors")
    model = build_model("hrnetv2_w48", pretrained_backbone=True)
    assert torch.all(model.backbone.conv1.weight == 0.25)


# --- faithful architectures ------------------------------------------------------------------------

def test_hrnet_fuse_upsampling_is_bilinear_as_the_segmentation_hrnet():
    """HRNet-Semantic-Segmentation's seg_hrnet.py (HighResolutionModule.forward) and mmsegmentation's
    HRModule upsample a lower branch with bilinear interpolation (align_corners=False in the Cityscapes
    configs); timm's classification HRNet uses nearest-neighbour nn.Upsample. Every fuse upsampling of
    our model must be bilinear, and equal F.interpolate to the higher branch's size, as seg_hrnet.py calls it."""
    model = shared_model("hrnetv2_w48")
    ups = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 1 + 4 * 3 + 3 * 6, [n for n, _ in ups]  # pairs j > i: stage2 1 module x 1, stage3 4 x 3, stage4 3 x 6
    assert all(m.mode == "bilinear" and m.align_corners is False for _, m in ups), ups
    fuse = model.backbone.stage4[0].fuse_layers[0][3]  # branch 4 (stride 32) into branch 1 (stride 4)
    x = torch.randn(1, 384, 3, 5)
    with torch.no_grad():
        low = fuse[:2](x)
        assert torch.equal(fuse(x), F.interpolate(low, size=(24, 40), mode="bilinear", align_corners=False))


def test_hrnet_has_the_published_parameter_count():
    """65.8M parameters for HRNetV2-W48 with a 19-class head (HRNet-Semantic-Segmentation's README,
    Cityscapes table); ours leaves out only the head conv's bias (720), redundant before its BatchNorm.
    (The shared build has an auxiliary head, which the published model has not: it is not counted.)"""
    model = shared_model("hrnetv2_w48")
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("aux_classifier."))
    assert abs(n - 65.8e6) < 0.1e6, n
    assert abs(n + 720 - 65.86e6) < 0.01e6, n


def test_deeplab_mmseg_head_has_mmsegmentations_layout():
    """mmsegmentation's ASPPHead for DeepLabV3 R-50/101-D8 (configs/_base_/models/deeplabv3_r50-d8.py:
    channels 512, dilations (1, 12, 24, 36), dropout 0.1; decode_heads/aspp_head.py: image pooling
    branch first, then the ASPP branches, concatenated into a 3x3 bottleneck) and its FCN auxiliary
    head (in 1024, channels 256, one 3x3 conv, dropout 0.1)."""
    from engine.models.deeplab import ASPPHead

    model = build_model("deeplabv3_r50", head="mmseg", dropout=0.1, aux_loss=True).eval()
    aspp, drop, seg = model.classifier
    assert isinstance(aspp, ASPPHead) and isinstance(drop, nn.Dropout2d) and drop.p == 0.1
    assert (seg.in_channels, seg.out_channels, seg.kernel_size) == (512, 19, (1, 1))
    assert isinstance(aspp.image_pool[0], nn.AdaptiveAvgPool2d) and aspp.image_pool[1][0].out_channels == 512
    assert [b[0].dilation[0] for b in aspp.aspp] == [1, 12, 24, 36]
    assert [b[0].kernel_size[0] for b in aspp.aspp] == [1, 3, 3, 3]
    assert (aspp.bottleneck[0].in_channels, aspp.bottleneck[0].kernel_size) == (5 * 512, (3, 3))
    aux = model.aux_classifier
    assert (aux[0].in_channels, aux[0].out_channels, aux[0].kernel_size, aux[-1].in_channels) == (1024, 256, (3, 3), 256)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 37, 50))
    assert out["out"].shape == out["aux"].shape == (1, 19, 37, 50)
    with pytest.raises(ValueError, match="mmseg"):
        build_model("hrnetv2_w48", head="mmseg")
    with pytest.raises(ValueError, match="torchvision, mmseg"):
        build_model("deeplabv3_r50", head="nope")

"""A pruned model's architecture as data: the channel counts of its layers, and a fresh model shrunk to them.

Structured pruning (`engine.compress`) removes whole channels, so a pruned model is its family's model
with fewer channels in some convolutions and normalisations. `layer_channels` writes those counts down
(plain ints: a checkpoint stays loadable with `torch.load(weights_only=True)`); `shrink_to` replays
them on a freshly built model with Torch-Pruning's own per-layer functions, after which the pruned
weights load as usual.
"""
from __future__ import annotations

from torch import nn

from engine.errors import UserError

class PrunedShapeError(UserError, ValueError):
    pass


def layer_channels(model: nn.Module) -> dict[str, list[int]]:
    """name -> [in channels, out channels] of every conv, transposed conv and BatchNorm of `model`."""
    return {name: c for name, m in model.named_modules() if (c := layer_channels_of(m)) is not None}


def shrink_to(model: nn.Module, layers: dict[str, list[int]]) -> nn.Module:
    """`model` (freshly built, unpruned) with each named layer cut to its recorded channels, in place.
    The channels kept are the first ones: the weights that follow overwrite them all."""
    import torch_pruning as tp

    for name, (cin, cout) in layers.items():
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise PrunedShapeError(f"the pruned architecture names a layer {name!r} this model does not have") from None
        have = layer_channels_of(m)
        if have is None or cin > have[0] or cout > have[1]:
            raise PrunedShapeError(f"layer {name!r}: cannot shrink {have} channels to [{cin}, {cout}]")
        if isinstance(m, nn.BatchNorm2d):
            if cout < have[1]:
                tp.prune_batchnorm_out_channels(m, list(range(cout, have[1])))
            continue
        if cout < have[1]:
            tp.prune_conv_out_channels(m, list(range(cout, have[1])))
        if cin < have[0]:
            tp.prune_conv_in_channels(m, list(range(cin, have[0])))
    return model


def layer_channels_of(m: nn.Module) -> list[int] | None:
    """[in, out] channels of a conv, transposed conv or BatchNorm; None for other modules."""
    if isinstance(m, nn.BatchNorm2d):
        return [m.num_features, m.num_features]
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        return [m.in_channels, m.out_channels]
    return None

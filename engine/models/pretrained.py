"""Offline-safe lookup of ImageNet backbone weights.

Order of checks for ``pretrained_backbone=True``:
1. the weights file is already in the local cache -> load it (no network at all);
2. an offline variable is set (`engine.settings.offline()`: SEGBENCH_OFFLINE, HF_HUB_OFFLINE,
   TORCH_HUB_OFFLINE) -> raise at once;
3. the weights host does not answer a 3 s TCP probe on port 443 -> raise at once;
4. otherwise download with torchvision's / timm's own mechanisms.

Caches: torchvision -> ``$TORCH_HOME/hub/checkpoints/<url basename>`` (``torch.hub.get_dir()``);
timm -> the Hugging Face hub cache (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from engine import settings
from engine.errors import UserError

PROBE_TIMEOUT_S = 3.0


class PretrainedWeightsUnavailable(UserError, RuntimeError):
    """ImageNet weights are neither cached locally nor downloadable right now."""


def _fail_or_probe(what: str, url: str, cache_path: Path | str) -> None:
    """Raise PretrainedWeightsUnavailable unless the weights host is reachable."""
    hint = (f"Put the file at {cache_path} (the local cache), or set `pretrained_backbone: false` "
            f"in the recipe to train from scratch.")
    flags = [v for v in settings.OFFLINE_VARS if os.environ.get(v)]
    if settings.offline():
        raise PretrainedWeightsUnavailable(
            f"{what} is not cached and downloads are disabled ({', '.join(flags)} set). {hint}")
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or 443
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise PretrainedWeightsUnavailable(
            f"{what} is not cached and {host}:{port} is unreachable ({e}). {hint}") from e


def torchvision_cache_path(weights) -> Path:
    """Where torchvision's ``load_state_dict_from_url`` looks for ``weights`` (a WeightsEnum member)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def ensure_torchvision_weights(weights) -> None:
    """Return if torchvision can load ``weights`` (cached, or host reachable); raise otherwise."""
    path = torchvision_cache_path(weights)
    if not path.is_file():
        _fail_or_probe(f"torchvision weights {weights}", weights.url, path)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home).expanduser() / "hub"


def timm_weights_file(model_name: str) -> str | None:
    """Path of the cached timm weights of ``model_name``, or None if timm may download them.

    Raises PretrainedWeightsUnavailable when they are not cached and cannot be downloaded.
    """
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise PretrainedWeightsUnavailable(f"timm has no pretrained weights for {model_name}")
    if not cfg.hf_hub_id:  # legacy url-only weights: timm caches them like torchvision
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if path.is_file():
            return str(path)
        _fail_or_probe(f"timm weights {model_name}", cfg.url, path)
        return None
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    cache = hf_cache_dir()
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=revision or None)
        if isinstance(found, str):
            return found
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    _fail_or_probe(f"timm weights {model_name} ({repo_id})", endpoint, f"{repo_dir}/snapshots/<rev>/{names[0]}")
    return None

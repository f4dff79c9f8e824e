"""A measurement setup: what a latency (and a FLOPs figure) holds for. Figures taken on different
setups are never ranked or plotted together.

A setup is the device (its kind and name), the thread count (CPU only), the input resolution and the
batch. The model's precision is its own (fp32 on a CPU, bf16 autocast on CUDA, int8 for an INT8
model) and shown beside each figure: an INT8 model is timed on the same setup as the float model it
was made from, so the two compare.
"""
from __future__ import annotations

from engine.errors import UserError

SEPARATOR = "|"


def setup_key(device_type: str, device: str, threads: int | None, resolution: str, batch: int) -> str:
    """The one spelling of a setup, as the store keeps it: 'cpu|<cpu name>|2|1024x512|1' (CUDA: threads '-')."""
    threads = "-" if device_type == "cuda" or threads is None else str(int(threads))
    return SEPARATOR.join([device_type, device.replace(SEPARATOR, "/"), threads, resolution, str(int(batch))])


def parse_setup(key: str) -> dict:
    """setup_key's parts: device_type, device, threads (None on CUDA), resolution, batch."""
    device_type, device, threads, resolution, batch = key.split(SEPARATOR)
    return {"device_type": device_type, "device": device, "threads": None if threads == "-" else int(threads),
            "resolution": resolution, "batch": int(batch)}


def device_label(key: str) -> str:
    """The device part of a setup for people: 'Intel Xeon ... (CPU, 2 threads)', 'NVIDIA H200 (CUDA)'."""
    p = parse_setup(key)
    if p["device_type"] == "cuda":
        where = "CUDA"
    else:
        where = "CPU" if p["threads"] is None else f"CPU, {p['threads']} thread{'' if p['threads'] == 1 else 's'}"
    return f"{p['device']} ({where})"


def setup_label(key: str) -> str:
    """A setup for people: 'Intel Xeon ... (CPU, 2 threads), 1024x512, batch 1'."""
    p = parse_setup(key)
    return f"{device_label(key)}, {p['resolution']}, batch {p['batch']}"


def match_setup(query: str, keys: list[str]) -> list[str]:
    """The setups `query` names: its key exactly, else every setup whose label (or key) holds every
    word of the query, case-insensitive ('1024x512', 'cuda 2048x1024', 'xeon 2 threads')."""
    if query in keys:
        return [query]
    words = query.lower().replace(",", " ").split()
    return [k for k in keys if all(w in f"{setup_label(k)} {k}".lower() for w in words)]


class SetupError(UserError, ValueError):
    """A setup named on the command line is not one the store has figures for (or names several)."""


def resolve_setup(query: str | None, keys: list[str], default: str | None = None) -> str | None:
    """The one setup `query` names among `keys` (None: `default`); SetupError listing them otherwise."""
    if query is None:
        return default
    found = match_setup(query, keys)
    if len(found) == 1:
        return found[0]
    known = "\n".join(f"  {setup_label(k)}" for k in keys) or "  (none: evaluate or `python -m engine profile` a model)"
    what = "no setup in the store matches" if not found else f"{len(found)} setups in the store match"
    raise SetupError(f"{what} {query!r}; the setups measured:\n{known}")

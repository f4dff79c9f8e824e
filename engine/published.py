"""Published Cityscapes val results (papers, model zoos, the project's original report), read from the
repository's table `engine/published_results.csv` and loaded into the results store
(`python -m engine published --load`), where they stay apart from the runs measured here.

The table: '#' lines are comments (where each kind of figure comes from); then a header and one row
per published model. `read_table` checks every row (a model, an mIoU in (0, 1], a URL or a source;
numbers that parse; unique keys) and names the line of the first bad one."""
from __future__ import annotations

import csv
import re
from pathlib import Path

from engine.errors import UserError

DEFAULT = Path(__file__).resolve().parent / "published_results.csv"
COLUMNS = ("key", "model", "arch", "backbone", "miou", "params", "gflops", "gflops_resolution", "fps", "fps_device",
           "fps_resolution", "crop", "schedule", "source", "url", "note")
_NUMBERS = {"miou": float, "params": int, "gflops": float, "fps": float}


class PublishedTableError(UserError, ValueError):
    """The published results table is malformed (the message names its file and line)."""


def slug(*parts: str) -> str:
    """'mmsegmentation model zoo', 'DeepLabV3 R-50-D8' -> 'mmsegmentation-model-zoo-deeplabv3-r50-d8'."""
    return re.sub(r"[^a-z0-9.]+", "-", " ".join(p for p in parts if p).lower()).strip("-")


def _row(values: dict[str, str], where: str) -> dict:
    row: dict = {k: (values.get(k) or "").strip() or None for k in COLUMNS}
    for name, kind in _NUMBERS.items():
        if row[name] is not None:
            try:
                row[name] = kind(float(row[name])) if kind is int else kind(row[name])
            except ValueError:
                raise PublishedTableError(f"{where}: {name} {row[name]!r} is not a number") from None
    if not row["model"]:
        raise PublishedTableError(f"{where}: no model")
    if row["miou"] is None or not 0 < row["miou"] <= 1:
        raise PublishedTableError(f"{where}: miou must be a fraction in (0, 1] (79.3% is 0.793), got {row['miou']}")
    if not row["url"] and not row["source"]:
        raise PublishedTableError(f"{where}: no url and no source: say where the figure comes from")
    for name in ("params", "gflops", "fps"):
        if row[name] is not None and row[name] <= 0:
            raise PublishedTableError(f"{where}: {name} must be positive, got {row[name]}")
    if row["gflops"] is not None and not row["gflops_resolution"]:
        raise PublishedTableError(f"{where}: gflops without gflops_resolution (GFLOPs depend on the input size)")
    row["key"] = row["key"] or slug(row["source"] or row["url"], row["model"], row["crop"], row["schedule"])
    return row | {"dataset": "cityscapes", "split": "val"}


def read_table(path: str | Path = DEFAULT) -> list[dict]:
    """The table's rows as dicts (COLUMNS, numbers parsed, empty fields None, plus dataset "cityscapes"
    and split "val"); a PublishedTableError naming the file and line of the first bad row."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise PublishedTableError(f"cannot read the published results table {path}: {e.strerror}") from None
    header, rows, lines_of = None, [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = next(csv.reader([line]))
        where = f"{path}:{number}"
        if header is None:
            missing = [c for c in ("model", "miou", "url", "source") if c not in fields]
            if missing:
                raise PublishedTableError(f"{where}: the header lacks {', '.join(missing)}")
            header = fields
            continue
        if len(fields) != len(header):
            raise PublishedTableError(f"{where}: {len(fields)} fields, the header has {len(header)}")
        row = _row(dict(zip(header, fields)), where)
        if row["key"] in lines_of:
            raise PublishedTableError(f"{where}: key {row['key']!r} already on line {lines_of[row['key']]}")
        lines_of[row["key"]] = number
        rows.append(row)
    if header is None:
        raise PublishedTableError(f"{path}: no header row")
    return rows


def load(store, path: str | Path = DEFAULT) -> int:
    """Read the table and upsert its rows into `store` (an `engine.store.Store`) by key; loading twice
    leaves the same rows. Returns how many rows were written."""
    return store.load_published(read_table(path))


def format_table(rows: list[dict]) -> str:
    """The published rows as text: model, mIoU, parameters, GFLOPs and FPS with their setup, source."""
    def cell(value, unit="", at=None):
        if value is None:
            return "-"
        return f"{value:g}{unit}" + (f" @ {at}" if at else "")

    table = [("model", "mIoU", "params", "GFLOPs", "FPS", "source")]
    for r in rows:
        params = None if r.get("params") is None else round(r["params"] / 1e6, 1)
        fps_at = ", ".join(p for p in (r.get("fps_device"), r.get("fps_resolution")) if p) or None
        table.append((r["model"], f"{r['miou']:.4f}", cell(params, "M"),
                      cell(r.get("gflops"), at=r.get("gflops_resolution")), cell(r.get("fps"), at=fps_at),
                      r.get("source") or r.get("url") or ""))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)

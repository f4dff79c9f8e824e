"""Atomic file writes: a crash or an error half-way never leaves a partial file under the real name.

The data goes to a temp file in the target's folder (same file system), is fsynced, then renamed
over the target with `os.replace` (atomic on POSIX and Windows). On any failure the temp file is
removed and an existing target is left as it was.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temp path next to `path` for a writer that needs a filename (torch.save,
    an exporter); when the block ends without error, the temp file becomes `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # 0o666 & ~umask, like open()
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut once the folder is synced (POSIX only)
        _fsync(path.parent)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write `data` (text is encoded with `encoding`) to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return Path(path)

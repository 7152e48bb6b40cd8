"""Atomic file writes: write to a temp file in the same folder, fsync, then rename.

A reader (or a rerun after a crash) therefore sees either the old file or the complete new
one, never a half-written file. A URI (``s3://…``, see :mod:`segops.outputs.storage`) is
uploaded whole from a complete local temp file instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from segops.errors import SegopsError
from segops.outputs.storage import is_uri, join, upload_atomically


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path | str:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path`` (parents created), or
    upload it whole when ``path`` is a URI (its address, without the query, is returned)."""
    if is_uri(path):
        return upload_atomically(str(path), write)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temps(root: str | Path) -> int:
    """Delete temp files that writers killed mid-write left under ``root``; returns how many.

    Call only when no writer is active (e.g. after a step's actors are done): a temp file is
    never an output, since outputs appear only by rename.
    """
    if is_uri(root):
        return 0  # an upload leaves no object behind until it completes
    root = Path(root)
    stale = [p for p in root.rglob(".*.tmp") if p.is_file()] if root.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path | str:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path | str:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def safe_join(root: str | Path, relative: str) -> Path | str:
    """``root / relative``, refusing anything that would land outside ``root``.

    Raises:
        SegopsError: ``relative`` is absolute or climbs out with ``..``.
    """
    rel = PurePosixPath(relative.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise SegopsError(f"refusing output path {relative!r}: it must be relative and stay inside {root}")
    return join(root, *rel.parts) if is_uri(root) else Path(root).joinpath(*rel.parts)

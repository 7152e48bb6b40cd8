"""Decode tasks close their Arrow block by bytes as well as by file count, so large photos do not
pile up in one task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segops.cluster.datasets as datasets
from segops.config.schema import ImageSource
from segops.data.decode import listing_entries


def _batch(source: ImageSource) -> dict[str, np.ndarray]:
    entries = listing_entries(source)
    files = np.empty(len(entries), dtype=object)
    files[:] = [e["files"] for e in entries]
    return {"dir": np.array([e["dir"] for e in entries], dtype=object), "files": files}


def test_blocks_close_at_the_byte_cap_and_every_image_is_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        Image.fromarray(np.full((100, 80, 3), 40 * i, np.uint8)).save(tmp_path / f"p{i}.png")
    source = ImageSource(kind="images", path=tmp_path)
    row = 3 * 100 * 80 * 4  # an unlabelled photo: its float32 RGB pixels
    monkeypatch.setattr(datasets, "BLOCK_BYTES", 2 * row)  # two photos a block
    tables = list(datasets._decode_entries(_batch(source), source, None))
    assert [t.num_rows for t in tables] == [2, 2, 1]
    assert sorted(r for t in tables for r in t.column("rel_path").to_pylist()) == [f"p{i}.png" for i in range(5)]
    monkeypatch.setattr(datasets, "BLOCK_BYTES", 2**40)  # small images: one block of the chunk, as before
    assert [t.num_rows for t in datasets._decode_entries(_batch(source), source, None)] == [5]

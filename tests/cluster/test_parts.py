"""Result parts read back: whole (without the heavy columns) or part by part, each case once."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segops.cluster.infer import HEAVY_COLUMNS, iter_parts, read_parts, write_part


def _write(parts: Path) -> None:
    first = pd.DataFrame({"case_id": ["c1", "c2"], "dice": [0.5, 0.7], "components": ["[1]", "[2]"]})
    again = pd.DataFrame({"case_id": ["c2", "c3"], "dice": [0.7, 0.9], "components": ["[2]", "[3]"]})  # c2 redone
    write_part(parts, first)
    write_part(parts, again)


def test_parts_are_read_without_the_heavy_columns_and_one_part_at_a_time(tmp_path: Path) -> None:
    parts = tmp_path / "segment-parts"
    assert list(iter_parts(parts, ["case_id", "components"], ["c1"])) == []  # nothing written yet
    assert read_parts(parts, columns=["case_id"]).columns.tolist() == ["case_id"]
    _write(parts)
    whole = read_parts(parts)
    slim = read_parts(parts, exclude=HEAVY_COLUMNS)
    assert "components" in whole.columns and "components" not in slim.columns
    assert slim.sort_values("case_id")["dice"].tolist() == [0.5, 0.7, 0.9]
    assert read_parts(parts, columns=["case_id"]).columns.tolist() == ["case_id"]

    frames = list(iter_parts(parts, ["case_id", "components"], ["c1", "c2", "c3"]))
    assert len(frames) == 2 and all(f.columns.tolist() == ["case_id", "components"] for f in frames)
    streamed = pd.concat(frames).sort_values("case_id")
    # each case once, from the part read_parts keeps it from
    assert streamed["case_id"].tolist() == ["c1", "c2", "c3"]
    assert streamed.merge(whole, on=["case_id", "components"]).shape[0] == 3
    # only the cases asked for (e.g. the segmented ones, not the failed)
    only = pd.concat(iter_parts(parts, ["case_id", "components"], ["c2"]))
    assert only["case_id"].tolist() == ["c2"] and only["components"].tolist() == ["[2]"]

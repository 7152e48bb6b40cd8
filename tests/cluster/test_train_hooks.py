"""Ray Train's checkpoint record, cut short by a kill, is put back from segops' copy (no Ray needed:
the files are what Ray Train writes and reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from segops.cluster.train_hooks import (
    SNAPSHOT_COPY_SUFFIX,
    SNAPSHOT_NAME,
    EpochFeed,
    keep_snapshot_copy,
    repair_snapshot,
)

FS = pafs.LocalFileSystem()
RECORD = {"ray_version": "x", "checkpoint_results": [{"checkpoint_dir_name": "checkpoint_0001"}]}


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    (tmp_path / "train").mkdir()
    return tmp_path / "train" / SNAPSHOT_NAME


def test_a_whole_record_is_copied_after_each_report_and_left_alone_on_resume(snapshot: Path, tmp_path: Path) -> None:
    snapshot.write_text(json.dumps(RECORD))
    feed = EpochFeed(str(tmp_path / "progress.jsonl"), FS, str(snapshot))
    feed.after_report(None, [{"epoch": 0, "train_loss": 0.5}], None)
    copy = Path(str(snapshot) + SNAPSHOT_COPY_SUFFIX)
    assert json.loads(copy.read_text()) == RECORD
    assert json.loads((tmp_path / "progress.jsonl").read_text()) == {"epoch": 0, "train_loss": 0.5}
    snapshot.write_text(json.dumps(RECORD | {"current_report_index": 1}))
    assert repair_snapshot(FS, str(snapshot))
    assert json.loads(snapshot.read_text())["current_report_index"] == 1  # not replaced by the older copy
    assert not list(snapshot.parent.glob("*.partial"))


@pytest.mark.parametrize("cut", [b"", b'{"ray_version": "x", "checkpoint_res'])
def test_a_record_cut_short_is_replaced_by_the_copy_from_the_last_completed_report(snapshot: Path, cut: bytes) -> None:
    snapshot.write_text(json.dumps(RECORD))
    keep_snapshot_copy(FS, str(snapshot))
    snapshot.write_bytes(cut)  # the kill came while Ray rewrote it for the next report
    keep_snapshot_copy(FS, str(snapshot))  # a cut record never replaces a whole copy
    assert repair_snapshot(FS, str(snapshot))
    assert json.loads(snapshot.read_text()) == RECORD


def test_a_record_cut_short_in_the_first_report_is_moved_aside_and_training_starts_over(snapshot: Path) -> None:
    snapshot.write_bytes(b'{"ray_ver')
    assert not repair_snapshot(FS, str(snapshot))
    assert not snapshot.exists()
    assert Path(str(snapshot) + ".broken").read_bytes() == b'{"ray_ver'


def test_no_record_means_a_fresh_run(snapshot: Path) -> None:
    assert not repair_snapshot(FS, str(snapshot))
    assert not list(snapshot.parent.iterdir())

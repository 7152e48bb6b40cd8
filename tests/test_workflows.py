"""The runner's hold on a run folder: one process runs a workflow run at a time (no Ray needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from segops.errors import RunInProgressError
from segops.workflows import LOCK_FILE, run_lock


def test_a_second_run_of_the_same_run_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "nightly-abc"
    with run_lock(run_dir, "nightly-abc"):
        assert "pid " in (run_dir / LOCK_FILE).read_text()
        with pytest.raises(RunInProgressError, match=r"run nightly-abc is already going in .* \(pid \d+ on .*--new"):
            with run_lock(run_dir, "nightly-abc"):
                pass  # pragma: no cover - the lock is held
    with run_lock(run_dir, "nightly-abc"):  # released when the first run ends
        pass


def test_a_killed_run_leaves_no_lock_behind(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from segops.workflows import run_lock\n"
            "with run_lock(Path(sys.argv[1]), 'r'):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInProgressError):
            with run_lock(tmp_path, "r"):
                pass  # pragma: no cover
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path, "r"):
        pass

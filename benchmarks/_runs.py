"""Running segops as a user types it, for the benchmarks that plan a folder and run the plan: the
CLI in a subprocess, and a planned workflow given a second segment step over fresh data."""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

SEGOPS = [sys.executable, "-m", "segops.cli"]


def arm_args(parser: argparse.ArgumentParser, budget_minutes: float) -> argparse.Namespace:
    """The options every plan-then-run-arms benchmark takes (after its own), parsed: the plan's
    budget, the data's seed, and the split seeds (a run per arm and split seed)."""
    parser.add_argument("--budget-minutes", type=float, default=budget_minutes)
    parser.add_argument("--seed", type=int, default=0, help="the data's")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1], help="a run per arm and split seed")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    return args


def segops(args: list[str], cwd: Path, log: Path) -> tuple[int, float]:
    """``segops ARGS`` in ``cwd``, its output in ``log``: (exit code, seconds)."""
    start = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run([*SEGOPS, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - start


def with_fresh_segment(planned: dict[str, Any], fresh: Path) -> dict[str, Any]:
    """A copy of a planned workflow whose segment step (without postprocessing: the model alone,
    since the postprocessing is chosen on the split too) is followed by a second one over ``fresh``,
    a folder laid out as the ingest step's source, never trained on nor in any split."""
    doc = copy.deepcopy(planned)
    ingest = next(s for s in doc["steps"] if s["step"] == "ingest")
    segment = next(s for s in doc["steps"] if s["step"] == "segment")
    segment["postprocess"] = False
    new = copy.deepcopy(segment) | {"overlays": 0, "source": copy.deepcopy(ingest["source"])}
    new["source"]["path"] = new["source"]["labels"]["path"] = str(fresh)
    doc["steps"].append(new)
    return doc


def run_in(folder: Path, doc: dict[str, Any]) -> tuple[dict[str, Any], list[pd.DataFrame]]:
    """Write ``doc`` to ``folder/workflow.yaml`` and run it there: ({run_rc, run_s} and, if it
    failed, run_error), and the reports of its segment steps in order (none if it failed)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workflow.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    rc, seconds = segops(["run", "workflow.yaml"], folder, folder / "run.log")
    row: dict[str, Any] = {"run_rc": rc, "run_s": round(seconds, 1)}
    runs = sorted((folder / "runs").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if rc != 0 or not runs:
        return row | {"run_error": (folder / "run.log").read_text()[-800:]}, []
    manifest = json.loads(runs[-1].read_text())
    return row, [pd.read_parquet(s["outputs"]["report"]) for s in manifest["steps"] if s["step"] == "segment"]


def plan(folder: Path, out: Path, budget_minutes: float) -> dict[str, Any]:
    """``segops plan FOLDER`` into ``out/plan/workflow.yaml`` (log ``out/plan.log``): the planned
    workflow; exits with the log's tail if the plan fails."""
    import yaml

    workflow = out / "plan" / "workflow.yaml"
    rc, _ = segops(
        ["plan", str(folder), "-o", str(workflow), "--budget-minutes", str(budget_minutes)], out, out / "plan.log"
    )
    if rc != 0:
        raise SystemExit((out / "plan.log").read_text()[-800:])
    return yaml.safe_load(workflow.read_text())

"""The run manifest: ``runs/<run-id>/manifest.json``, rewritten atomically after every change.

It records what the run is (workflow name, spec hash, MLflow run id) and, per step, its
state and outputs, so a person or a later resume can tell what is done.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from segops.outputs.atomic import atomic_write_text

MANIFEST_FILE = "manifest.json"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class StepState:
    index: int
    step: str
    state: str = "pending"  # pending → running → done | failed
    started: str | None = None
    finished: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunManifest:
    run_id: str
    workflow: str
    spec_hash: str
    run_dir: str
    mlflow_run_id: str | None = None
    state: str = "running"
    started: str = field(default_factory=utc_now)
    finished: str | None = None
    steps: list[StepState] = field(default_factory=list)

    def save(self) -> Path:
        return atomic_write_text(Path(self.run_dir) / MANIFEST_FILE, json.dumps(asdict(self), indent=2) + "\n")

    def step_started(self, index: int) -> None:
        self.steps[index].state, self.steps[index].started = "running", utc_now()
        self.save()

    def step_done(self, index: int, outputs: dict[str, Any]) -> None:
        step = self.steps[index]
        step.state, step.finished, step.outputs = "done", utc_now(), outputs
        self.save()

    def step_failed(self, index: int, error: BaseException) -> None:
        step = self.steps[index]
        step.state, step.finished, step.error = "failed", utc_now(), f"{type(error).__name__}: {error}"
        self.state, self.finished = "failed", utc_now()
        self.save()

    def run_resumed(self) -> None:
        self.state, self.finished = "running", None
        for step in self.steps:
            if step.state != "done":
                step.state, step.error = "pending", None
        self.save()

    def run_done(self) -> None:
        self.state, self.finished = "done", utc_now()
        self.save()


def read_manifest(run_dir: str | Path) -> RunManifest | None:
    """The manifest of an earlier attempt at this run, or None if there is none."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    steps = [StepState(**s) for s in data.pop("steps")]
    return RunManifest(**data, steps=steps)


def load_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The manifest of a run folder as a dict."""
    return json.loads((Path(run_dir) / MANIFEST_FILE).read_text())

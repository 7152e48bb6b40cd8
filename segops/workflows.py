"""Step registry and the runner: steps in order, one MLflow run, a manifest on disk."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from segops.config.load import spec_hash
from segops.config.schema import WorkflowSpec
from segops.outputs.atomic import atomic_write_text
from segops.outputs.manifest import RunManifest, StepState

log = logging.getLogger(__name__)


def _step_registry() -> dict[str, Callable[[Any, Any], dict[str, Any]]]:
    # imported here: step modules pull in Ray, torch and MLflow (seconds), the CLI must not
    from segops.steps import ingest, segment, train

    return {"ingest": ingest.run, "train": train.run, "segment": segment.run}


@dataclass(frozen=True)
class RunResult:
    """Where a finished run put things."""

    run_id: str
    run_dir: Path
    mlflow_run_id: str
    tracking_uri: str
    outputs: list[dict[str, Any]]
    state: dict[str, Any]


def run_workflow(spec: WorkflowSpec, workflow_text: str | None = None) -> RunResult:
    """Execute every step of ``spec`` in order.

    Creates ``<output_dir>/<run-id>/`` with ``manifest.json`` and the step outputs, and one
    MLflow run holding params, metrics, artifacts and the registered model.
    """
    from segops.cluster.runtime import ensure_ray
    from segops.steps.context import RunContext
    from segops.tracking import RunTracker

    digest = spec_hash(spec)
    run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{digest[:8]}"
    run_dir = (Path(spec.output_dir) / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    spec_file = atomic_write_text(run_dir / "workflow.yaml", workflow_text or spec.model_dump_json(indent=2))

    resources = ensure_ray(spec.cluster)
    tracker = RunTracker(spec.tracking)
    mlflow_run_id = tracker.start(
        run_name=f"{spec.name}-{run_id}",
        tags={"segops.workflow": spec.name, "segops.spec_hash": digest, "segops.run_id": run_id},
    )
    tracker.log_params({"workflow.name": spec.name, "workflow.spec_hash": digest, "workflow.seed": spec.seed})
    tracker.log_artifact(spec_file, "workflow")
    manifest = RunManifest(run_id, spec.name, digest, str(run_dir), mlflow_run_id)
    manifest.steps = [StepState(i, s.step) for i, s in enumerate(spec.steps)]
    manifest.save()

    ctx = RunContext(spec, digest, run_id, run_dir, tracker, resources)
    registry = _step_registry()
    outputs = []
    for index, step in enumerate(spec.steps):
        log.info("step %d/%d: %s", index + 1, len(spec.steps), step.step)
        manifest.step_started(index)
        try:
            result = registry[step.step](step, ctx)
        except BaseException as exc:
            manifest.step_failed(index, exc)
            tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        manifest.step_done(index, result)
        outputs.append(result)
    manifest.run_done()
    tracker.log_artifact(run_dir / "manifest.json", "workflow")
    tracker.end("FINISHED")
    return RunResult(run_id, run_dir, mlflow_run_id, spec.tracking.uri, outputs, ctx.state)

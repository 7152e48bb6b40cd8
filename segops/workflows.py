"""Step registry and the runner: steps in order, one MLflow run, a manifest on disk, resume.

A run's identity is its workflow name plus the hash of its validated spec: running the same
workflow again continues the same run folder and the same MLflow run, skipping the steps the
manifest records as done (and, inside a segment step, the cases already written). A changed
spec or model is another hash, hence a new run. ``new_run=True`` forces a fresh run.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from segops.config.load import apply_tracking_env, spec_hash
from segops.config.schema import WorkflowSpec
from segops.errors import RunInProgressError
from segops.outputs.atomic import atomic_write_text
from segops.outputs.manifest import RunManifest, StepState, read_manifest
from segops.steps.results import R, StepResult, latest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepImpl:
    run: Callable[[Any, Any], StepResult]
    reload: Callable[[Any, dict[str, Any], Any], StepResult]  # a finished step's result from its manifest outputs


def _step_registry() -> dict[str, StepImpl]:
    # imported here: step modules pull in Ray, torch and MLflow (seconds), the CLI must not
    from segops.steps import evaluate, ingest, promote, segment, train

    modules = {"ingest": ingest, "train": train, "segment": segment, "evaluate": evaluate, "promote": promote}
    return {name: StepImpl(m.run, m.reload) for name, m in modules.items()}


@dataclass(frozen=True)
class RunResult:
    """Where a run put things: each step's typed result (``results``) and its manifest outputs."""

    run_id: str
    run_dir: Path
    mlflow_run_id: str
    tracking_uri: str
    outputs: list[dict[str, Any]]
    results: tuple[StepResult, ...]
    resumed: bool = False

    def latest(self, kind: type[R]) -> R | None:
        """The result of the run's last step of this kind, or None."""
        return latest(self.results, kind)


def run_id_for(spec: WorkflowSpec, new_run: bool = False) -> str:
    """``<name>-<12 hex of the spec hash>``, plus a UTC timestamp when a fresh run is forced."""
    base = f"{spec.name}-{spec_hash(spec)[:12]}"
    return f"{base}-{datetime.now(UTC):%Y%m%d-%H%M%S}" if new_run else base


#: The file in a run folder that the process running it holds locked (and names itself in).
LOCK_FILE = ".segops-run.lock"


@contextmanager
def run_lock(run_dir: Path, run_id: str) -> Iterator[None]:
    """Hold ``run_dir`` for this process while it runs. A second ``segops run`` of the same
    workflow (a nightly job started again before the last one ended) would otherwise resume the
    same run beside it: train twice into one checkpoint folder, register two versions, write
    the same outputs. The lock is the kernel's (``flock``): a killed run leaves none behind.

    Raises:
        RunInProgressError: another process holds the run; the message names it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunInProgressError(
                f"run {run_id} is already going in {run_dir} ({holder}): a second run of the same workflow "
                "would train and write the same outputs beside it; wait for it to end (running it again "
                "afterwards resumes where it stopped), stop it first, or start a separate run with --new"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
        handle.flush()
        yield


def run_workflow(spec: WorkflowSpec, workflow_text: str | None = None, new_run: bool = False) -> RunResult:
    """Execute (or resume) every step of ``spec`` in order.

    Creates ``<output_dir>/<run-id>/`` with ``manifest.json`` and the step outputs, and one
    MLflow run holding params, metrics, artifacts and the registered model. ``MLFLOW_TRACKING_URI``
    in the environment wins over ``tracking.uri`` (see :func:`apply_tracking_env`). The run folder
    is held by this process while it runs (:func:`run_lock`).
    """
    spec = apply_tracking_env(spec)  # before hashing: the tracking server is part of the run's identity
    run_id = run_id_for(spec, new_run)
    run_dir = (Path(spec.output_dir) / run_id).resolve()
    with run_lock(run_dir, run_id):
        return _run_held(spec, workflow_text, run_id, run_dir)


def _run_held(spec: WorkflowSpec, workflow_text: str | None, run_id: str, run_dir: Path) -> RunResult:
    """:func:`run_workflow` once this process holds the run folder."""
    from segops.cluster.runtime import ensure_ray
    from segops.steps.context import RunContext
    from segops.tracking import RunTracker, lineage_tags

    digest = spec_hash(spec)
    manifest = read_manifest(run_dir)
    finished = manifest is not None and manifest.state == "done"
    resources = {} if finished else ensure_ray(spec.cluster)  # a finished run needs no cluster
    tracker = RunTracker(spec.tracking)
    if manifest is None:  # run_dir exists: run_lock made it
        spec_file = atomic_write_text(run_dir / "workflow.yaml", workflow_text or spec.model_dump_json(indent=2))
        mlflow_run_id = tracker.start(
            run_name=run_id,
            tags={"segops.workflow": spec.name, "segops.spec_hash": digest, "segops.run_id": run_id} | lineage_tags(),
        )
        tracker.log_params({"workflow.name": spec.name, "workflow.spec_hash": digest, "workflow.seed": spec.seed})
        tracker.log_artifact(spec_file, "workflow")
        manifest = RunManifest(run_id, spec.name, digest, str(run_dir), mlflow_run_id)
        manifest.steps = [StepState(i, s.step) for i, s in enumerate(spec.steps)]
        manifest.save()
        resumed = False
    else:
        resumed = True
        log.info("%s run %s (%s)", "found finished" if finished else "resuming", run_id, run_dir)
        if not finished:
            tracker.start(run_name=run_id, tags={}, run_id=manifest.mlflow_run_id)
            manifest.run_resumed()
        else:
            tracker.run_id = manifest.mlflow_run_id

    ctx = RunContext(spec, digest, run_id, run_dir, tracker, resources)
    registry = _step_registry()
    outputs = []
    for index, step in enumerate(spec.steps):
        impl, state = registry[step.step], manifest.steps[index]
        if state.state == "done":
            log.info("step %d/%d: %s already done", index + 1, len(spec.steps), step.step)
            ctx.results.append(impl.reload(step, state.outputs, ctx))
            outputs.append(state.outputs)
            continue
        log.info("step %d/%d: %s", index + 1, len(spec.steps), step.step)
        manifest.step_started(index)
        try:
            result = impl.run(step, ctx)
        except BaseException as exc:
            manifest.step_failed(index, exc)
            tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        ctx.results.append(result)
        manifest.step_done(index, result.to_manifest())
        outputs.append(result.to_manifest())
    if manifest.state != "done":
        manifest.run_done()
        tracker.log_artifact(run_dir / "manifest.json", "workflow")
        tracker.end("FINISHED")
    return RunResult(
        run_id, run_dir, manifest.mlflow_run_id or "", spec.tracking.uri, outputs, tuple(ctx.results), resumed
    )

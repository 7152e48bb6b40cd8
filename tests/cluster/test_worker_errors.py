"""A training worker's own error (a data problem, a diverged epoch) reaches the user as itself,
not inside Ray Train's WorkerGroupError."""

from __future__ import annotations

from ray.train import WorkerGroupError

from segops.cluster.train import worker_error
from segops.errors import LabelError, StepError


def test_a_workers_own_error_is_taken_out_of_rays_wrapper() -> None:
    mine = StepError("every training step of this epoch had a non-finite loss")
    wrapped = WorkerGroupError("Training failed due to worker errors", {1: mine, 0: RuntimeError("NCCL")})
    assert worker_error(wrapped) is mine
    assert worker_error(WorkerGroupError("x", {0: RuntimeError("oom")})) is None
    assert worker_error(RuntimeError("not Ray's")) is None
    assert isinstance(worker_error(WorkerGroupError("x", {0: LabelError("bad mask")})), LabelError)

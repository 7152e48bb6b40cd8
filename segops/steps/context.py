"""What steps share during one workflow run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segops.config.schema import WorkflowSpec
from segops.errors import StepError
from segops.outputs.storage import join
from segops.steps.results import R, StepResult, latest
from segops.tracking import RunTracker


@dataclass
class RunContext:
    """The run being executed and the typed results of the steps done so far (in step order,
    whether run now or reloaded from the manifest of a resumed run)."""

    spec: WorkflowSpec
    spec_hash: str
    run_id: str
    run_dir: Path
    tracker: RunTracker
    resources: dict[str, float]
    results: list[StepResult] = field(default_factory=list)

    def latest(self, kind: type[R]) -> R | None:
        """The result of the last step of this kind done so far, or None."""
        return latest(self.results, kind)

    def require(self, kind: type[R], problem: str) -> R:
        """:meth:`latest`, or a :class:`~segops.errors.StepError` saying ``problem`` when no such step ran."""
        found = latest(self.results, kind)
        if found is None:
            raise StepError(problem)
        return found

    def count(self, kind: type[StepResult]) -> int:
        """How many steps of this kind are done so far."""
        return sum(isinstance(r, kind) for r in self.results)

    def node_dir(self, *parts: str) -> str | Path:
        """Where inference actors write (case outputs and result parts): ``<cluster.storage>/
        <run-id>/…`` when storage is set (a shared path or a URI every node reaches), else
        ``<run folder>/…``. Tables, reports and the manifest stay in the run folder."""
        storage = self.spec.cluster.storage
        return self.run_dir.joinpath(*parts) if storage is None else join(storage, self.run_id, *parts)

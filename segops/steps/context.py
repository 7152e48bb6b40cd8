"""What steps share during one workflow run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segops.config.schema import WorkflowSpec
from segops.outputs.storage import join
from segops.tracking import RunTracker


@dataclass
class RunContext:
    """The run being executed and what earlier steps produced.

    ``state`` keys set by steps: ``source`` and ``dataset`` (ingest), ``checkpoint``,
    ``model_uri`` and ``val_groups`` (train), ``report`` and ``metrics`` (segment).
    """

    spec: WorkflowSpec
    spec_hash: str
    run_id: str
    run_dir: Path
    tracker: RunTracker
    resources: dict[str, float]
    state: dict[str, Any] = field(default_factory=dict)

    def node_dir(self, *parts: str) -> str | Path:
        """Where inference actors write (case outputs and result parts): ``<cluster.storage>/
        <run-id>/…`` when storage is set (a shared path or a URI every node reaches), else
        ``<run folder>/…``. Tables, reports and the manifest stay in the run folder."""
        storage = self.spec.cluster.storage
        return self.run_dir.joinpath(*parts) if storage is None else join(storage, self.run_id, *parts)

"""What steps share during one workflow run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segops.config.schema import WorkflowSpec
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

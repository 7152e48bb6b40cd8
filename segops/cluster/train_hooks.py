"""What Ray Train's controller unpickles (the progress callback), in a module of its own.

Ray Train's controller unpickles its callbacks, so it imports the module that defines them.
Defined in :mod:`segops.cluster.train` (torch, MONAI, the models), the callback cost
the controller a ~10 s import on 2 cores before any worker could start; here it costs Ray's own
imports only.
"""

from __future__ import annotations

import json
from typing import Any

import ray.train


class EpochFeed(ray.train.UserCallback):
    """Runs in Ray Train's controller: appends each epoch's metrics (rank 0's, already reduced
    over all ranks) to a JSON-lines file, which the driver tails for its progress bar."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics[0]) + "\n")

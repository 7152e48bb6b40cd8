"""What Ray Train's controller and dataset manager unpickle, in a module of its own.

Ray Train's controller unpickles its callbacks and its ``DataConfig``, so it imports the module
that defines them. Defined in :mod:`segops.cluster.train` (torch, MONAI, the models), they cost
the controller a ~10 s import on 2 cores before any worker could start; here they cost Ray's own
imports only.
"""

from __future__ import annotations

import json
from typing import Any

import ray.train
from ray.data import Dataset
from ray.data.dataset import MaterializedDataset


class EpochFeed(ray.train.UserCallback):
    """Runs in Ray Train's controller: appends each epoch's metrics (rank 0's, already reduced
    over all ranks) to a JSON-lines file, which the driver tails for its progress bar."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics[0]) + "\n")


class StaticSplit(ray.train.DataConfig):
    """Shards a materialised dataset once with ``Dataset.split(world_size, equal=True)``.

    Ray Train's default, ``streaming_split``, starts a split-coordinator actor (a new process:
    4-6 s on 2 cores, every training) to hand blocks out while they are produced. A dataset that
    is already materialised in the object store needs no coordinator: each worker iterates its
    fixed share. Equal shares, as with ``streaming_split(equal=True)``: up to ``world_size - 1``
    rows are left out, so every rank steps the same number of batches (DDP's all-reduce needs it).
    Datasets that are not materialised, or not named in ``datasets_to_split``, are handed over as
    Ray Train's own ``DataConfig`` would.
    """

    def configure(
        self,
        datasets: dict[str, Dataset],
        world_size: int,
        worker_handles: Any,
        worker_node_ids: Any,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        split = set(datasets) if self._datasets_to_split == "all" else set(self._datasets_to_split)
        static = {n: ds for n, ds in datasets.items() if n in split and isinstance(ds, MaterializedDataset)}
        rest = {n: ds for n, ds in datasets.items() if n not in static}
        output = (
            super().configure(rest, world_size, worker_handles, worker_node_ids, **kwargs)
            if rest
            else [{} for _ in range(world_size)]
        )
        for name, ds in static.items():
            for rank, shard in enumerate(ds.split(world_size, equal=True)):
                output[rank][name] = shard.iterator()
        return output

"""Batch inference on a Ray Data actor pool: the model is loaded once per actor.

Each actor segments a batch, writes one mask PNG per input (atomically) and returns
per-case rows without pixels; the driver gathers those rows into the report.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
from tqdm.auto import tqdm

from segops.config.schema import ActorPoolSpec
from segops.data.records import STATUS_OK
from segops.engine.checkpoint import load_checkpoint
from segops.engine.predict import predict_masks
from segops.metrics import case_scores
from segops.outputs.masks import mask_relpath, write_mask_png

log = logging.getLogger(__name__)

_PASSTHROUGH = (
    "case_id", "group_id", "source_uri", "rel_path", "frame", "modality", "has_label", "label_uri",
    "status", "stage", "error_type", "error", "transfer_syntax",
)  # fmt: skip


@dataclass(frozen=True)
class PoolSize:
    """Resolved actor-pool shape."""

    min_actors: int
    max_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    torch_threads: int


def size_actor_pool(spec: ActorPoolSpec, resources: dict[str, float]) -> PoolSize:
    """Size the pool from the cluster, leaving CPU for the read and decode tasks.

    Two 1-CPU actors on a 2-CPU node hold every CPU and the read stage is never scheduled
    (a deadlock; see field notes). So by default actors get fractional CPUs on small nodes
    and the pool keeps ``max(0.5, 10 %)`` of the CPUs free for reading.
    """
    cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    reserve = max(0.5, 0.1 * cpus)
    if gpus >= 1:
        per_cpu = spec.cpus_per_actor or 1.0
        n = int(gpus)
        return PoolSize(spec.min_actors or 1, spec.max_actors or n, per_cpu, 1.0, max(1, int(per_cpu)))
    per_cpu = spec.cpus_per_actor or (1.0 if cpus - reserve >= 4 else 0.5)
    fit = max(1, math.floor((cpus - reserve) / per_cpu))
    max_actors = spec.max_actors or min(fit, max(1, int(cpus)))
    min_actors = min(spec.min_actors or 1, max_actors)
    return PoolSize(min_actors, max_actors, per_cpu, 0.0, max(1, int(per_cpu)))


class _Segmenter:
    """Actor: holds one model; called once per batch of records."""

    def __init__(self, checkpoint_dir: str, mask_root: str, torch_threads: int, amp: bool):
        torch.set_num_threads(torch_threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.loaded = load_checkpoint(checkpoint_dir, self.device)
        self.mask_root = mask_root
        self.amp = amp

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = [i for i, status in enumerate(batch["status"]) if status == STATUS_OK]
        masks = dict(zip(ok, predict_masks(self.loaded, [batch["image"][i] for i in ok], self.device, amp=self.amp)))
        classes = self.loaded.model_spec.classes
        out: dict[str, list[Any]] = {k: list(batch[k]) for k in _PASSTHROUGH}
        out |= {"mask_path": [], "fg_fraction": [], "label_fg_fraction": [], "dice": [], "iou": []}
        for i in range(len(batch["status"])):
            if i not in masks:  # a quarantined/skipped row from a source read in this pipeline
                for key in ("mask_path", "fg_fraction", "label_fg_fraction", "dice", "iou"):
                    out[key].append("" if key == "mask_path" else np.nan)
                continue
            mask = masks[i]
            rel = mask_relpath(str(batch["rel_path"][i]), int(batch["frame"][i]))
            out["mask_path"].append(str(write_mask_png(self.mask_root, rel, mask, classes)))
            out["fg_fraction"].append(float((mask > 0).mean()))
            if bool(batch["has_label"][i]):
                label = batch["label"][i]
                scores = case_scores(mask, label, classes)
                out["label_fg_fraction"].append(float((label > 0).mean()))
                out["dice"].append(scores["dice"])
                out["iou"].append(scores["iou"])
            else:
                out["label_fg_fraction"].append(np.nan)
                out["dice"].append(np.nan)
                out["iou"].append(np.nan)
        return {k: np.asarray(v) for k, v in out.items()}


def segment_dataset(
    ds: ray.data.Dataset,
    checkpoint_dir: Path,
    mask_root: Path,
    pool: PoolSize,
    batch_size: int,
    total: int | None = None,
) -> pd.DataFrame:
    """Segment every row of ``ds`` and return one result row per input (no pixels)."""
    amp = pool.gpus_per_actor > 0
    results = ds.map_batches(
        _Segmenter,
        fn_constructor_args=(str(checkpoint_dir), str(mask_root), pool.torch_threads, amp),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.gpus_per_actor or None,
    )
    frames = []
    with tqdm(total=total, desc="segment", unit="img", dynamic_ncols=True) as bar:
        for batch in results.iter_batches(batch_format="pandas", batch_size=None):
            frames.append(batch)
            bar.update(len(batch))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*_PASSTHROUGH, "mask_path"])

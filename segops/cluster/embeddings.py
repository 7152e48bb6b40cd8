"""Encoder embeddings over datasets: the training cases' reference written beside a trained model,
and the embeddings of a sample read through Ray Data (``segops drift``).

Both run on the driver over a bounded number of cases (:data:`~segops.engine.embeddings.MAX_REFERENCE_CASES`):
a few seconds on a CPU for a 2D U-Net.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import ray

from segops.cluster.datasets import take_records
from segops.cluster.folds import driver_device
from segops.data.records import STATUS_OK, group_cases, seeded_sample
from segops.engine.checkpoint import LoadedModel, load_checkpoint
from segops.engine.embeddings import (
    EMBEDDINGS_FILE,
    MAX_REFERENCE_CASES,
    MAX_REFERENCE_VOLUMES,
    EmbeddingReference,
    embed,
)

log = logging.getLogger(__name__)


def write_model_embeddings(
    dataset: str | Path, checkpoint: str | Path, groups: list[str], seed: int = 0, n: int = MAX_REFERENCE_CASES
) -> Path | None:
    """Embed a seeded sample of at most ``n`` ``ok`` cases of ``groups`` (the training groups) with the
    model in ``checkpoint`` and write their :class:`EmbeddingReference` there (``embeddings.npz``).

    A 3D model embeds at most :data:`MAX_REFERENCE_VOLUMES` volumes, a few at a time. Returns the
    file, or None with fewer than 4 cases (no distribution to speak of).
    """
    started = time.monotonic()
    ids = group_cases(dataset, groups)
    loaded = load_checkpoint(checkpoint, driver_device())
    volumes = loaded.model_spec.spatial_dims == 3
    n = min(n, MAX_REFERENCE_VOLUMES) if volumes else n
    if len(ids) < 4:
        log.warning("only %d training case(s): no embedding reference is stored with the model", len(ids))
        return None
    picked = seeded_sample(ids, n, seed)
    chunk = 4 if volumes else len(picked)  # volumes are large: a few in memory at a time
    parts = []
    for start in range(0, len(picked), chunk):
        records = take_records(dataset, picked[start : start + chunk])
        parts.append(embed(loaded, [np.asarray(r["image"]) for r in records], driver_device()))
    reference = EmbeddingReference.from_embeddings(np.concatenate(parts), seed)
    path = reference.save(Path(checkpoint) / EMBEDDINGS_FILE)
    log.info(
        "embedding reference of %d training cases (%d dimensions) in %.1f s",
        len(picked),
        reference.mean.shape[0],
        time.monotonic() - started,
    )
    return path


def dataset_embeddings(ds: ray.data.Dataset, loaded: LoadedModel, batch_size: int = 8) -> np.ndarray:
    """(N, D) embeddings of the ``ok`` rows of ``ds`` (a small, bounded dataset), computed on the driver."""
    parts = []
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        status = batch.get("status")
        images = [
            np.asarray(image) for i, image in enumerate(batch["image"]) if status is None or status[i] == STATUS_OK
        ]
        if images:
            parts.append(embed(loaded, images, next(loaded.model.parameters()).device, batch_size=batch_size))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

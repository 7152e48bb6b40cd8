"""The ``memory`` each inference actor asks Ray for, from a probe of the model at the run's image size.

The run's image size is the largest image of the dataset the step segments (read from its
Parquet metadata, no pixels), or, for a folder source whose images are not decoded yet, the
largest image size in the training fingerprint stored with the model. Without either, actors ask
for no memory (Ray's default) and the log says so.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as pads

from segops.cluster.fingerprint import FINGERPRINT_FILE
from segops.cluster.infer import PoolSize
from segops.config.schema import PreprocessSpec
from segops.data.records import SPACING_COLUMNS, STATUS_OK, known_spacing
from segops.data.transforms import image_scale, scaled_shape
from segops.engine.cases import InferenceSettings
from segops.engine.checkpoint import LoadedModel
from segops.engine.memory import probe_inference
from segops.errors import StepError

log = logging.getLogger(__name__)


def sized_for_run(
    pool: PoolSize,
    loaded: LoadedModel,
    settings: InferenceSettings,
    batch_size: int,
    dataset: Path | None,
    checkpoint: Path,
    available: float | None = None,
) -> PoolSize:
    """``pool`` with the memory its actors ask Ray for (:func:`actor_memory`) and the decoded row size
    its pipeline keeps room for (:func:`decoded_row_bytes`), both from the run's largest image
    (:func:`run_shape`; ``dataset``, ``checkpoint`` as there, ``available`` as in :func:`actor_memory`)."""
    shape = run_shape(dataset, checkpoint)
    network = run_shape(dataset, checkpoint, loaded.preprocess) if loaded.preprocess.spacing else shape
    return replace(
        pool,
        memory_per_actor=actor_memory(loaded, settings, batch_size, network, available),
        row_bytes=decoded_row_bytes(shape, loaded.model_spec.in_channels),
    )


def run_shape(
    dataset: Path | None, checkpoint: Path, resampled: PreprocessSpec | None = None
) -> tuple[int, ...] | None:
    """The run's largest image: (H, W), or (Z, H, W) of volume records; None when not known.

    Args:
        dataset: the Parquet dataset the step segments (slice or volume records); None for a
            folder source.
        checkpoint: the model's folder (its ``fingerprint.json`` sizes a folder source).
        resampled: a model's preprocessing with ``spacing``: the largest image as that model's
            network takes it, each image resized by its own spacing over the target (a folder
            source: the largest stored image by the coarsest training spacing's factor).
    """
    return _dataset_shape(dataset, resampled) if dataset is not None else _fingerprint_shape(checkpoint, resampled)


def decoded_row_bytes(shape: tuple[int, ...] | None, in_channels: int) -> int:
    """Bytes of one decoded record of ``shape`` in the object store: its float32 image and a label of
    at most 4 bytes a pixel; 0 when the shape is not known. A 2D image counts 3 channels at least
    (photos keep their colour channels until the model's input is prepared)."""
    if shape is None:
        return 0
    channels = max(in_channels, 3) if len(shape) == 2 else in_channels
    return 4 * (channels + 1) * math.prod(shape)


def actor_memory(
    loaded: LoadedModel,
    settings: InferenceSettings,
    batch_size: int,
    shape: tuple[int, ...] | None,
    available: float | None = None,
) -> int | None:
    """Bytes an inference actor asks Ray for, or None when no image size is known.

    Args:
        shape: the run's largest image (:func:`run_shape`).
        available: the cluster's ``memory`` resource in bytes (``ray.cluster_resources()``), if known.

    Raises:
        StepError: one actor would need more memory than the cluster has, so none could start.
    """
    if shape is None:
        log.info("no image size known before decoding: inference actors ask Ray for no memory")
        return None
    channels = loaded.model_spec.in_channels
    probe = probe_inference(loaded, settings, (channels, *shape))
    need = probe.actor_bytes(batch_size)
    if available and need > available:
        raise StepError(
            f"one inference actor would need {need / 2**30:.1f} GiB (images up to {'x'.join(map(str, shape))} px, "
            f"batch_size {batch_size}) but the cluster offers Ray {available / 2**30:.1f} GiB: lower the step's "
            "batch_size, or run on nodes with more memory"
        )
    log.info(
        "each inference actor asks for %.2f GiB (images up to %s px, batch %d: model %.0f MiB, +%.0f MiB per image)",
        need / 2**30,
        "x".join(map(str, shape)),
        batch_size,
        probe.parameters / 2**20,
        probe.peak_per_image / 2**20,
    )
    return need


def _dataset_shape(path: Path, resampled: PreprocessSpec | None = None) -> tuple[int, ...] | None:
    """The largest (H, W) — or (Z, H, W) of volume records — among the ``ok`` rows of a dataset;
    with ``resampled`` (see :func:`run_shape`) each row's (H, W) as its spacing resizes it."""
    dataset = pads.dataset(str(path), format="parquet")
    volumes = "source_uris" in dataset.schema.names
    scaled = resampled is not None and resampled.spacing is not None and "spacing_known" in dataset.schema.names
    columns = ["status", "height", "width", *(["source_uris"] if volumes else []), *(SPACING_COLUMNS if scaled else [])]
    table = dataset.to_table(columns=columns).to_pandas()
    table = table[table["status"] == STATUS_OK].reset_index(drop=True)
    if table.empty:
        return None
    if scaled:
        sizes = [
            scaled_shape((int(r["height"]), int(r["width"])), image_scale(resampled, known_spacing(r)))
            for r in table.to_dict("records")
        ]
        table["height"], table["width"] = [h for h, _ in sizes], [w for _, w in sizes]
    if volumes:
        depth = table["source_uris"].map(len)
        largest = (depth * table["height"] * table["width"]).idxmax()
        return int(depth[largest]), int(table["height"][largest]), int(table["width"][largest])
    largest = (table["height"] * table["width"]).idxmax()
    return int(table["height"][largest]), int(table["width"][largest])


def _fingerprint_shape(checkpoint: Path, resampled: PreprocessSpec | None = None) -> tuple[int, ...] | None:
    """The largest (H, W) in the training fingerprint's shape table, if the model has one; with
    ``resampled`` (see :func:`run_shape`), resized by the coarsest training spacing's factor."""
    path = Path(checkpoint) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    fingerprint = json.loads(path.read_text(encoding="utf-8"))
    shapes = fingerprint.get("shapes") or []
    if not shapes:
        return None
    height, width, _ = max(shapes, key=lambda s: s[0] * s[1])
    if resampled is None or resampled.spacing is None:
        return int(height), int(width)
    samples = fingerprint.get("image_samples", {})
    factors = [max(samples.get(k) or [t], default=t) / t for k, t in zip(("spacing_y", "spacing_x"), resampled.spacing)]
    return tuple(max(1, round(n * f)) for n, f in zip((height, width), factors))

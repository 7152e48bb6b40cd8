"""What a case's row says beyond its mask, scores and risk: object sizes in mm and how far the
image's encoder embedding lies from the training cases'.

Both are computed by the inference actors in the pass that segments the case (see
:func:`segops.engine.cases.segment_cases`): the sizes from the final class map (after
postprocessing) with :func:`segops.metrics.measurements.measure_case`, the distance with one
encoder pass per batch (:func:`segops.engine.embeddings.embed`; the decoder does not run) against
the model's :class:`~segops.engine.embeddings.EmbeddingReference` — or, for 2D images that a 2D
semantic model predicts whole, from the prediction's own encoder pass (:func:`embedding_tap`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from segops.data.instances import class_map, instance_id_map
from segops.engine.checkpoint import LoadedModel
from segops.engine.embeddings import BottleneckTap, EmbeddingReference, embed
from segops.errors import CheckpointError
from segops.metrics.measurements import CaseMeasurements, measure_case

log = logging.getLogger(__name__)

#: A case's spacing in mm in its class map's axis order, or None when the source gave none.
Spacing = tuple[float, ...] | None


@contextmanager
def embedding_tap(
    loaded: LoadedModel, images: Sequence[np.ndarray], reference: EmbeddingReference | None
) -> Iterator[BottleneckTap | None]:
    """An open :class:`~segops.engine.embeddings.BottleneckTap` for predicting ``images`` when their
    embeddings are wanted (the model has a reference) and can come from the prediction (2D images,
    a model the tap takes: 2D semantic with a known bottleneck); else None. Not for a model with
    ``preprocess.spacing``: it predicts each image resampled to that spacing, while embeddings (its
    reference's too) are taken of images as they are."""
    tap = None
    taken_as_predicted = loaded.preprocess.spacing is None
    if reference is not None and taken_as_predicted and len(images) and all(np.ndim(i) == 3 for i in images):
        try:
            tap = BottleneckTap(loaded).__enter__()
        except CheckpointError:  # not a 2D semantic model, or no known bottleneck: embed() says why
            tap = None
    try:
        yield tap
    finally:
        if tap is not None:
            tap.__exit__()


def embedding_distances(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    reference: EmbeddingReference | None,
    device: torch.device,
    amp: bool,
    tap: BottleneckTap | None = None,
) -> list[float]:
    """Each image's embedding distance (:meth:`EmbeddingReference.distance`); NaN for every image
    when the model has no reference or its encoder cannot embed them (the case is still segmented).
    With ``tap`` (closed, after the prediction) the rows it caught are used and only the other
    images are embedded."""
    if reference is None or not len(images):
        return [float("nan")] * len(images)
    try:
        emb = embed(loaded, images, device, amp) if tap is None else tap.embeddings(loaded, images, device, amp)
        return [float(d) for d in reference.distance(emb)]
    except Exception as exc:  # e.g. an image the encoder cannot take: its prediction says why
        log.debug("no embedding distance for a batch of %d: %s", len(images), exc)
        return [float("nan")] * len(images)


def case_measurements(
    mask: np.ndarray,
    label_map: np.ndarray | None,
    truth: np.ndarray | None,
    spacing: Spacing,
    classes: int,
) -> CaseMeasurements:
    """Objects of a case and their totals (against its truth when labelled).

    Args:
        mask: (H, W) or (Z, H, W) class map.
        label_map: an instance model's (H, W) label map (``class * 65536 + k``): objects are its
            instances; None for a semantic model (objects: connected components).
        truth: the case's truth in the same form as the prediction (class map, or instance label map).
        spacing: mm per axis of ``mask``, None when unknown (then px only).
    """
    fg = range(1, classes)
    if label_map is None:
        return measure_case(mask, spacing, fg, truth=truth)
    truth_classes = None if truth is None else class_map(truth)
    truth_ids = None if truth is None else instance_id_map(truth)
    return measure_case(
        mask, spacing, fg, instances=instance_id_map(label_map), truth=truth_classes, truth_instances=truth_ids
    )


def measurement_fields(measurements: CaseMeasurements | None) -> dict[str, Any]:
    """The result row's ``measurements`` (JSON per-case totals) and ``components`` (JSON object rows)."""
    if measurements is None:
        return {}
    return {
        "measurements": json.dumps(measurements.totals, default=_plain),
        "components": json.dumps(measurements.components, default=_plain, separators=(",", ":")),
    }


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers for JSON."""
    return value.item() if hasattr(value, "item") else str(value)

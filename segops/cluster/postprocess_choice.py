"""The postprocessing a train step stores with its model (:mod:`segops.engine.postprocess`), chosen
on its validation (or out-of-fold) predictions, and on its training cases too where validation holds
too few cases of a rare class to weigh the false alarms on clean cases.

On a rare-defect archive split by part (KolektorSDD: 20 parts of 8 views, 1 in 12 views with a
defect), the validation parts held 2 defective views among 16: fewer than
:data:`~segops.engine.postprocess.MIN_CASES`, so no rule was tried, and the model's 2-13 px specks
stayed on every clean held-out view (all-case Dice 0.06, foreground Dice 0.98). Where a class is in
fewer than ``MIN_CASES`` validation cases and the training cases would give ``MIN_CASES`` with it
and ``MIN_CASES`` without, a seeded sample of the training cases (at most
:data:`MAX_TRAINING_CASES`) is predicted on the driver, as a segment step predicts, and decides with
the validation cases (``source`` ``"validation+training"``). The training cases are the ones the
model fitted: their specks are if anything smaller than on new images, so the sizes a rule removes
err small, and no rule may leave empty a case whose defect it found. 2D semantic models only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from segops.cluster.datasets import take_records
from segops.cluster.folds import driver_device
from segops.data.records import dataset_meta, group_cases, known_spacing, seeded_sample
from segops.engine.cases import CaseFailure, InferenceSettings, segment_cases
from segops.engine.checkpoint import load_checkpoint, update_meta
from segops.engine.postprocess import META_KEY, MIN_CASES, Postprocessing, choose_postprocessing

log = logging.getLogger(__name__)

#: Most training cases predicted to supplement a validation set too small for a rare class.
MAX_TRAINING_CASES = 200


def store_postprocessing(
    checkpoint: Path,
    predictions: tuple[list[np.ndarray], list[np.ndarray]],
    source: str,
    classes: int,
    tracker: Any,
    smallest_object: float | None = None,
    training: tuple[str | Path, list[str], int] | None = None,
) -> Postprocessing:
    """Choose the postprocessing on ``predictions`` (class maps, labels) from ``source``, with the
    training cases where a class is rare in validation (see the module docstring), store it in the
    checkpoint's ``segops.json`` and log its metrics to ``tracker``.

    Args:
        training: (dataset folder, training groups, seed) to draw training cases from; None: never
            (the caller's choice: 2D semantic models only).
    """
    maps, labels = list(predictions[0]), list(predictions[1])
    started = time.monotonic()
    if training is not None and source == "validation":
        rare = rare_classes(labels, classes)
        ids = training_sample(training, labels, rare) if rare else []
        if ids:
            extra_maps, extra_labels = training_predictions(checkpoint, training[0], ids)
            maps, labels, source = maps + extra_maps, labels + extra_labels, "validation+training"
    chosen = choose_postprocessing(maps, labels, classes, source=source, smallest_object=smallest_object)
    update_meta(checkpoint, {META_KEY: chosen.to_json()})
    tracker.log_metrics(chosen.metrics())
    log.info(
        "postprocessing chosen on %d %s case(s) in %.1f s: %s",
        len(maps),
        source,
        time.monotonic() - started,
        chosen.describe(),
    )
    return chosen


def classes_present(labels: list[np.ndarray]) -> list[set[int]]:
    """The class values each of ``labels`` holds."""
    return [set(np.unique(t).tolist()) for t in labels]


def rare_classes(labels: list[np.ndarray], classes: int) -> list[int]:
    """The foreground classes fewer than ``MIN_CASES`` of ``labels`` hold."""
    present = classes_present(labels)
    return [c for c in range(1, classes) if sum(c in p for p in present) < MIN_CASES]


def training_sample(
    training: tuple[str | Path, list[str], int], labels: list[np.ndarray], rare: list[int]
) -> list[str]:
    """A seeded sample (at most :data:`MAX_TRAINING_CASES`) of the labelled training cases, if with
    the validation ``labels`` it gives every class of ``rare`` ``MIN_CASES`` cases holding it and
    ``MIN_CASES`` without (read from the dataset's label values, no pixels); else []."""
    dataset, groups, seed = training
    meta = dataset_meta(dataset)
    ids = seeded_sample(group_cases(dataset, groups, labelled_only=True), MAX_TRAINING_CASES, seed)
    values = meta.set_index("case_id").loc[ids, "label_values"] if ids else []
    present = classes_present(labels) + [{int(v) for v in vs} for vs in values]
    for c in rare:
        holding = sum(c in p for p in present)
        if holding < MIN_CASES or len(present) - holding < MIN_CASES:
            return []
    return ids


def training_predictions(
    checkpoint: str | Path, dataset: str | Path, ids: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(class maps, labels) of the training cases ``ids`` (2D images), predicted on the driver as a
    segment step with default settings predicts them (no postprocessing, no risk)."""
    device = driver_device()
    loaded = load_checkpoint(checkpoint, device)
    settings = InferenceSettings(postprocess=False, risk=False, measure=False)
    maps, labels = [], []
    for start in range(0, len(ids), 16):
        records = take_records(dataset, ids[start : start + 16])
        truth = [np.asarray(r["label"]) for r in records]
        images, spacings = [np.asarray(r["image"]) for r in records], [known_spacing(r) for r in records]
        results = segment_cases(loaded, images, truth, settings, device, spacings)
        for result, label in zip(results, truth, strict=True):
            if not isinstance(result, CaseFailure):
                maps.append(result.class_map)
                labels.append(label)
    return maps, labels

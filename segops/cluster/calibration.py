"""The risk calibration written beside a trained model: its validation cases predicted on the driver
exactly as a segment step predicts (the engine's per-case path), their risk signals and Dice kept
as :class:`~segops.engine.risk_rule.RiskCalibration` (``risk_calibration.json``).

A few seconds on a CPU for a 2D model: at most :data:`MAX_CALIBRATION_CASES` cases
(:data:`MAX_CALIBRATION_VOLUMES` volumes, a few at a time).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from segops.cluster.datasets import take_records
from segops.cluster.fingerprint import FINGERPRINT_FILE
from segops.cluster.folds import driver_device
from segops.data.records import group_cases, known_spacing, seeded_sample
from segops.engine.cases import CaseFailure, InferenceSettings, segment_cases
from segops.engine.checkpoint import load_checkpoint
from segops.engine.risk_rule import CALIBRATION_FILE, MIN_CALIBRATION_CASES, RiskCalibration, RiskReference
from segops.outputs.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: Most validation cases (2D) a calibration predicts.
MAX_CALIBRATION_CASES = 200
#: Most validation volumes a calibration of a 3D model predicts.
MAX_CALIBRATION_VOLUMES = 8


def write_risk_calibration(
    dataset: str | Path, checkpoint: str | Path, groups: list[str], seed: int = 0
) -> Path | None:
    """Predict a seeded sample of the labelled ``ok`` cases of ``groups`` (the validation groups) with
    the model in ``checkpoint`` and write their :class:`RiskCalibration` there.

    The model's training fingerprint must already be in ``checkpoint`` (the area z-scores and flags
    read it). Returns the file, or None, logged, with fewer than
    :data:`~segops.engine.risk_rule.MIN_CALIBRATION_CASES` cases: the model's risk then follows
    the absolute rule.
    """
    started = time.monotonic()
    ids = group_cases(dataset, groups, labelled_only=True)
    if len(ids) < MIN_CALIBRATION_CASES:
        log.info(
            "%d labelled validation case(s): the risk is not calibrated (needs %d); it follows the absolute rule",
            len(ids),
            MIN_CALIBRATION_CASES,
        )
        return None
    device = driver_device()
    loaded = load_checkpoint(checkpoint, device)
    volumes = loaded.model_spec.spatial_dims == 3
    picked = seeded_sample(ids, MAX_CALIBRATION_VOLUMES if volumes else MAX_CALIBRATION_CASES, seed)
    # what a segment step with default settings computes, without the extras the risk does not read
    settings = InferenceSettings(reference=RiskReference.from_model_dir(checkpoint, FINGERPRINT_FILE), measure=False)
    signals, flags, dice = [], [], []
    chunk = 2 if volumes else 16
    for start in range(0, len(picked), chunk):
        records = take_records(dataset, picked[start : start + chunk])
        images = [np.asarray(r["image"]) for r in records]
        labels = [np.asarray(r["label"]) for r in records]
        spacings = [known_spacing(r) for r in records]
        for result in segment_cases(loaded, images, labels, settings, device, spacings):
            if isinstance(result, CaseFailure) or result.risk is None:
                continue
            signals.append(result.risk.calibration_signals())
            flags.append(result.risk.flags)
            dice.append(result.scores.dice if result.scores is not None else float("nan"))
    if len(signals) < MIN_CALIBRATION_CASES:
        log.warning("only %d validation case(s) could be predicted: the risk is not calibrated", len(signals))
        return None
    calibration = RiskCalibration.from_cases(signals, flags, dice)
    path = Path(atomic_write_text(Path(checkpoint) / CALIBRATION_FILE, calibration.to_json()))
    log.info(
        "risk calibrated on %d validation case(s) in %.1f s: cases are flagged at risk >= %.3f",
        calibration.cases,
        time.monotonic() - started,
        calibration.flag_risk,
    )
    return path

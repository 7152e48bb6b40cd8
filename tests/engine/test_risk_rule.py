"""The risk rule without a model: tails, the calibration from validation cases, and what the
calibrated rule does that the absolute one cannot (a missed object ranks above good masks)."""

import math
from pathlib import Path

import numpy as np
import pytest

from segops.engine.risk import semantic_risk
from segops.engine.risk_rule import (
    ABSOLUTE_FLAG_RISK,
    CALIBRATION_FILE,
    RiskCalibration,
    RiskReference,
    tail,
)

#: One foreground class in 10 % ± 5 % of each training image; objects of 50 px typically.
FINGERPRINT = {
    "fg_image_fraction": 0.5,
    "class_image_fractions": ((1, 0.10, 0.05),),
    "intensity_range": (0.0, 255.0),
    "small_px": 4.0,
    "max_objects": 3,
    "object_px": 50.0,
}


def test_tail_is_the_share_of_values_below_with_ties_half() -> None:
    values = (0.1, 0.2, 0.2, 0.4)
    assert tail(values, 0.05) == 0.0 and tail(values, 0.5) == 1.0
    assert tail(values, 0.2) == pytest.approx((1 + 3) / 8)  # one below, two tied
    assert tail(values, 0.3) == pytest.approx(3 / 4)


def test_calibration_flags_from_the_90th_percentile_of_leave_one_out_risks() -> None:
    signals = [{"entropy_fg": i / 10, "entropy_boundary": i / 10, "doubt": i / 10, "area_z": i / 10} for i in range(10)]
    calibration = RiskCalibration.from_cases(signals, [0] * 10, dice=[0.9] * 10)
    # case i against the other nine: i of them lie below it on every signal, so its risk is i / 9
    assert calibration.flag_risk == pytest.approx(np.quantile([i / 9 for i in range(10)], 0.9))
    assert calibration.cases == 10 and dict(calibration.values)["doubt"] == tuple(i / 10 for i in range(10))
    flagged = RiskCalibration.from_cases(signals, [0] * 8 + [1, 1], dice=[0.9] * 10)  # two carry a flag
    assert flagged.flag_risk > 1.0
    assert RiskCalibration.from_json(calibration.to_json()) == calibration
    with pytest.raises(ValueError, match="needs 3 cases"):
        RiskCalibration.from_cases(signals[:2], [0, 0])


def test_signals_missing_in_validation_are_left_out_not_counted_confident() -> None:
    signals = [{"entropy_fg": math.nan, "entropy_boundary": math.nan, "doubt": d, "area_z": 1.0} for d in (0, 0.1, 0.2)]
    calibration = RiskCalibration.from_cases(signals, [0, 0, 0])
    assert dict(calibration.values)["entropy_fg"] == ()
    assert calibration.tails({"entropy_fg": 0.9, "doubt": 0.3, "area_z": math.nan}) == {"doubt": 1.0}


def _good_mask() -> tuple[np.ndarray, np.ndarray]:
    """A 20×20 image with a 6×6 object drawn (9 % of the image), soft inside and uncertain on its edge."""
    class_map = np.zeros((20, 20), np.uint8)
    class_map[5:11, 5:11] = 1
    entropy = np.full((20, 20), 0.05, np.float32)
    entropy[5:11, 5:11] = 0.6
    entropy[4:12, 4:12][np.pad(np.ones((6, 6), bool), 1) == 0] = 0.9  # the band outside
    entropy[5, 5:11] = entropy[10, 5:11] = entropy[5:11, 5] = entropy[5:11, 10] = 0.9
    return class_map, entropy


def _missed_object() -> tuple[np.ndarray, np.ndarray]:
    """Nothing drawn, but an object of 36 px half-seen (entropy 0.8) where it is."""
    class_map = np.zeros((20, 20), np.uint8)
    entropy = np.full((20, 20), 0.05, np.float32)
    entropy[12:18, 12:18] = 0.8
    return class_map, entropy


def _risk(case: tuple[np.ndarray, np.ndarray], reference: RiskReference):
    class_map, entropy = case
    return semantic_risk(class_map, entropy, math.nan, 0.0, reference, classes=2)


def test_doubt_counts_an_empty_predictions_doubtful_pixels_against_a_training_object() -> None:
    reference = RiskReference(**FINGERPRINT)
    missed = _risk(_missed_object(), reference)
    assert missed.doubt == pytest.approx(36 / (36 + 50))  # half-seen, of about a training object's size
    class_map, entropy = _missed_object()
    entropy[:] = 0.05
    entropy[0, :3] = 0.8  # three doubtful pixels on an empty slice: was a full doubt (3 / 3)
    assert _risk((class_map, entropy), reference).doubt == pytest.approx(3 / 53)


def test_calibrated_risk_ranks_a_missed_object_above_good_masks_and_flags_it() -> None:
    absolute = RiskReference(**FINGERPRINT)
    good, missed = _risk(_good_mask(), absolute), _risk(_missed_object(), absolute)
    assert math.isnan(missed.entropy_fg)
    # the absolute rule counts the missing entropy as confidence: the missed object ranks below
    assert missed.risk < good.risk and good.risk >= ABSOLUTE_FLAG_RISK
    # validation cases like the good mask, each a little different
    rng = np.random.default_rng(0)
    signals = [{k: v * rng.uniform(0.8, 1.2) for k, v in good.calibration_signals().items()} for _ in range(12)]
    calibration = RiskCalibration.from_cases(signals, [0] * 12)
    calibrated = RiskReference(**FINGERPRINT, calibration=calibration)
    good_c, missed_c = _risk(_good_mask(), calibrated), _risk(_missed_object(), calibrated)
    assert 0.2 < good_c.risk < 0.8  # a typical validation case's
    assert missed_c.risk == pytest.approx(1.0)  # beyond every validation case on doubt and area
    assert missed_c.risk >= calibration.flag_risk > good_c.risk
    assert any(
        r.startswith("background the model half-saw") and "above 100% of validation cases" in r
        for r in missed_c.reasons
    )
    assert calibrated.flag_risk == calibration.flag_risk and absolute.flag_risk == ABSOLUTE_FLAG_RISK


def test_a_model_folder_gives_its_calibration(tmp_path: Path) -> None:
    signals = [{"entropy_fg": v, "entropy_boundary": v, "doubt": v, "area_z": v} for v in (0.1, 0.2, 0.3, 0.5)]
    calibration = RiskCalibration.from_cases(signals, [0] * 4)
    assert RiskReference.from_model_dir(tmp_path, "fingerprint.json").calibration is None
    (tmp_path / CALIBRATION_FILE).write_text(calibration.to_json())
    reference = RiskReference.from_model_dir(tmp_path, "fingerprint.json")
    assert reference.calibration == calibration and reference.flag_risk == calibration.flag_risk

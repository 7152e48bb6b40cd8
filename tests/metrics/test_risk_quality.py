"""Risk ranking quality against hand-computed values."""

import math

import pytest

from segops.errors import ShapeError
from segops.metrics.risk_quality import (
    error_threshold,
    risk_auroc,
    risk_quality,
    risk_spearman,
    top_fraction_dice,
)

RISK = [0.9, 0.8, 0.1, 0.2, 0.3]
DICE = [0.2, 0.6, 0.9, 0.4, 0.95]


def test_auroc_counts_error_non_error_pairs_ordered_by_risk() -> None:
    # errors (Dice < 0.5): risks 0.9 and 0.2; the others 0.8, 0.1, 0.3: 0.9 beats all three, 0.2 beats 0.1
    assert risk_auroc(RISK, DICE, 0.5) == pytest.approx(4 / 6)
    assert risk_auroc([1.0, 1.0, 0.0], [0.1, 0.9, 0.9], 0.5) == pytest.approx((1 + 0.5) / 2)  # a tie counts half
    assert math.isnan(risk_auroc(RISK, DICE, 0.1))  # no error: undefined


def test_error_threshold_is_half_or_the_median_when_nothing_is_below_half() -> None:
    assert error_threshold(DICE) == 0.5
    assert error_threshold([0.6, 0.7, 0.9, 0.8]) == pytest.approx(0.75)
    assert math.isnan(error_threshold([]))


def test_spearman_and_top_ten_percent() -> None:
    # rank differences 4, 1, -3, 0, -2: 1 - 6 * 30 / (5 * 24)
    assert risk_spearman(RISK, DICE) == pytest.approx(-0.5)
    assert math.isnan(risk_spearman([1, 2], [0.5, 0.4]))
    top, rest = top_fraction_dice(RISK, DICE)  # ceil(10 % of 5) = 1 case: the riskiest (Dice 0.2)
    assert top == pytest.approx(0.2) and rest == pytest.approx((0.6 + 0.9 + 0.4 + 0.95) / 4)


def test_risk_quality_drops_missing_values_and_names_every_figure() -> None:
    q = risk_quality([*RISK, float("nan")], [*DICE, 0.0])
    assert q["risk_cases"] == 5 and q["risk_errors"] == 2 and q["risk_error_dice"] == 0.5
    assert q["risk_auroc"] == pytest.approx(4 / 6) and q["risk_spearman"] == pytest.approx(-0.5)
    # below the median Dice (0.6): 0.2 and 0.4 again
    assert q["risk_auroc_median"] == pytest.approx(4 / 6)
    assert q["risk_top10_dice"] == pytest.approx(0.2)
    good = risk_quality([0.1, 0.2, 0.9, 0.8], [0.9, 0.8, 0.3, 0.4])  # riskier is always worse
    assert good["risk_auroc"] == 1.0 and good["risk_spearman"] == pytest.approx(-1.0)
    with pytest.raises(ShapeError, match="one of each per case"):
        risk_quality([0.1], [0.2, 0.3])

"""Does the risk score find bad masks? Ranking quality of per-case ``risk`` against labelled Dice.

Pure functions over arrays (one value per labelled case). A useful risk ranks the worst masks first:
AUROC near 1 for telling errors from the rest, a clearly negative Spearman correlation with Dice, and
a low mean Dice among the riskiest 10 % of cases compared with the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata, spearmanr

from segops.errors import ShapeError

#: Dice below which a mask counts as an error.
ERROR_DICE = 0.5
#: Share of cases, riskiest first, whose mean Dice :func:`top_fraction_dice` compares with the rest.
TOP_FRACTION = 0.1


def _pairs(risk: Sequence[float], dice: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Cases with both a finite risk and a finite Dice."""
    r, d = np.asarray(risk, np.float64), np.asarray(dice, np.float64)
    if r.shape != d.shape:
        raise ShapeError(f"risk has {r.shape} values and dice {d.shape}; expected one of each per case")
    keep = np.isfinite(r) & np.isfinite(d)
    return r[keep], d[keep]


def error_threshold(dice: Sequence[float]) -> float:
    """:data:`ERROR_DICE`, or the median Dice when no case is below it (NaN without cases)."""
    d = np.asarray(dice, np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return math.nan
    return ERROR_DICE if (d < ERROR_DICE).any() else float(np.median(d))


def risk_auroc(risk: Sequence[float], dice: Sequence[float], threshold: float) -> float:
    """AUROC of ``risk`` for telling cases with Dice < ``threshold`` (errors) from the others.

    1.0: every error is riskier than every other case; 0.5: chance; ties count half (the
    Mann-Whitney U over average ranks, as ``sklearn.metrics.roc_auc_score``). NaN when either
    group is empty.
    """
    r, d = _pairs(risk, dice)
    errors = d < threshold
    n_err, n_ok = int(errors.sum()), int((~errors).sum())
    if not n_err or not n_ok:
        return math.nan
    ranks = rankdata(r)
    return float((ranks[errors].sum() - n_err * (n_err + 1) / 2) / (n_err * n_ok))


def risk_spearman(risk: Sequence[float], dice: Sequence[float]) -> float:
    """Spearman rank correlation of risk with Dice (negative is good); NaN under 3 cases or constant input."""
    r, d = _pairs(risk, dice)
    if len(r) < 3 or np.ptp(r) == 0 or np.ptp(d) == 0:
        return math.nan
    return float(spearmanr(r, d).statistic)


def top_fraction_dice(
    risk: Sequence[float], dice: Sequence[float], fraction: float = TOP_FRACTION
) -> tuple[float, float]:
    """(mean Dice of the riskiest ``fraction`` of cases (at least one), mean Dice of the rest).

    Ties in risk are broken by case order (a stable sort). NaN for a group without cases.
    """
    r, d = _pairs(risk, dice)
    if not len(r):
        return math.nan, math.nan
    k = max(1, math.ceil(fraction * len(r)))
    order = np.argsort(-r, kind="stable")
    top, rest = d[order[:k]], d[order[k:]]
    return float(top.mean()), float(rest.mean()) if len(rest) else math.nan


def risk_quality(risk: Sequence[float], dice: Sequence[float]) -> dict[str, float]:
    """Every figure of this module for one set of labelled cases.

    Keys: ``risk_auroc`` (errors: Dice below :func:`error_threshold`), ``risk_error_dice`` (that
    threshold), ``risk_errors`` (their count), ``risk_auroc_median`` (errors: below the median Dice),
    ``risk_spearman``, ``risk_top10_dice`` and ``risk_rest_dice`` (:func:`top_fraction_dice`),
    ``risk_cases`` (cases with both values).
    """
    r, d = _pairs(risk, dice)
    threshold = error_threshold(d)
    top, rest = top_fraction_dice(r, d)
    return {
        "risk_cases": float(len(r)),
        "risk_error_dice": threshold,
        "risk_errors": float((d < threshold).sum()) if len(d) else 0.0,
        "risk_auroc": risk_auroc(r, d, threshold),
        "risk_auroc_median": risk_auroc(r, d, float(np.median(d))) if len(d) else math.nan,
        "risk_spearman": risk_spearman(r, d),
        "risk_top10_dice": top,
        "risk_rest_dice": rest,
    }

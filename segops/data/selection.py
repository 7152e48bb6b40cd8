"""What to label next: risky cases that are unlike each other (risk-weighted k-center greedy).

Given each candidate case's ``risk`` and its encoder embedding, pick ``budget`` cases:

1. Embeddings are standardised over the candidates (per-dimension z-scores, std floored at a tenth
   of the median std, as :mod:`segops.engine.embeddings` does), and the distance of two cases is
   the root mean square of their z-score differences (Euclidean / sqrt(D)). Distances at or below
   ``duplicate_tol`` count as 0 (float noise between identical images).
2. Risk becomes a weight ``w = (1 - risk_weight) + risk_weight * r``, where ``r`` is the risk
   rescaled to [0, 1] over the candidates (NaN risk counts as the lowest); with the default
   ``risk_weight = 0.5`` a case's weight lies in [0.5, 1].
3. The first pick is the riskiest case. Each next pick maximises ``w_i * d(i, S)``, where
   ``d(i, S)`` is the distance of case ``i`` to the nearest case already picked. A case identical
   to a picked one has ``d = 0``, hence score 0, so it is only picked once every remaining case
   duplicates a picked one. Ties (equal score) go to the higher risk, then the smaller case id:
   the result depends on nothing but the inputs.

Without embeddings (``D = 0``) every distance is 0 and the picks are simply the riskiest cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segops.errors import ShapeError

#: Default share of a case's weight that comes from its risk (see the module docstring).
RISK_WEIGHT = 0.5
#: RMS z-score distance below which two cases count as the same image.
DUPLICATE_TOL = 1e-6


@dataclass(frozen=True)
class Selection:
    """The picked cases, in pick order.

    Attributes:
        indices: (budget,) positions of the picks in the candidate arrays.
        distances: (budget,) each pick's distance to the cases picked before it (``inf`` for the
            first; 0 for a pick that duplicates an earlier one).
        scores: (budget,) the weighted distance it was picked by (``inf`` for the first).
    """

    indices: np.ndarray
    distances: np.ndarray
    scores: np.ndarray


def select_cases(
    case_ids: Sequence[str],
    risk: np.ndarray,
    embeddings: np.ndarray,
    budget: int,
    risk_weight: float = RISK_WEIGHT,
    duplicate_tol: float = DUPLICATE_TOL,
) -> Selection:
    """Pick ``min(budget, N)`` distinct cases by risk-weighted k-center greedy (module docstring).

    Args:
        case_ids: (N,) the candidates' ids (tie-breaking).
        risk: (N,) float, higher = more doubtful; NaN counts as the lowest.
        embeddings: (N, D) float encoder embeddings (D may be 0).
        budget: cases to pick (>= 0).
        risk_weight: in [0, 1): how much risk scales a case's distance.

    Raises:
        ShapeError: the arrays do not agree in length, or ``embeddings`` is not 2D.
        ValueError: ``budget`` < 0 or ``risk_weight`` outside [0, 1).
    """
    ids = [str(c) for c in case_ids]
    n = len(ids)
    risk = np.asarray(risk, np.float64).reshape(-1)
    emb = np.asarray(embeddings, np.float64)
    if emb.ndim != 2 or len(emb) != n or len(risk) != n:
        raise ShapeError(
            f"expected {n} case ids, ({n},) risk and ({n}, D) embeddings, got risk {risk.shape} and "
            f"embeddings {emb.shape}"
        )
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if not 0 <= risk_weight < 1:
        raise ValueError(f"risk_weight must be in [0, 1) so that every case keeps some weight, got {risk_weight}")
    k = min(budget, n)
    if k == 0:
        empty = np.zeros(0)
        return Selection(np.zeros(0, np.int64), empty, empty)
    clean = np.nan_to_num(risk, nan=-np.inf, posinf=np.finfo(float).max)
    weight = (1 - risk_weight) + risk_weight * _unit(clean)
    z = _standardise(emb)
    # rank of each case by (risk desc, id asc): the tie-break of every pick
    order = sorted(range(n), key=lambda i: (-clean[i], ids[i]))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)

    picked = [order[0]]
    distances, scores = [np.inf], [np.inf]
    nearest = _distance_to(z, z[order[0]], duplicate_tol)
    available = np.ones(n, bool)
    available[order[0]] = False
    for _ in range(k - 1):
        score = np.where(available, weight * nearest, -np.inf)
        best = np.flatnonzero(score == score.max())
        i = int(best[np.argmin(rank[best])])
        picked.append(i)
        distances.append(float(nearest[i]))
        scores.append(float(score[i]))
        available[i] = False
        nearest = np.minimum(nearest, _distance_to(z, z[i], duplicate_tol))
    return Selection(np.asarray(picked, np.int64), np.asarray(distances), np.asarray(scores))


def _unit(values: np.ndarray) -> np.ndarray:
    """``values`` rescaled to [0, 1] (``-inf`` → 0; all equal → all 0)."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(len(values))
    lo, hi = values[finite].min(), values[finite].max()
    out = np.zeros(len(values))
    if hi > lo:
        out[finite] = (values[finite] - lo) / (hi - lo)
    return out


def _standardise(emb: np.ndarray) -> np.ndarray:
    """Per-dimension z-scores over the rows, std floored at a tenth of the median std."""
    if emb.shape[1] == 0:
        return emb
    std = emb.std(axis=0)
    std = np.maximum(std, 0.1 * float(np.median(std)) + 1e-8)
    return (emb - emb.mean(axis=0)) / std


def _distance_to(z: np.ndarray, point: np.ndarray, tol: float) -> np.ndarray:
    """(N,) RMS distance of every row of ``z`` to ``point``; at most ``tol`` → 0."""
    if z.shape[1] == 0:
        return np.zeros(len(z))
    d = np.sqrt(((z - point) ** 2).mean(axis=1))
    return np.where(d <= tol, 0.0, d)

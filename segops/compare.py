"""Champion vs challenger on the same held-out cases, and the promotion gate (pure numpy/pandas).

Inputs are two per-case tables, one per model, scored on the same frozen held-out set in one run:
``case_id`` (unique), ``dice``, ``iou``, optionally ``dice_per_class`` (JSON text such as
``'{"1": 0.91, "2": 0.5}'``: foreground class → Dice of that case; ``""``/missing = no per-class
data), and subgroup columns such as ``modality``.

- :func:`pair_by_case` puts two per-case tables side by side by ``case_id`` (the one pairing, also
  used by :mod:`segops.audit`); :func:`paired_cases` is it for the gate, refusing tables that cover
  different cases;
- :func:`bootstrap_mean_diff` gives the mean Dice gain with a paired percentile-bootstrap CI;
- :func:`class_deltas` / :func:`subgroup_deltas` break the gain down per class and per subgroup;
- :func:`compare` bundles all of it in a :class:`Comparison`;
- :func:`apply_gate` checks a :class:`~segops.config.schema.PromotionGate` against it.

Differences within ``TOLERANCE`` are treated as float noise, not Dice changes, so two models with
equal scores pass the default "no class may drop" rule.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from segops.config.schema import PromotionGate
from segops.errors import SegopsError, ShapeError, StepError

logger = logging.getLogger(__name__)

#: Dice differences within this are float noise, not changes: the gate ignores them and audits count such
#: cases as unchanged. Dice is a ratio of voxel counts in float64, so noise is ~1e-16 while one voxel of
#: a volume with 10^8 foreground voxels still moves Dice by ~1e-8: a change, not noise.
TOLERANCE = 1e-9

#: Index elements drawn per bootstrap chunk (int64: 32 MiB), so memory stays flat for large sets.
_CHUNK_ELEMENTS = 1 << 22

_REQUIRED = ("case_id", "dice", "iou")
#: Per-case metric columns (``dice``, ``iou``, ``dice_1``, ``iou_per_class``...): never subgroups.
_METRIC_COLUMN = re.compile(r"^(dice|iou)(_.+)?$")
_PAIRED_METRICS = ("dice_champion", "dice_challenger", "iou_champion", "iou_challenger", "delta_dice", "delta_iou")


# --------------------------------------------------------------------------- pairing


def pair_by_case(
    a: pd.DataFrame, b: pd.DataFrame, columns: tuple[str, ...], sides: tuple[str, str] = ("a", "b")
) -> pd.DataFrame:
    """Cases present in both tables, side by side by ``case_id``; rows in ``a``'s order.

    Args:
        a, b: per-case tables with ``case_id`` (unique) and ``dice``.
        columns: the columns to carry from each table (those a table lacks are left out); ``dice``
            is always carried.
        sides: names for the two tables, used as column suffixes.

    Returns:
        ``case_id``, then ``<column>_<side>`` for ``a``'s columns and ``b``'s, then ``delta_dice``
        (b − a) and, when both tables have ``iou``, ``delta_iou``.
    """
    keep = ["dice", *(c for c in columns if c not in ("case_id", "dice"))]

    def side(table: pd.DataFrame, name: str) -> pd.DataFrame:
        present = [c for c in keep if c in table.columns]
        return table[["case_id", *present]].rename(columns={c: f"{c}_{name}" for c in present})

    paired = side(a, sides[0]).merge(side(b, sides[1]), on="case_id")
    for metric in ("dice", "iou"):
        if f"{metric}_{sides[0]}" in paired.columns and f"{metric}_{sides[1]}" in paired.columns:
            paired[f"delta_{metric}"] = paired[f"{metric}_{sides[1]}"] - paired[f"{metric}_{sides[0]}"]
    return paired


def paired_cases(champion: pd.DataFrame, challenger: pd.DataFrame) -> pd.DataFrame:
    """Align the two per-case tables on ``case_id`` (:func:`pair_by_case`), refusing any mismatch.

    Args:
        champion, challenger: per-case tables with ``case_id``, ``dice``, ``iou`` and optionally
            ``dice_per_class`` and subgroup columns.

    Returns:
        One row per case, sorted by ``case_id``: ``case_id``, ``dice_champion``,
        ``dice_challenger``, ``iou_champion``, ``iou_challenger``, ``delta_dice`` and ``delta_iou``
        (challenger − champion), ``dice_per_class_champion``, ``dice_per_class_challenger`` (as
        given, ``""`` where absent), then every non-metric column of the challenger table.

    Raises:
        StepError: a table is missing, lacks a required column or repeats a case id; the tables
            cover different cases; or a Dice/IoU value is not a finite number.
    """
    for side, table in (("champion", champion), ("challenger", challenger)):
        _check_table(side, table)
    _check_same_cases(champion, challenger)
    columns = ("dice", "iou", "dice_per_class")
    paired = pair_by_case(_scores(champion), _scores(challenger), columns, ("champion", "challenger"))
    finite = np.isfinite(paired[list(_PAIRED_METRICS)].to_numpy()).all(axis=1)
    if not finite.all():
        bad = paired.loc[~finite, "case_id"]
        raise StepError(
            f"Dice/IoU is not a finite number for {len(bad)} case(s) {_examples(bad)}; every held-out case "
            "must be scored for both models (a case neither model can score belongs out of the held-out set)"
        )
    extra = [c for c in challenger.columns if c != "case_id" and not _METRIC_COLUMN.match(str(c))]
    extra = [c for c in extra if c not in paired.columns]
    paired = paired.merge(challenger[["case_id", *extra]], on="case_id", validate="1:1")
    order = ["case_id", *_PAIRED_METRICS, "dice_per_class_champion", "dice_per_class_challenger", *extra]
    return paired[order].sort_values("case_id", key=lambda s: s.astype(str), kind="stable").reset_index(drop=True)


def _check_table(side: str, table: pd.DataFrame | None) -> None:
    if table is None:
        raise StepError(
            f"no {side} case table: a comparison needs both models' scores "
            "(no champion yet? skip the comparison and pass comparison=None to apply_gate)"
        )
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise StepError(f"{side} case table lacks column(s) {missing}; it has {list(table.columns)}")
    dup = table.loc[table["case_id"].duplicated(), "case_id"]
    if len(dup):
        raise StepError(f"{side} case table repeats {len(dup)} case_id(s) {_examples(dup)}; each case must appear once")


def _check_same_cases(champion: pd.DataFrame, challenger: pd.DataFrame) -> None:
    a, b = set(champion["case_id"]), set(challenger["case_id"])
    if a != b:
        raise StepError(
            f"champion and challenger were scored on different cases: {len(a - b)} only in champion "
            f"{_examples(a - b)}, {len(b - a)} only in challenger {_examples(b - a)}, {len(a & b)} shared. "
            "The comparison must be on the same cases: evaluate both models on the same frozen held-out set "
            "in one run."
        )


def _scores(table: pd.DataFrame) -> pd.DataFrame:
    per_class = table["dice_per_class"] if "dice_per_class" in table.columns else pd.Series("", index=table.index)
    return pd.DataFrame(
        {
            "case_id": table["case_id"].to_numpy(),
            "dice": pd.to_numeric(table["dice"]).to_numpy(dtype=float),
            "iou": pd.to_numeric(table["iou"]).to_numpy(dtype=float),
            "dice_per_class": per_class.to_numpy(),
        }
    )


def _examples(ids: Any, k: int = 3) -> str:
    shown = sorted(ids, key=str)[:k]
    return f"(e.g. {', '.join(repr(i) for i in shown)})" if shown else ""


# --------------------------------------------------------------------------- statistics


def bootstrap_mean_diff(
    deltas: np.ndarray, n_resamples: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Mean of paired differences with a percentile-bootstrap confidence interval.

    Method: draw ``n_resamples`` resamples of the n cases with replacement (cases, not pixels,
    are the unit; champion and challenger scores of a case stay together since ``deltas`` are
    already paired), take each resample's mean, and report the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of those means. Resamples are drawn in chunks of at most
    ``2**22`` indices, so memory is bounded whatever ``n_resamples × n``.

    Args:
        deltas: (n,) finite per-case differences, challenger − champion.
        n_resamples: number of bootstrap resamples, ≥ 1.
        confidence: coverage of the interval, in (0, 1), e.g. 0.95.
        rng: the only source of randomness; the same seed gives the same interval.

    Returns:
        ``(mean, low, high)``; all equal when every delta is the same.
    """
    d = np.asarray(deltas, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise ShapeError(f"expected a non-empty 1-D array of per-case differences, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise SegopsError(f"{int((~np.isfinite(d)).sum())} of {d.size} differences are not finite numbers")
    if n_resamples < 1:
        raise SegopsError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise SegopsError(f"confidence must be in (0, 1), got {confidence}")
    chunk = max(1, _CHUNK_ELEMENTS // d.size)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        means[start : start + rows] = d[rng.integers(0, d.size, size=(rows, d.size))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1.0 - alpha / 2])
    return float(d.mean()), float(low), float(high)


def class_deltas(paired: pd.DataFrame) -> pd.DataFrame:
    """Per foreground class: mean Dice of both models over the cases where both report the class.

    Args:
        paired: output of :func:`paired_cases` (uses ``dice_per_class_champion`` / ``_challenger``).

    Returns:
        Columns ``class`` (the JSON key, a string such as ``"1"``), ``cases``, ``dice_champion``,
        ``dice_challenger``, ``delta`` (challenger − champion); classes in numeric order. Empty
        (same columns) when no case has per-class data.
    """
    rows: dict[str, list[tuple[float, float]]] = {}
    for case_id, a, b in paired[["case_id", "dice_per_class_champion", "dice_per_class_challenger"]].itertuples(
        index=False
    ):
        champ, chall = _per_class(a, case_id), _per_class(b, case_id)
        for cls in champ.keys() & chall.keys():
            rows.setdefault(cls, []).append((champ[cls], chall[cls]))
    records = []
    for cls in sorted(rows, key=lambda c: (0, int(c), c) if c.isdigit() else (1, 0, c)):
        values = np.asarray(rows[cls])
        champ_mean, chall_mean = float(values[:, 0].mean()), float(values[:, 1].mean())
        records.append((cls, len(values), champ_mean, chall_mean, chall_mean - champ_mean))
    return pd.DataFrame(records, columns=["class", "cases", "dice_champion", "dice_challenger", "delta"])


def _per_class(value: Any, case_id: Any) -> dict[str, float]:
    """``dice_per_class`` cell → {class: Dice}; empty/missing → {}; non-finite entries dropped."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise StepError(f"case {case_id!r}: dice_per_class {value!r} is not JSON ({e.msg})") from e
    elif not isinstance(value, dict) and pd.api.types.is_scalar(value) and pd.isna(value):
        return {}
    if not isinstance(value, dict) or not all(d is None or isinstance(d, (int, float)) for d in value.values()):
        raise StepError(f"case {case_id!r}: dice_per_class should map class → Dice number, got {value!r}")
    return {str(cls): float(d) for cls, d in value.items() if d is not None and math.isfinite(d)}


def subgroup_deltas(paired: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Per (column, value): number of cases, mean Dice of both models and their difference.

    Columns absent from ``paired`` are skipped with a warning (e.g. the default ``modality`` on a
    PNG dataset). Cases with a missing value form their own group, ``value`` None.

    Returns:
        Columns ``column``, ``value``, ``cases``, ``dice_champion``, ``dice_challenger``, ``delta``.
    """
    records = []
    for col in columns:
        if col not in paired.columns:
            logger.warning(
                "subgroup column %r is not in the case table (it has %s): skipped", col, list(paired.columns)
            )
            continue
        groups = paired.groupby(col, dropna=False, sort=False)[["dice_champion", "dice_challenger"]]
        for value, g in sorted(groups, key=lambda kv: str(kv[0])):
            champ_mean, chall_mean = float(g["dice_champion"].mean()), float(g["dice_challenger"].mean())
            records.append((col, _scalar(value), len(g), champ_mean, chall_mean, chall_mean - champ_mean))
    names = ["column", "value", "cases", "dice_champion", "dice_challenger", "delta"]
    table = pd.DataFrame(records, columns=names)
    table["value"] = pd.Series([r[1] for r in records], dtype=object)  # keep None (missing value) as None, not NaN
    return table


def _scalar(value: Any) -> Any:
    """numpy scalar / NaN → plain Python (JSON-friendly); groupby keys may come as 1-tuples."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True, eq=False)  # eq=False: DataFrame fields have no truth value / hash
class Comparison:
    """Everything the evaluate step learned about challenger vs champion on the held-out set.

    ``mean_diff`` = ``mean_challenger`` − ``mean_champion`` (mean Dice over ``n_cases``), with
    its ``confidence`` paired-bootstrap interval ``[ci_low, ci_high]`` from ``n_resamples``.
    """

    n_cases: int
    mean_champion: float
    mean_challenger: float
    mean_diff: float
    ci_low: float
    ci_high: float
    confidence: float
    n_resamples: int
    paired: pd.DataFrame
    classes: pd.DataFrame
    subgroups: pd.DataFrame

    def regressed(self, dice_drop: float) -> int:
        """Number of cases whose Dice fell by more than ``dice_drop``."""
        return int((self.paired["delta_dice"] < -dice_drop - TOLERANCE).sum())

    def fraction_regressed(self, dice_drop: float) -> float:
        """Fraction of cases whose Dice fell by more than ``dice_drop``."""
        return self.regressed(dice_drop) / self.n_cases

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: the scalars (loggable as metrics) plus class/subgroup rows."""
        return {
            "n_cases": self.n_cases,
            "dice_mean_champion": self.mean_champion,
            "dice_mean_challenger": self.mean_challenger,
            "dice_mean_diff": self.mean_diff,
            "dice_diff_ci_low": self.ci_low,
            "dice_diff_ci_high": self.ci_high,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "iou_mean_champion": float(self.paired["iou_champion"].mean()),
            "iou_mean_challenger": float(self.paired["iou_challenger"].mean()),
            "classes": _records(self.classes),
            "subgroups": _records(self.subgroups),
        }


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _scalar(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def compare(
    champion: pd.DataFrame,
    challenger: pd.DataFrame,
    subgroups: tuple[str, ...] = ("modality",),
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Pair the two per-case tables and compute the mean gain, its CI and the breakdowns.

    With no champion yet there is nothing to compare: don't call this, pass ``None`` to
    :func:`apply_gate`. ``seed`` seeds the bootstrap's only generator, so reruns agree.
    """
    paired = paired_cases(champion, challenger)
    if paired.empty:
        raise StepError("the case tables are empty: there are no held-out cases to compare on")
    rng = np.random.default_rng(seed)
    mean_diff, low, high = bootstrap_mean_diff(paired["delta_dice"].to_numpy(), n_resamples, confidence, rng)
    return Comparison(
        n_cases=len(paired),
        mean_champion=float(paired["dice_champion"].mean()),
        mean_challenger=float(paired["dice_challenger"].mean()),
        mean_diff=mean_diff,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        n_resamples=n_resamples,
        paired=paired,
        classes=class_deltas(paired),
        subgroups=subgroup_deltas(paired, subgroups),
    )


# --------------------------------------------------------------------------- gate


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the promotion gate.

    ``checks``: every check run, as ``{"name", "value", "threshold", "passed", "rule"}``.
    ``reasons``: one sentence with the numbers per failed check, so empty when it passed — except
    the no-champion pass, whose single reason says why no check ran.
    """

    passed: bool
    reasons: list[str]
    checks: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for logging the decision with its evidence."""
        return {"passed": self.passed, "reasons": list(self.reasons), "checks": [dict(c) for c in self.checks]}


NO_CHAMPION = "no champion yet: the first model is promoted"


def apply_gate(comparison: Comparison | None, gate: PromotionGate) -> GateDecision:
    """Check a challenger against the gate; ``comparison`` None means there is no champion yet.

    Checks, in order: mean Dice gain ≥ ``min_mean_dice_gain``; if ``require_ci_above`` is set,
    CI low end > it; fraction of cases losing more than ``max_case_regression.dice_drop`` Dice
    ≤ ``max_case_regression.fraction``; if ``per_class_max_drop`` is set, one check per class:
    its mean Dice delta ≥ −``per_class_max_drop`` (with no per-class data at all, a single
    not-checked entry that passes, and a warning).
    """
    if comparison is None:
        return GateDecision(passed=True, reasons=[NO_CHAMPION], checks=[])
    checks: list[dict[str, Any]] = []
    reasons: list[str] = []

    def check(name: str, value: float | None, threshold: float, passed: bool, rule: str, reason: str) -> None:
        """Record one check; a failed one adds its reason."""
        checks.append({"name": name, "value": value, "threshold": threshold, "passed": passed, "rule": rule})
        if not passed:
            reasons.append(reason)

    c, pct = comparison, f"{comparison.confidence:.0%}"
    ci = f"{pct} CI {c.ci_low:.3f} to {c.ci_high:.3f}, {c.n_cases} cases"
    t = gate.min_mean_dice_gain
    check(
        "mean_dice_gain",
        c.mean_diff,
        t,
        c.mean_diff >= t - TOLERANCE,
        f"mean Dice gain >= {t:.3f}",
        f"mean Dice gain {c.mean_diff:.3f} < required {t:.3f} ({ci})",
    )
    if gate.require_ci_above is not None:
        t = gate.require_ci_above
        check(
            "ci_low",
            c.ci_low,
            t,
            c.ci_low > t + TOLERANCE,
            f"low end of the {pct} CI of the mean Dice gain > {t:.3f}",
            f"the {pct} CI of the mean Dice gain starts at {c.ci_low:.3f}, not above required {t:.3f} ({ci})",
        )
    drop, limit = gate.max_case_regression.dice_drop, gate.max_case_regression.fraction
    k, frac = c.regressed(drop), c.fraction_regressed(drop)
    check(
        "case_regression",
        frac,
        limit,
        frac <= limit + TOLERANCE,
        f"fraction of cases losing more than {drop:.3f} Dice <= {limit:.1%}",
        f"{k} of {c.n_cases} cases ({frac:.1%}) lost more than {drop:.3f} Dice; at most {limit:.1%} may",
    )
    if gate.per_class_max_drop is not None:
        _class_checks(c.classes, gate.per_class_max_drop, check)
    return GateDecision(passed=not reasons, reasons=reasons, checks=checks)


def _class_checks(classes: pd.DataFrame, max_drop: float, check: Callable[..., None]) -> None:
    if classes.empty:
        logger.warning("per_class_max_drop is set but the case tables have no per-class Dice: not checked")
        check("class_dice_delta", None, -max_drop, True, "not checked: no per-class Dice in the case tables", "")
        return
    for row in classes.itertuples(index=False):
        cls, delta = row[0], float(row.delta)
        check(
            f"class_{cls}_dice_delta",
            delta,
            -max_drop,
            delta >= -max_drop - TOLERANCE,
            f"class {cls} mean Dice delta >= {-max_drop:.3f}",
            f"class {cls} mean Dice fell {row.dice_champion:.3f} -> {row.dice_challenger:.3f} "
            f"(delta {delta:.3f}, {row.cases} cases); at most {max_drop:.3f} drop allowed",
        )

"""The risk rule: what the training data and the model's own validation cases say a case's signals
mean, and how they become one ``risk`` per case (:mod:`segops.engine.risk` measures the signals).

A model carries two references, both written beside its checkpoint by the train step and read once
on the driver (:meth:`RiskReference.from_model_dir`):

- the training **fingerprint** (``fingerprint.json``): area shares per class, intensity range,
  object sizes and counts; it gives ``area_z``, the flags, and the size ``doubt`` is measured
  against;
- the **calibration** (``risk_calibration.json``, :class:`RiskCalibration`): the signals of the
  model's own validation cases, predicted after training exactly as a segment step predicts. Raw
  entropies mean nothing across models (a Dice-trained network's softmax is soft everywhere: the
  quickstart model's mean normalised entropy is 0.63 over its foreground and 0.91 on boundaries
  of *good* masks), so with a calibration each signal counts by where it falls among those cases.

The rule (:func:`combine`):

- **calibrated** (the model has a calibration): every signal in :data:`CALIBRATED_WEIGHTS` that the
  case has becomes its *tail*: the share of the validation cases with a lower value (ties count
  half; 1.0 above all of them). ``risk = weighted mean of the tails (entropy_fg 1, entropy_boundary
  0.5, doubt 1, |area_z| 1) + (1 − member_dice) + one per raised flag``. About 0.5 is a typical
  validation case; 1.0 is beyond every validation case on every signal the case has. A signal a
  case lacks (no entropy without predicted foreground) is left out of the mean, not counted as
  confident: an empty prediction is judged on its ``doubt`` and area. Cases are flagged from the
  calibration's ``flag_risk``: the 90th percentile of the validation cases' own risks, each scored
  against the others (leave one out), so about one case in ten of data like the validation cases
  is flagged, and more of data unlike it.
- **absolute** (no calibration: a k-fold ensemble, which keeps no validation cases; fewer than
  :data:`MIN_CALIBRATION_CASES` of them; a model trained by an older segops): ``risk =
  entropy_fg + 0.5·entropy_boundary + doubt + (1 − member_dice) + min(|area_z|, 4) / 4 + one per
  raised flag``, a missing signal counting 0; flagged at 1.0.

``risk_reasons`` names every term worth at least 0.25 (absolute) or every calibrated signal above
90 % of the validation cases, and every flag, largest first.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from segops.data.fingerprint import Fingerprint

log = logging.getLogger(__name__)

#: Normalised entropy at or above which a background pixel counts towards ``doubt``.
DOUBT_ENTROPY = 0.5
#: Share of training images with foreground from which an empty prediction is flagged.
EMPTY_RARE = 0.9
#: Share of pixels outside the training intensity range that raises ``flag_intensity``.
INTENSITY_FLAG = 0.1
#: Small fragments tolerated before ``flag_fragments`` whatever the training data had.
MIN_FRAGMENT_LIMIT = 5
#: Fragment size (px) counted as small when the fingerprint has no object sizes.
DEFAULT_SMALL_PX = 16.0
#: |z| at which the absolute area term reaches 1.
AREA_Z_CAP = 4.0
#: Floor under the training spread of a class's area (so a class always absent gives finite z).
MIN_AREA_STD = 1e-3
#: An absolute term worth at least this much is named in ``risk_reasons``.
REASON_MIN = 0.25
#: A calibrated signal above this share of the validation cases is named in ``risk_reasons``.
REASON_TAIL = 0.9
#: Review threshold of a model without calibration (one raised flag, or several uncertain signals).
ABSOLUTE_FLAG_RISK = 1.0
#: Quantile of the validation cases' leave-one-out risks at which cases are flagged.
FLAG_QUANTILE = 0.9
#: Fewest validation cases a calibration is built from.
MIN_CALIBRATION_CASES = 3
#: Signals calibrated against the validation cases and their weights in the mean (``area_z`` as |z|).
CALIBRATED_WEIGHTS = {"entropy_fg": 1.0, "entropy_boundary": 0.5, "doubt": 1.0, "area_z": 1.0}
#: The calibration's file beside a checkpoint.
CALIBRATION_FILE = "risk_calibration.json"


def tail(values: Sequence[float], value: float) -> float:
    """Share of the sorted ``values`` below ``value``, ties counting half: 0.0 at or below the
    smallest (all tied: 0.5), 1.0 above the largest."""
    lo = int(np.searchsorted(values, value, side="left"))
    hi = int(np.searchsorted(values, value, side="right"))
    return (lo + hi) / (2 * len(values))


def calibrated_mean(tails: Mapping[str, float]) -> float:
    """The weighted mean of a case's signal tails (:data:`CALIBRATED_WEIGHTS`); 0.0 with none."""
    weight = sum(CALIBRATED_WEIGHTS[s] for s in tails)
    return sum(CALIBRATED_WEIGHTS[s] * t for s, t in tails.items()) / weight if weight else 0.0


@dataclass(frozen=True)
class RiskCalibration:
    """The model's validation cases as the calibrated rule reads them (module docstring).

    Attributes:
        values: per calibrated signal, the sorted finite values of the validation cases.
        flag_risk: the 90th percentile of the validation cases' leave-one-out risks.
        cases: how many validation cases it was built from.
        dice: their Dice (for the record: what the model scored on them).
    """

    values: tuple[tuple[str, tuple[float, ...]], ...]
    flag_risk: float
    cases: int
    dice: tuple[float, ...] = ()

    @classmethod
    def from_cases(
        cls, signals: Sequence[Mapping[str, float]], flags: Sequence[int], dice: Sequence[float] = ()
    ) -> RiskCalibration:
        """Built from each validation case's raw signals (:data:`CALIBRATED_WEIGHTS` keys, NaN when
        missing) and its number of raised flags.

        Raises:
            ValueError: fewer than :data:`MIN_CALIBRATION_CASES` cases.
        """
        if len(signals) < MIN_CALIBRATION_CASES:
            raise ValueError(f"a risk calibration needs {MIN_CALIBRATION_CASES} cases, got {len(signals)}")
        names = list(CALIBRATED_WEIGHTS)
        table = np.array([[float(s.get(n, math.nan)) for n in names] for s in signals], np.float64)

        def values_of(rows: np.ndarray) -> tuple[tuple[str, tuple[float, ...]], ...]:
            return tuple(
                (name, tuple(float(v) for v in np.sort(rows[:, j][np.isfinite(rows[:, j])])))
                for j, name in enumerate(names)
            )

        # each case scored against the others (leave one out), as a new case is against them all
        loo = [
            calibrated_mean(cls(values_of(np.delete(table, i, axis=0)), 0.0, 0).tails(dict(zip(names, table[i]))))
            + flags[i]
            for i in range(len(signals))
        ]
        return cls(
            values_of(table), float(np.quantile(loo, FLAG_QUANTILE)), len(signals), tuple(float(d) for d in dice)
        )

    def tails(self, signals: Mapping[str, float]) -> dict[str, float]:
        """Signal → tail, for each finite signal the calibration has values of."""
        out = {}
        for name, values in self.values:
            value = signals.get(name, math.nan)
            if values and not math.isnan(value):
                out[name] = tail(values, value)
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "values": {n: list(v) for n, v in self.values},
                "flag_risk": self.flag_risk,
                "cases": self.cases,
                "dice": list(self.dice),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> RiskCalibration:
        doc = json.loads(text)
        values = tuple((n, tuple(float(x) for x in v)) for n, v in doc["values"].items())
        return cls(values, float(doc["flag_risk"]), int(doc["cases"]), tuple(float(d) for d in doc.get("dice", ())))


@dataclass(frozen=True)
class RiskReference:
    """What the training data (fingerprint) and the validation cases (calibration) looked like:
    built once on the driver.

    Attributes:
        fg_image_fraction: share of labelled training images with foreground; None when unknown.
        class_image_fractions: (class, mean, std) of each class's per-image pixel share.
        intensity_range: training intensity (p0.5, p99.5); None when unknown.
        small_px: training objects' 5th-percentile size (px).
        max_objects: most objects in one training image; None when unknown.
        object_px: training objects' median size (px): ``doubt`` counts doubtful pixels against at
            least this much foreground; None when unknown.
        calibration: the validation cases' signals; None: the absolute rule.
    """

    fg_image_fraction: float | None = None
    class_image_fractions: tuple[tuple[int, float, float], ...] = ()
    intensity_range: tuple[float, float] | None = None
    small_px: float = DEFAULT_SMALL_PX
    max_objects: int | None = None
    object_px: float | None = None
    calibration: RiskCalibration | None = None

    @classmethod
    def from_fingerprint(cls, fp: Fingerprint | None) -> RiskReference:
        """The reference of a model's fingerprint (an empty one for None: only fingerprint-free signals)."""
        if fp is None:
            return cls()
        objects = fp.objects
        return cls(
            fg_image_fraction=fp.foreground_image_fraction if fp.n_labelled else None,
            class_image_fractions=tuple((c, m, s) for c, (m, s) in sorted(fp.class_image_fractions.items())),
            intensity_range=None if fp.intensity_all is None else (fp.intensity_all.p00_5, fp.intensity_all.p99_5),
            small_px=max(objects.size_p05, 1.0) if objects is not None and objects.size_p05 > 0 else DEFAULT_SMALL_PX,
            max_objects=None if objects is None else objects.count_max,
            object_px=objects.size_median if objects is not None and objects.size_median > 0 else None,
        )

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, file_name: str) -> RiskReference:
        """The reference of the fingerprint a checkpoint folder holds as ``file_name`` (the train step
        writes ``fingerprint.json``) with the calibration beside it (:data:`CALIBRATION_FILE`); an
        empty one, logged, without a fingerprint (an older model)."""
        path = Path(model_dir) / file_name
        if not path.is_file():
            log.info("%s has no %s: the risk has no area z-scores, empty or intensity flags", model_dir, file_name)
            reference = cls()
        else:
            reference = cls.from_fingerprint(Fingerprint.from_json(path.read_text(encoding="utf-8")))
        calibration = Path(model_dir) / CALIBRATION_FILE
        if not calibration.is_file():
            log.info("%s has no %s: the risk follows the absolute rule", model_dir, CALIBRATION_FILE)
            return reference
        return replace(reference, calibration=RiskCalibration.from_json(calibration.read_text(encoding="utf-8")))

    @property
    def fractions(self) -> dict[int, tuple[float, float]]:
        """Class → (mean, std) of its per-image pixel share in training."""
        return {c: (m, s) for c, m, s in self.class_image_fractions}

    @property
    def flag_risk(self) -> float:
        """The review threshold this reference implies: the calibration's, or the absolute rule's 1.0."""
        return ABSOLUTE_FLAG_RISK if self.calibration is None else self.calibration.flag_risk


@dataclass(frozen=True)
class CaseRisk:
    """One case's risk signals (:mod:`segops.engine.risk`), its ``risk`` and reasons in words."""

    risk: float
    entropy_fg: float = float("nan")
    entropy_boundary: float = float("nan")
    doubt: float = float("nan")
    member_dice: float = float("nan")
    area_z: dict[int, float] = field(default_factory=dict)
    small_fragments: int = 0
    intensity_outside: float = float("nan")
    flag_empty: bool = False
    flag_fragments: bool = False
    flag_intensity: bool = False
    reasons: tuple[str, ...] = ()

    @property
    def worst_area_z(self) -> float:
        """The per-class area z-score largest in magnitude (NaN without any)."""
        return max(self.area_z.values(), key=abs, default=float("nan"))

    @property
    def flags(self) -> int:
        """How many flags are raised."""
        return int(self.flag_empty) + int(self.flag_fragments) + int(self.flag_intensity)

    def calibration_signals(self) -> dict[str, float]:
        """The signals the calibration reads (:data:`CALIBRATED_WEIGHTS`), NaN where missing."""
        return {
            "entropy_fg": self.entropy_fg,
            "entropy_boundary": self.entropy_boundary,
            "doubt": self.doubt,
            "area_z": abs(self.worst_area_z),
        }

    def row_fields(self) -> dict[str, Any]:
        """The risk columns of the case's result row (:data:`segops.engine.risk.RISK_COLUMNS`)."""
        return {
            "risk": self.risk,
            "entropy_fg": self.entropy_fg,
            "entropy_boundary": self.entropy_boundary,
            "doubt": self.doubt,
            "member_dice": self.member_dice,
            "area_z": self.worst_area_z,
            "small_fragments": float(self.small_fragments),
            "intensity_outside": self.intensity_outside,
            "flag_empty": self.flag_empty,
            "flag_fragments": self.flag_fragments,
            "flag_intensity": self.flag_intensity,
            "risk_reasons": "; ".join(self.reasons),
            "area_z_per_class": json.dumps({c: round(z, 4) for c, z in self.area_z.items()}),
        }


def combine(
    *,
    entropy_fg: float,
    entropy_boundary: float,
    doubt: float,
    member_dice: float,
    class_map: np.ndarray,
    pieces: np.ndarray,
    outside: float,
    reference: RiskReference,
    classes: int,
    members: str,
) -> CaseRisk:
    """The signals that need the training fingerprint, the flags, and the ``risk`` rule (module docstring).

    Args:
        pieces: sizes (px) of the prediction's connected pieces (instances).
    """
    fg_any = bool((class_map > 0).any())
    area_z = _area_z(class_map, reference, classes)
    small = int((pieces < reference.small_px).sum())
    limit = max(MIN_FRAGMENT_LIMIT, reference.max_objects or 0)
    flag_empty = not fg_any and reference.fg_image_fraction is not None and reference.fg_image_fraction >= EMPTY_RARE
    flag_fragments = small > limit
    flag_intensity = outside > INTENSITY_FLAG  # NaN compares False
    case = CaseRisk(
        risk=0.0,
        entropy_fg=entropy_fg,
        entropy_boundary=entropy_boundary,
        doubt=doubt,
        member_dice=member_dice,
        area_z=area_z,
        small_fragments=small,
        intensity_outside=outside,
        flag_empty=flag_empty,
        flag_fragments=flag_fragments,
        flag_intensity=flag_intensity,
    )
    area = _area_reason(case, class_map, reference)
    texts = {
        "entropy_fg": f"uncertain foreground (mean entropy {entropy_fg:.2f})",
        "entropy_boundary": f"uncertain boundary (mean entropy {entropy_boundary:.2f})",
        "doubt": f"background the model half-saw as foreground (doubt {doubt:.2f})",
    }
    terms: list[tuple[float, str]] = []
    if reference.calibration is not None:
        tails = reference.calibration.tails(case.calibration_signals())
        texts["area_z"] = area
        named = [(t, f"{texts[s]}, above {t:.0%} of validation cases") for s, t in tails.items()]
        terms.append((calibrated_mean(tails), ""))
        reasons = [(t, text) for t, text in named if t >= REASON_TAIL]
    else:
        terms += [
            (_zero(entropy_fg), texts["entropy_fg"]),
            (0.5 * _zero(entropy_boundary), texts["entropy_boundary"]),
            (_zero(doubt), texts["doubt"]),
        ]
        if area:
            terms.append((min(abs(case.worst_area_z), AREA_Z_CAP) / AREA_Z_CAP, area))
        reasons = [(t, text) for t, text in terms if t >= REASON_MIN]
    disagree = (1.0 - _one(member_dice), f"{members} disagree (pairwise Dice {member_dice:.2f})")
    flags = []
    if flag_empty:
        had = reference.fg_image_fraction
        flags.append((1.0, f"empty prediction, but {had:.0%} of training images had foreground"))
    if flag_fragments:
        flags.append((1.0, f"fragmented: {small} pieces under {reference.small_px:.0f} px (limit {limit})"))
    if flag_intensity:
        lo, hi = reference.intensity_range  # type: ignore[misc]
        flags.append((1.0, f"{outside:.0%} of pixels outside the training intensity range [{lo:.4g}, {hi:.4g}]"))
    terms += [disagree, *flags]
    reasons += [kv for kv in [disagree, *flags] if kv[0] >= REASON_MIN]
    return _with_risk(case, float(sum(t for t, _ in terms)), reasons)


def _with_risk(case: CaseRisk, risk: float, reasons: list[tuple[float, str]]) -> CaseRisk:
    ordered = tuple(text for _, text in sorted(reasons, key=lambda kv: -kv[0]))
    return replace(case, risk=risk, reasons=ordered)


def _area_reason(case: CaseRisk, class_map: np.ndarray, reference: RiskReference) -> str:
    """The area signal in words ("" without an area z-score)."""
    worst = max(case.area_z.items(), key=lambda kv: abs(kv[1]), default=None)
    if worst is None:
        return ""
    c, z = worst
    mean, std = reference.fractions[c]
    share = float((class_map == c).mean())
    return f"unusual area of class {c}: {share:.1%} of the image (training {mean:.1%} ± {std:.1%}, z = {z:+.1f})"


def _area_z(class_map: np.ndarray, reference: RiskReference, classes: int) -> dict[int, float]:
    """Class → z-score of its share of ``class_map`` against the training per-image distribution."""
    fractions = reference.fractions
    if not fractions:
        return {}
    counts = [np.count_nonzero(class_map == c) for c in range(classes)]  # faster than bincount on uint8
    out = {}
    for c in range(1, classes):
        if c in fractions:
            mean, std = fractions[c]
            out[c] = float((counts[c] / class_map.size - mean) / max(std, MIN_AREA_STD))
    return out


def _zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _one(value: float) -> float:
    return 1.0 if math.isnan(value) else value

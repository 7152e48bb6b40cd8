"""Connected-component postprocessing chosen on cross-validation, as nnU-Net v2 does (pure numpy).

nnU-Net v2 (``nnunetv2/postprocessing/remove_connected_components.py``, ``determine_postprocessing``)
tries "keep only the largest connected component" on its out-of-fold predictions and keeps a rule
only when it raises the mean Dice. We follow it and add candidates:

1. With more than one foreground class, all foreground classes as one region (rule ``cls`` 0,
   :data:`FOREGROUND`): keep its largest component if the mean foreground Dice rises strictly
   *and* no class's mean Dice falls (nnU-Net's defensive test). With one foreground class this
   step is the same as step 2 and is skipped.
2. Then, on the predictions as step 1 left them, each foreground class alone on its binary mask:
   candidates "largest" (nnU-Net) and "min_size" (remove components smaller than ``min_size``
   pixels/voxels; ours). Two kinds of size are tried:

   - 1/4 and 1/2 of the smallest true component seen, in the deciding cases' labels and in the
     training set when the caller knows it (``smallest_object``): sizes well below every real
     object, safe although a validation set of a few cases may hold none of the smallest objects.
   - **False alarms on clean cases**: when at least ``min_cases`` deciding cases hold the class and
     at least ``min_cases`` do not, one more than the largest component predicted in each clean case
     (rare defects: specks on every defect-free part, which "largest" keeps one of and sizes below
     thin true defects do not reach). These sizes come from predictions, so detections guard them:
     then no candidate may leave a case empty that holds the class and had it predicted.

   When at least ``min_cases`` cases hold the class and at least ``min_cases`` do not, a
   candidate's score is *balanced*: the mean of the class's mean Dice over the cases holding it and
   over the cases without it (a clean case scores 1 when left empty, else 0), so neither group
   outweighs the other (a validation set that is 90 % clean would otherwise reward removing
   everything); else it is the mean Dice over all cases. The candidate with the highest score wins
   (ties: "largest" first, then smaller sizes; a candidate that removes nothing in any case is
   skipped) and is applied only if its score is strictly above the score without it; otherwise
   "none". Removing pixels of one class changes no other class's mask, so classes are decided
   independently.

Dice follows :mod:`segops.metrics` (both empty → 1.0, one empty → 0.0), so the numbers match the
segment report's per-class Dice. Components are full-connectivity (8 in 2D, 26 in 3D), as nnU-Net's
``skimage.measure.label(connectivity=None)``; when the largest size is shared, every component of
that size is kept (as nnU-Net). A (Z, H, W) map is one 3D volume: decide and apply on maps of the
same dimensionality.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from segops.config.sources import IGNORE_LABEL
from segops.errors import CheckpointError, LabelError, LabelValueError, ShapeError
from segops.metrics import dice_score, without_ignored

logger = logging.getLogger(__name__)

#: ``ClassRule.cls`` of the rule over all foreground classes taken as one region.
FOREGROUND = 0
#: Key of the decision in a checkpoint's ``segops.json``.
META_KEY = "postprocess"
#: Fractions of the smallest true component seen that make the min_size candidates.
MIN_SIZE_FRACTIONS = (0.25, 0.5)
#: Cases whose truth holds a class that a rule for it needs: a rule chosen on a couple of images is
#: noise that every later segment step would apply (nnU-Net decides on all training cases' out-of-fold predictions).
MIN_CASES = 5
_OPS = ("none", "largest", "min_size")

Op = Literal["none", "largest", "min_size"]


@dataclass(frozen=True)
class ClassRule:
    """The decision for one foreground class (or, ``cls`` 0, all foreground as one region).

    Attributes:
        cls: foreground class index (>= 1), or :data:`FOREGROUND` (0) for all foreground classes.
        op: ``"none"``, ``"largest"`` (keep the largest component) or ``"min_size"``.
        min_size: pixels/voxels; components smaller than this are removed (``op == "min_size"``).
        dice_before: mean Dice of this class over the cases, without the rule (for ``cls`` 0: the
            mean over foreground classes of their mean Dice).
        dice_after: with the rule (== ``dice_before`` for ``"none"``).
        candidate: the best candidate tried, ``"largest"`` or ``"min_size <n>"`` (the rule itself when
            applied); ``None`` when none was tried.
        dice_candidate: mean Dice with that candidate.
        empty_flagged_before: share of the deciding cases without the class that were given some of
            it, without the rule; None unless the score was balanced (see the module docstring),
            whose Dice values are then the balanced scores.
        empty_flagged_after: the same with the rule (== before for ``"none"``).
    """

    cls: int
    op: Op
    min_size: int | None
    dice_before: float
    dice_after: float
    candidate: str | None = None
    dice_candidate: float | None = None
    empty_flagged_before: float | None = None
    empty_flagged_after: float | None = None

    @property
    def applied(self) -> bool:
        return self.op != "none"

    def name(self) -> str:
        return "all foreground" if self.cls == FOREGROUND else f"class {self.cls}"

    def key(self) -> str:
        return "foreground" if self.cls == FOREGROUND else f"class{self.cls}"


@dataclass(frozen=True)
class Postprocessing:
    """Component rules chosen on cross-validation, applied in order to every later prediction.

    Attributes:
        rules: one per foreground class (after a :data:`FOREGROUND` rule when there are several).
        cases: how many out-of-fold / validation cases decided it.
        source: ``"out-of-fold"``, ``"validation"`` or ``"validation+training"``
            (:mod:`segops.cluster.postprocess_choice`).
    """

    rules: tuple[ClassRule, ...]
    cases: int
    source: str

    def apply(self, class_map: np.ndarray) -> np.ndarray:
        """The class map with the rules applied; removed pixels become 0 (background).

        Args:
            class_map: (H, W) or (Z, H, W) uint8 class map, 0 = background. Not modified.

        Returns:
            A new array of the same shape and dtype.
        """
        if class_map.ndim not in (2, 3):
            raise ShapeError(
                f"postprocessing takes an (H, W) or (Z, H, W) class map, got shape {class_map.shape}; "
                "squeeze the channel axis or pass one case at a time"
            )
        out = class_map.copy()
        for rule in self.rules:
            if rule.applied:
                mask = out > 0 if rule.cls == FOREGROUND else out == rule.cls
                out[mask & ~_keep_mask(mask, rule.op, rule.min_size)] = 0
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: ``{"source", "cases", "connectivity", "rules": [{...}, ...]}``."""
        return {
            "source": self.source,
            "cases": self.cases,
            "connectivity": "full",
            "rules": [
                {
                    "cls": r.cls,
                    "op": r.op,
                    "min_size": r.min_size,
                    "dice_before": r.dice_before,
                    "dice_after": r.dice_after,
                    "candidate": r.candidate,
                    "dice_candidate": r.dice_candidate,
                    "empty_flagged_before": r.empty_flagged_before,
                    "empty_flagged_after": r.empty_flagged_after,
                }
                for r in self.rules
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Postprocessing | None:
        """Inverse of :meth:`to_json`; None for None."""
        if d is None:
            return None
        try:
            rules = tuple(_rule_from_json(r) for r in d["rules"])
            return cls(rules=rules, cases=int(d["cases"]), source=str(d["source"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the stored postprocessing decision {d!r} cannot be read ({type(exc).__name__}: {exc}); "
                f"remove its '{META_KEY}' entry from segops.json to segment without postprocessing, "
                "or choose it again by retraining with cross-validation"
            ) from exc

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metrics: ``postprocess_cases`` and, per rule, ``postprocess_class<c>_`` (or
        ``postprocess_foreground_``) ``dice_before``, ``dice_after``, ``applied`` (0/1) and, for
        ``min_size`` rules, ``min_size``; with a balanced score, ``empty_flagged_before`` and
        ``empty_flagged_after``."""
        out: dict[str, float] = {"postprocess_cases": float(self.cases)}
        for r in self.rules:
            prefix = f"postprocess_{r.key()}"
            out[f"{prefix}_dice_before"] = r.dice_before
            out[f"{prefix}_dice_after"] = r.dice_after
            out[f"{prefix}_applied"] = float(r.applied)
            if r.op == "min_size" and r.min_size is not None:
                out[f"{prefix}_min_size"] = float(r.min_size)
            if r.empty_flagged_before is not None and r.empty_flagged_after is not None:
                out[f"{prefix}_empty_flagged_before"] = r.empty_flagged_before
                out[f"{prefix}_empty_flagged_after"] = r.empty_flagged_after
        return out

    def describe(self) -> str:
        """One line for logs, e.g. ``class 1: largest component (Dice 0.71 → 0.74); class 2: none
        (0.80, 0.79 with largest)``."""
        parts = []
        for r in self.rules:
            if r.applied:
                flagged = (
                    ""
                    if r.empty_flagged_before is None or r.empty_flagged_after is None
                    else f"; clean cases flagged {r.empty_flagged_before:.0%} → {r.empty_flagged_after:.0%}"
                )
                score = "balanced Dice" if r.empty_flagged_before is not None else "Dice"
                parts.append(
                    f"{r.name()}: {_op_text(r.op, r.min_size)} ({score} {r.dice_before:.2f} → {r.dice_after:.2f}"
                    f"{flagged})"
                )
            elif r.candidate is not None and r.dice_candidate is not None:
                parts.append(f"{r.name()}: none ({r.dice_before:.2f}, {r.dice_candidate:.2f} with {r.candidate})")
            else:
                parts.append(f"{r.name()}: none ({r.dice_before:.2f})")
        return "; ".join(parts)


def postprocessing_from_meta(meta: Mapping[str, Any]) -> Postprocessing | None:
    """The decision stored in a checkpoint's ``segops.json`` dict (``LoadedModel.meta``); None when absent."""
    return Postprocessing.from_json(meta.get(META_KEY))


def choose_postprocessing(
    predictions: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    classes: int,
    source: str = "out-of-fold",
    smallest_object: float | None = None,
    min_cases: int = MIN_CASES,
    clean_cases: bool = True,
) -> Postprocessing:
    """Decide the component rules on predictions with known truth (see the module docstring).

    Args:
        predictions: per case an (H, W) or (Z, H, W) integer class map, 0 = background.
        labels: the cases' truth, same shapes and order.
        classes: number of classes including background.
        source: where the predictions come from, ``"out-of-fold"`` or ``"validation"``.
        smallest_object: pixels/voxels of the smallest object known in the training labels (e.g.
            a low percentile of the fingerprint's object sizes); caps the min_size candidates.
        min_cases: a class (all foreground, for the all-foreground rule) must be in the truth of at
            least this many cases for any rule on it to be tried; otherwise its rule is "none".
        clean_cases: balance clean against holding cases and try the false-alarm sizes where the
            module docstring says; False: nnU-Net's candidates and the mean over all cases only
            (the baseline of ``benchmarks/postprocess.py``).
    """
    _check_inputs(predictions, labels, classes)
    pairs = [without_ignored(np.asarray(p), np.asarray(t)) for p, t in zip(predictions, labels)]  # ignore_void
    preds, truths = [p for p, _ in pairs], [t for _, t in pairs]
    rules: list[ClassRule] = []
    if classes > 2:
        fg_rule = _choose_foreground(preds, truths, classes)
        if sum(bool(t.any()) for t in truths) < min_cases:
            fg_rule = _too_few(fg_rule)
        rules.append(fg_rule)
        if fg_rule.applied:
            preds = [Postprocessing((fg_rule,), 0, source).apply(p) for p in preds]
    for c in range(1, classes):
        rule = _choose_class(preds, truths, c, smallest_object, min_cases, clean_cases)
        holding = sum(bool((t == c).any()) for t in truths)
        if holding < min_cases:
            logger.info(
                "postprocessing: class %d is in %d %s case(s), fewer than %d: none", c, holding, source, min_cases
            )
            rule = _too_few(rule)
        rules.append(rule)
    post = Postprocessing(rules=tuple(rules), cases=len(preds), source=source)
    logger.debug("postprocessing from %d %s cases: %s", post.cases, source, post.describe())
    return post


@dataclass(frozen=True)
class _CaseStats:
    """One case's predicted components and what they hold, for K scored classes.

    Attributes:
        sizes: (N,) pixels per component: what a rule selects on.
        pred: (K, N) pixels of each scored class per component.
        hits: (K, N) pixels of each scored class both predicted and true, per component.
        truth: (K,) true pixels of each scored class in the case.
    """

    sizes: np.ndarray
    pred: np.ndarray
    hits: np.ndarray
    truth: np.ndarray

    def dice(self, keep: np.ndarray) -> np.ndarray:
        """(K,) Dice per class when only the components where ``keep`` (N,) is True remain."""
        inter = self.hits[:, keep].sum(axis=1)
        denom = self.pred[:, keep].sum(axis=1) + self.truth
        safe = np.maximum(denom, 1)
        return np.where(denom == 0, 1.0, 2.0 * inter / safe)  # same expression as metrics.dice_score


def _case_stats(region: np.ndarray, pred: np.ndarray, truth: np.ndarray, scored: Sequence[int]) -> _CaseStats:
    """Components of the boolean ``region`` of ``pred``, with per-class counts for ``scored`` classes."""
    labels, n = _label(region)
    flat, tflat, pflat = labels.ravel(), truth.ravel(), pred.ravel()
    sizes = np.bincount(flat, minlength=n + 1)[1:]
    pred_counts, hit_counts, truth_counts = [], [], []
    for c in scored:
        in_c = pflat == c
        pred_counts.append(np.bincount(flat[in_c], minlength=n + 1)[1:])
        hit_counts.append(np.bincount(flat[in_c & (tflat == c)], minlength=n + 1)[1:])
        truth_counts.append(int(np.count_nonzero(tflat == c)))
    return _CaseStats(sizes, np.array(pred_counts), np.array(hit_counts), np.array(truth_counts))


def _too_few(rule: ClassRule) -> ClassRule:
    """``rule`` turned to "none" for want of cases (its Dice before is kept; nothing was tried)."""
    return ClassRule(rule.cls, "none", None, rule.dice_before, rule.dice_before)


def _choose_foreground(preds: list[np.ndarray], truths: list[np.ndarray], classes: int) -> ClassRule:
    """nnU-Net's step 1: largest component of all foreground; accepted only if the mean foreground
    Dice rises and no class's mean Dice falls."""
    scored = list(range(1, classes))
    before = _baseline(preds, truths, scored).mean(axis=0)  # (K,)
    stats = [_case_stats(p > 0, p, t, scored) for p, t in zip(preds, truths)]
    keeps = [_select(s.sizes, "largest", None) for s in stats]
    fg_before = float(before.mean())
    if all(k.all() for k in keeps):  # at most one component everywhere: nothing to try
        return ClassRule(FOREGROUND, "none", None, fg_before, fg_before)
    after = np.mean([s.dice(k) for s, k in zip(stats, keeps)], axis=0)
    fg_after = float(after.mean())
    accept = fg_after > fg_before and bool(np.all(after >= before))
    return ClassRule(
        cls=FOREGROUND,
        op="largest" if accept else "none",
        min_size=None,
        dice_before=fg_before,
        dice_after=fg_after if accept else fg_before,
        candidate="largest",
        dice_candidate=fg_after,
    )


def _choose_class(
    preds: list[np.ndarray],
    truths: list[np.ndarray],
    c: int,
    smallest_object: float | None = None,
    min_cases: int = MIN_CASES,
    clean_cases: bool = True,
) -> ClassRule:
    """Step 2 for class ``c``: the best of "largest" and the min_size candidates, if it beats none."""
    stats = [_case_stats(p == c, p, t, [c]) for p, t in zip(preds, truths)]
    holds = np.array([bool(s.truth[0] > 0) for s in stats])
    found = np.array([s.sizes.size > 0 for s in stats])  # the class predicted somewhere in the case
    balanced = clean_cases and _balanced(holds, min_cases)
    before = _score(np.array([s.dice(np.ones(s.sizes.shape, bool))[0] for s in stats]), holds, balanced)
    candidates: list[tuple[Op, int | None]] = [("largest", None)]
    sizes = set(_min_size_candidates(truths, c, smallest_object))
    if balanced:  # one more than each clean case's largest false alarm
        sizes |= {int(s.sizes.max()) + 1 for s, h, f in zip(stats, holds, found) if f and not h}
    candidates += [("min_size", m) for m in sorted(sizes)]
    best: tuple[Op, int | None] | None = None
    best_score, best_kept = -math.inf, found
    for op, size in candidates:
        keeps = [_select(s.sizes, op, size) for s in stats]
        if all(k.all() for k in keeps):
            continue  # removes nothing in any case: not a candidate
        kept = np.array([bool(k.any()) for k in keeps])
        if balanced and (holds & found & ~kept).any():
            continue  # a case holding the class, where it was found, would be left without it
        score = _score(np.array([s.dice(k)[0] for s, k in zip(stats, keeps)]), holds, balanced)
        if score > best_score:  # strict: ties keep the earlier candidate
            best, best_score, best_kept = (op, size), score, kept
    flagged = _flagged(found, holds) if balanced else None
    if best is None:
        return ClassRule(c, "none", None, before, before, None, None, flagged, flagged)
    label = _op_label(*best)
    if best_score > before:
        after = _flagged(best_kept, holds) if balanced else None
        return ClassRule(c, best[0], best[1], before, best_score, label, best_score, flagged, after)
    return ClassRule(c, "none", None, before, before, label, best_score, flagged, flagged)


def _balanced(holds: np.ndarray, min_cases: int) -> bool:
    """Whether at least ``min_cases`` cases hold the class and at least ``min_cases`` do not."""
    return int(holds.sum()) >= min_cases and int((~holds).sum()) >= min_cases


def _score(dice: np.ndarray, holds: np.ndarray, balanced: bool) -> float:
    """A candidate's score from its (cases,) Dice: the mean of the two groups' means when
    ``balanced``, else the mean over all cases."""
    if not balanced:
        return float(np.mean(dice))
    return float(0.5 * np.mean(dice[holds]) + 0.5 * np.mean(dice[~holds]))


def _flagged(given: np.ndarray, holds: np.ndarray) -> float:
    """Share of the cases without the class that were ``given`` some of it."""
    return float(given[~holds].mean())


def _baseline(preds: list[np.ndarray], truths: list[np.ndarray], scored: Sequence[int]) -> np.ndarray:
    """(cases, K) Dice without postprocessing, by :func:`segops.metrics.dice_score`."""
    return np.array([[dice_score(p == c, t == c) for c in scored] for p, t in zip(preds, truths)])


def _min_size_candidates(truths: list[np.ndarray], c: int, smallest_object: float | None) -> list[int]:
    """:data:`MIN_SIZE_FRACTIONS` of the smallest true component of class ``c`` (or of
    ``smallest_object``, if smaller), each >= 2 (every component has at least 1 pixel, so 1
    would remove nothing); none when the labels hold no component of the class."""
    sizes = [np.bincount(lab.ravel())[1:] for lab, _ in (_label(t == c) for t in truths)]
    all_sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    if all_sizes.size == 0:
        return []
    smallest = float(all_sizes.min())
    if smallest_object is not None and smallest_object > 0:
        smallest = min(smallest, float(smallest_object))
    return sorted({m for m in (math.ceil(f * smallest) for f in MIN_SIZE_FRACTIONS) if m >= 2})


def _select(sizes: np.ndarray, op: str, min_size: int | None) -> np.ndarray:
    """(N,) which components a rule keeps, given their (N,) sizes."""
    if op == "largest":
        return sizes == sizes.max() if sizes.size else np.zeros(0, bool)
    if op == "min_size":
        return sizes >= (min_size or 0)
    return np.ones(sizes.shape, bool)


def _keep_mask(mask: np.ndarray, op: str, min_size: int | None) -> np.ndarray:
    """Boolean mask of the pixels of ``mask`` that the rule keeps."""
    labels, n = _label(mask)
    keep = np.zeros(n + 1, bool)
    keep[1:] = _select(np.bincount(labels.ravel(), minlength=n + 1)[1:], op, min_size)
    return keep[labels]


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Full-connectivity components (8-connected in 2D, 26 in 3D), as nnU-Net."""
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    return labels, int(n)


def _op_label(op: str, min_size: int | None) -> str:
    return f"min_size {min_size}" if op == "min_size" else op


def _op_text(op: str, min_size: int | None) -> str:
    return f"remove components < {min_size} px" if op == "min_size" else "largest component"


def _rule_from_json(r: Mapping[str, Any]) -> ClassRule:
    op = r["op"]
    if op not in _OPS:
        raise ValueError(f"op {op!r} is not one of {', '.join(_OPS)}")
    min_size = None if r.get("min_size") is None else int(r["min_size"])
    if op == "min_size" and min_size is None:
        raise ValueError("a min_size rule needs its min_size")
    dice_candidate = r.get("dice_candidate")
    flagged = [None if r.get(k) is None else float(r[k]) for k in ("empty_flagged_before", "empty_flagged_after")]
    return ClassRule(
        cls=int(r["cls"]),
        op=op,
        min_size=min_size,
        dice_before=float(r["dice_before"]),
        dice_after=float(r["dice_after"]),
        candidate=r.get("candidate"),
        dice_candidate=None if dice_candidate is None else float(dice_candidate),
        empty_flagged_before=flagged[0],
        empty_flagged_after=flagged[1],
    )


def _check_inputs(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray], classes: int) -> None:
    if classes < 2:
        raise LabelValueError(
            f"postprocessing needs classes >= 2 (background and at least one foreground class), got {classes}"
        )
    if len(predictions) != len(labels) or not predictions:
        raise LabelError(
            f"postprocessing is chosen on predictions with their labels: got {len(predictions)} predictions "
            f"and {len(labels)} labels; pass at least one case, each with its label"
        )
    for i, (p, t) in enumerate(zip(predictions, labels)):
        if np.shape(p) != np.shape(t) or np.ndim(p) not in (2, 3):
            raise ShapeError(
                f"case {i}: prediction shape {np.shape(p)} and label shape {np.shape(t)} must be the same "
                "(H, W) or (Z, H, W)"
            )
        top = int(np.max(t, where=np.asarray(t) != IGNORE_LABEL, initial=0))  # ignored pixels are no class
        if top >= classes or (np.size(t) and int(np.min(t)) < 0):
            raise LabelValueError(
                f"case {i}: label values must be classes 0..{classes - 1}, found {top}; "
                "map the labels to the model's classes first"
            )

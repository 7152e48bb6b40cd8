"""Per-case overlap metrics and their aggregation (pure numpy).

Empty-mask conventions (as in nnU-Net's evaluation, and MONAI's ``ignore_empty=False``):
- truth and prediction both empty for a class → Dice = IoU = 1.0 (perfect agreement);
- exactly one of them empty → Dice = IoU = 0.0.
A case's Dice/IoU is the mean over the foreground classes its truth or prediction holds (nnU-Net's
NaN for a class absent from both, left out of the mean), and 1.0 where neither holds any: a
photo holding 2 of 20 classes, predicted empty, scores 0, not the 0.9 that counting the 18
absent classes as perfect would give. With one foreground class this is the plain Dice.
Pixels whose truth is :data:`~segops.config.sources.IGNORE_LABEL` (mask-png ``ignore_void``)
are left out of every score, as nnU-Net's and torchvision's evaluations leave them out.

For the ISBI 2012 challenge's error measures (as reported in the U-Net paper) see
:func:`pixel_error` and :func:`rand_error`; both take the hard (argmax) segmentation, where
the challenge took the best over thresholds of a probability map.
"""

from __future__ import annotations

import numpy as np

from segops.config.sources import IGNORE_LABEL
from segops.errors import ShapeError

#: The run metrics people look at first, in the order they are shown: the CLI's run summary (its
#: ``segment_`` keys), an audit's terminal view, and the source-run metrics kept beside each model
#: version. ``heldout`` figures are over the test split (touched by nothing before the segment step),
#: ``val`` figures over the validation split (it chose the checkpoint, so they flatter the model);
#: the plain ones over every labelled case, trained-on ones included. Foreground Dice comes before the
#: plain mean: on mostly empty data the plain mean is high even for a model that predicts nothing.
HEADLINE_METRICS = (
    "best_val_dice",
    "best_val_mask_ap",
    "cv_fg_dice_mean",
    "cv_dice_mean",
    "segment_heldout_cases",
    "segment_heldout_fg_dice_mean",
    "segment_heldout_dice_mean",
    "segment_heldout_iou_mean",
    "segment_heldout_empty_flagged",
    "segment_heldout_fg_missed",
    "segment_heldout_mask_ap",
    "segment_heldout_mask_ap50",
    "segment_heldout_instance_f1",
    "segment_val_cases",
    "segment_val_fg_dice_mean",
    "segment_val_dice_mean",
    "segment_val_empty_flagged",
    "segment_val_mask_ap50",
    "segment_labelled_cases",
    "segment_fg_dice_mean",
    "segment_dice_mean",
    "segment_empty_flagged",
    "segment_fg_missed",
    "segment_outputs",
    "segment_failed",
    "segment_images_per_s",
    "evaluate_cases",
    "evaluate_champion_dice_mean",
    "evaluate_challenger_dice_mean",
    "evaluate_dice_gain",
    "evaluate_dice_gain_ci_low",
    "evaluate_dice_gain_ci_high",
    "promote_passed",
)


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice = 2|P∩T| / (|P|+|T|) of two boolean masks of equal shape."""
    _check_same_shape(pred, truth)
    p, t = pred.astype(bool), truth.astype(bool)
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def iou_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU (Jaccard) = |P∩T| / |P∪T| of two boolean masks of equal shape."""
    _check_same_shape(pred, truth)
    p, t = pred.astype(bool), truth.astype(bool)
    union = int(np.logical_or(p, t).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, t).sum()) / union


def case_scores(pred: np.ndarray, truth: np.ndarray, classes: int) -> dict[str, float]:
    """Dice and IoU per foreground class and their means for one case.

    Args:
        pred, truth: (H, W) integer class maps, 0 = background.
        classes: number of classes including background.

    Returns:
        ``{"dice": mean, "iou": mean, "dice_1": ..., "iou_1": ..., ...}``: per class (1.0 where
        both are empty), and their means over the classes either holds (1.0 where neither holds any).
    """
    _check_same_shape(pred, truth)
    error = pixel_error(pred, truth)
    pred, truth = without_ignored(pred, truth)
    scores: dict[str, float] = {}
    held = []
    for c in range(1, classes):
        p, t = pred == c, truth == c
        scores[f"dice_{c}"] = dice_score(p, t)
        scores[f"iou_{c}"] = iou_score(p, t)
        if p.any() or t.any():
            held.append(c)
    scores["dice"] = float(np.mean([scores[f"dice_{c}"] for c in held])) if held else 1.0
    scores["iou"] = float(np.mean([scores[f"iou_{c}"] for c in held])) if held else 1.0
    scores["pixel_error"] = error
    return scores


def without_ignored(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``truth`` (class maps) as background where the truth is ignored."""
    if not (ignored := truth == IGNORE_LABEL).any():
        return pred, truth
    return np.where(ignored, 0, pred).astype(pred.dtype), np.where(ignored, 0, truth).astype(truth.dtype)


def pixel_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels whose class differs: 1 − pixel accuracy (ISBI 2012's pixel error);
    ignored pixels count neither way."""
    _check_same_shape(pred, truth)
    keep = truth != IGNORE_LABEL
    return float(np.mean(pred[keep] != truth[keep])) if keep.any() else 0.0


def rand_error(pred: np.ndarray, truth: np.ndarray, boundary_class: int) -> float:
    """ISBI 2012 foreground-restricted Rand error of a boundary segmentation.

    Regions are the 4-connected components of the pixels that are not ``boundary_class``
    (cells separated by membranes), in the truth and in the prediction. The error is
    1 − the Rand F-score of the two region maps, counting only pixels inside a true region
    (true boundary pixels are ignored; pixels predicted as boundary count as one more region):
    scikit-image's ``adapted_rand_error``, the foreground-restricted Rand scoring the challenge
    adopted (Arganda-Carreras et al. 2015). 0 is perfect.
    """
    from skimage.measure import label as connected_regions
    from skimage.metrics import adapted_rand_error

    _check_same_shape(pred, truth)
    true_regions = connected_regions(truth != boundary_class, connectivity=1)
    pred_regions = connected_regions(pred != boundary_class, connectivity=1)
    if not true_regions.any():
        return float("nan")  # nothing to score: every true pixel is boundary
    error, _, _ = adapted_rand_error(true_regions, pred_regions)
    return float(error)


def summarize(values: np.ndarray | list[float], prefix: str) -> dict[str, float]:
    """Mean, median and 5th percentile of finite values, keyed ``<prefix>_mean`` etc."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {}
    return {
        f"{prefix}_mean": float(arr.mean()),
        f"{prefix}_median": float(np.median(arr)),
        f"{prefix}_p5": float(np.percentile(arr, 5)),
    }


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"prediction shape {a.shape} differs from ground truth shape {b.shape}")

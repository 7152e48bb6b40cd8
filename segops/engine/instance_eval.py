"""Instance evaluation shared by training validation and the segment step.

Each image becomes one small, picklable *entry* (its ground truth and predictions as COCO
RLE), so entries can be gathered across DDP ranks or collected from inference actors and
scored together: mask AP is a property of the whole set, not an average over images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segops.data.instances import split_instances
from segops.instance_metrics import coco_annotations, coco_results, mask_ap, match_instances


def eval_entry(
    image_id: int, masks: np.ndarray, scores: np.ndarray, classes: np.ndarray, label: np.ndarray
) -> dict[str, Any]:
    """One image's ground truth (from an instance label map) and predictions, COCO-encoded.

    Args:
        masks: (N, H, W) bool predicted instance masks; scores, classes: (N,).
        label: (H, W) instance label map (class * 65536 + k).
    """
    return _entry(image_id, masks, scores, classes, label, *split_instances(label))


def evaluate_instances(
    image_id: int, masks: np.ndarray, scores: np.ndarray, classes: np.ndarray, label: np.ndarray
) -> tuple[dict[str, Any], dict[str, float]]:
    """:func:`eval_entry` and :func:`case_instance_scores` of one image, splitting its label once."""
    gt_masks, gt_classes = split_instances(label)
    entry = _entry(image_id, masks, scores, classes, label, gt_masks, gt_classes)
    return entry, match_instances(masks, gt_masks, 0.5, classes, gt_classes)


def _entry(
    image_id: int,
    masks: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    label: np.ndarray,
    gt_masks: np.ndarray,
    gt_classes: np.ndarray,
) -> dict[str, Any]:
    h, w = label.shape
    return {
        "image": {"id": int(image_id), "height": int(h), "width": int(w)},
        "gt": coco_annotations(int(image_id), gt_masks, gt_classes),
        "dt": coco_results(int(image_id), masks, scores, classes),
    }


def case_instance_scores(masks: np.ndarray, classes: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Per-image matched-instance counts and overlap (class-aware, IoU ≥ 0.5)."""
    gt_masks, gt_classes = split_instances(label)
    return match_instances(masks, gt_masks, 0.5, classes, gt_classes)


def entries_ap(entries: list[dict[str, Any]], classes: int) -> dict[str, float]:
    """Mask AP / AP50 / AP75 over every entry (image ids must be unique; ``mask_ap`` renumbers
    annotation ids itself)."""
    images = [entry["image"] for entry in entries]
    annotations = [ann for entry in entries for ann in entry["gt"]]
    results = [res for entry in entries for res in entry["dt"]]
    return mask_ap(images, annotations, results, list(range(1, classes)))

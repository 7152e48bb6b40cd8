"""Instance-segmentation metrics: COCO RLE masks, mask AP (pycocotools) and per-image matching.

Two views of the same predictions:
- :func:`mask_ap` — COCO mask AP / AP50 / AP75 over a *set* of images (detections of all images
  are ranked together by score, so it is not an average of per-image values);
- :func:`match_instances` — one image: optimal one-to-one matching at IoU ≥ threshold, giving
  TP/FP/FN counts and the mean IoU/Dice of matched pairs for the per-case report.

Empty-image conventions of :func:`match_instances` follow :mod:`segops.metrics` (nnU-Net style):
``f1 = 2TP / (2TP + FP + FN)`` is the Dice of the two *sets* of instances, so an image with neither
predictions nor ground truth scores precision = recall = f1 = 1.0, and a rate whose denominator is
0 while the other side is not empty is 0.0. All three are therefore finite on every image and an
archive mean counts every image; for a pooled (micro) rate, sum ``tp``/``fp``/``fn`` instead.
``matched_iou``/``matched_dice`` are means over matched pairs: NaN when nothing matched, which
:func:`segops.metrics.summarize` drops, so their archive mean is over images with a match.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment

from segops.errors import LabelError, SegopsError, ShapeError

logger = logging.getLogger(__name__)

#: COCO's detection limits per image; AP/AP50/AP75 use the last one (the 100 highest scores),
#: raised to the most ground-truth instances of an image where a dense image holds more.
MAX_DETS = (1, 10, 100)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) mask (nonzero = foreground) → COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    if mask.ndim != 2:
        raise ShapeError(f"expected an (H, W) mask, got shape {mask.shape}")
    return _encode_stack(mask[None])[0]


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO compressed RLE (``counts`` as str or bytes) → (H, W) bool mask, C-ordered."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    mask = mask_utils.decode({"size": [int(s) for s in rle["size"]], "counts": counts})
    return np.ascontiguousarray(mask, dtype=bool)


def coco_results(image_id: int, masks: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> list[dict[str, Any]]:
    """Predicted instances of one image → COCO *results* entries (JSON-serialisable).

    Args:
        masks: (N, H, W) bool; scores: (N,) confidences; classes: (N,) category ids.

    Returns:
        One ``{"image_id", "category_id", "segmentation" (RLE), "score", "bbox" [x, y, w, h],
        "area"}`` per instance, in input order (bbox and area in pixels).
    """
    rles, boxes, areas = _encode_with_geometry(masks, scores=scores, classes=classes)
    return [
        {
            "image_id": int(image_id),
            "category_id": int(cls),
            "segmentation": rle,
            "score": float(score),
            "bbox": box,
            "area": area,
        }
        for rle, box, area, score, cls in zip(rles, boxes, areas, scores, classes)
    ]


def coco_annotations(image_id: int, masks: np.ndarray, classes: np.ndarray, first_id: int = 1) -> list[dict[str, Any]]:
    """Ground-truth instances of one image → COCO annotations with ids ``first_id, first_id + 1, ...``.

    Args:
        masks: (N, H, W) bool; classes: (N,) category ids. COCOeval needs ids > 0 and unique.
    """
    rles, boxes, areas = _encode_with_geometry(masks, classes=classes)
    return [
        {
            "id": first_id + k,
            "image_id": int(image_id),
            "category_id": int(cls),
            "segmentation": rle,
            "area": area,
            "bbox": box,
            "iscrowd": 0,
        }
        for k, (rle, box, area, cls) in enumerate(zip(rles, boxes, areas, classes))
    ]


def mask_ap(
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    results: list[dict[str, Any]],
    categories: list[int],
) -> dict[str, float]:
    """COCO mask AP over a set of images (pycocotools COCOeval, ``iouType="segm"``).

    ``ap`` averages over IoU 0.50:0.05:0.95, ``ap50``/``ap75`` at one IoU; all use COCO's
    101-point interpolated precision, area range "all" and at most ``MAX_DETS[-1]`` (100)
    highest-scoring predictions per image, or as many as the image of the set with the most
    ground-truth instances holds (a confluent cell image of 1,600 cells would otherwise cap
    recall at 100/1600 for a perfect model). The limit depends on the ground truth only, so
    models scored on the same cases are scored alike. Categories without ground truth are left out of the
    mean (COCO's rule); with no ground truth at all every value is NaN. No results with ground
    truth present gives 0.0. Annotation and result ids are renumbered 1.. internally; the inputs
    are not modified.

    Args:
        images: ``{"id", "height", "width"}`` of every evaluated image, with or without instances.
        annotations: ground truth as from :func:`coco_annotations` (crowd regions allowed).
        results: predictions as from :func:`coco_results`.
        categories: category ids to evaluate.

    Raises:
        LabelError: an annotation or result names an image or category not listed.
    """
    image_ids = {int(img["id"]) for img in images}
    _check_references("annotation", annotations, image_ids, set(categories))
    _check_references("result", results, image_ids, set(categories))
    gt_anns = [_eval_annotation(ann, k) for k, ann in enumerate(annotations, start=1)]
    # Not COCO.loadRes: it fails on an empty list, and for results that carry a bbox it sets
    # area to the box area. Results are indexed like the ground truth, with their mask area.
    dt_anns = [{**res, "id": k, "iscrowd": 0, "area": _rle_area(res)} for k, res in enumerate(results, start=1)]
    per_image = Counter(int(ann["image_id"]) for ann in gt_anns)
    max_dets = max(MAX_DETS[-1], *per_image.values()) if per_image else MAX_DETS[-1]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress with print()
        evaluator = COCOeval(_coco(images, gt_anns, categories), _coco(images, dt_anns, categories), iouType="segm")
        evaluator.params.maxDets = [*MAX_DETS[:-1], max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
    scores = {"ap": _precision_mean(evaluator), "ap50": _precision_mean(evaluator, 0.5)}
    scores["ap75"] = _precision_mean(evaluator, 0.75)
    logger.debug(
        "COCOeval over %d images, %d annotations, %d results (at most %d per image): %s",
        len(images),
        len(gt_anns),
        len(dt_anns),
        max_dets,
        scores,
    )
    return scores


def _precision_mean(evaluator: COCOeval, iou: float | None = None) -> float:
    """COCOeval.summarize's AP: the mean interpolated precision over IoU thresholds (or the one
    at ``iou``), recall points and categories with ground truth, area range "all", the last
    ``maxDets``; NaN where no category has ground truth (COCO's -1). Computed here because
    ``summarize`` reads its AP at a hard-coded 100 detections."""
    precision = evaluator.eval["precision"]  # (IoU thresholds, recall points, categories, areas, maxDets)
    if iou is not None:
        precision = precision[np.isclose(evaluator.params.iouThrs, iou)]
    values = precision[..., evaluator.params.areaRngLbl.index("all"), -1]
    values = values[values > -1]
    return float(np.mean(values)) if values.size else float("nan")


def match_instances(
    pred_masks: np.ndarray,
    gt_masks: np.ndarray,
    iou_threshold: float = 0.5,
    pred_classes: np.ndarray | None = None,
    gt_classes: np.ndarray | None = None,
) -> dict[str, float]:
    """Optimal one-to-one matching of predicted to ground-truth instances of one image.

    A pair may match when its IoU ≥ ``iou_threshold`` and, if classes are given, the classes are
    equal. The matching has the most pairs possible and, among those, the highest total IoU
    (Hungarian algorithm); greedy highest-IoU-first can match fewer when thresholds ≤ 0.5 or
    instances overlap. Empty-image conventions: see the module docstring.

    Args:
        pred_masks, gt_masks: (N, H, W) and (M, H, W) bool; N or M may be 0. An empty mask
            matches nothing.
        iou_threshold: in (0, 1].
        pred_classes, gt_classes: (N,) and (M,) class ids, both or neither.

    Returns:
        ``{"tp", "fp", "fn"}`` as ints; ``"matched_iou"``, ``"matched_dice"`` (means over matched
        pairs, NaN if none), ``"precision"``, ``"recall"``, ``"f1"`` as floats.

    Raises:
        ShapeError: the stacks are not (N, H, W) of the same H, W, or classes do not fit them.
    """
    _check_stacks(pred_masks, gt_masks)
    if not 0.0 < iou_threshold <= 1.0:
        raise SegopsError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if (pred_classes is None) != (gt_classes is None):
        raise SegopsError("give pred_classes and gt_classes together, or neither for class-agnostic matching")
    iou = _iou_matrix(pred_masks, gt_masks)
    allowed = iou >= iou_threshold
    if pred_classes is not None and gt_classes is not None:
        pc = _check_classes(pred_classes, len(pred_masks), "pred_classes")
        gc = _check_classes(gt_classes, len(gt_masks), "gt_classes")
        allowed &= pc[:, None] == gc[None, :]
    rows, cols = _optimal_pairs(iou, allowed)
    matched = iou[rows, cols]
    tp, fp, fn = len(matched), len(pred_masks) - len(matched), len(gt_masks) - len(matched)
    nothing = len(pred_masks) == 0 and len(gt_masks) == 0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "matched_iou": float(matched.mean()) if tp else float("nan"),
        # Dice = 2I/(|P|+|G|) = 2 IoU / (1 + IoU) for the same pair
        "matched_dice": float((2 * matched / (1 + matched)).mean()) if tp else float("nan"),
        "precision": _rate(tp, tp + fp, nothing),
        "recall": _rate(tp, tp + fn, nothing),
        "f1": _rate(2 * tp, 2 * tp + fp + fn, nothing),
    }


def _encode_stack(masks: np.ndarray) -> list[dict[str, Any]]:
    """(N, H, W) masks → N compressed RLEs with str counts."""
    if len(masks) == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks, 0, -1).astype(np.uint8)))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def _encode_with_geometry(
    masks: np.ndarray, **per_instance: np.ndarray
) -> tuple[list[dict[str, Any]], list[list[float]], list[float]]:
    """RLEs, [x, y, w, h] boxes and pixel areas of an (N, H, W) stack; checks (N,) companions."""
    if masks.ndim != 3:
        raise ShapeError(f"expected (N, H, W) instance masks, got shape {masks.shape}")
    for name, values in per_instance.items():
        _check_classes(values, len(masks), name)
    rles = _encode_stack(masks)
    if not rles:
        return [], [], []
    boxes = mask_utils.toBbox(rles).reshape(-1, 4)
    # the masks' own pixel counts: pycocotools' area() of more than 255 RLEs at once overflows a
    # uint8 under numpy 2 (pycocotools 2.0.11), which a dense image's instances reach
    areas = masks.reshape(len(masks), -1).sum(axis=1, dtype=np.int64)
    return rles, [[float(v) for v in box] for box in boxes], [float(a) for a in areas]


def _check_classes(values: np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ShapeError(f"{name} has shape {arr.shape}; expected ({n},), one value per mask")
    return arr


def _check_stacks(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[1:] != gt.shape[1:]:
        raise ShapeError(
            f"pred_masks shape {pred.shape} and gt_masks shape {gt.shape} must both be (N, H, W) with the same H, W"
        )


def _iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, M) IoU of every predicted/ground-truth pair, computed on RLEs like COCOeval does."""
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros((len(pred), len(gt)))
    iou = mask_utils.iou(_encode_stack(pred), _encode_stack(gt), [0] * len(gt))
    return np.asarray(iou, dtype=float).reshape(len(pred), len(gt))


def _optimal_pairs(iou: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the largest matching within ``allowed``, highest total IoU on ties."""
    rows, cols = np.flatnonzero(allowed.any(axis=1)), np.flatnonzero(allowed.any(axis=0))
    if len(rows) == 0:
        return rows, cols
    sub_iou, sub_allowed = iou[np.ix_(rows, cols)], allowed[np.ix_(rows, cols)]
    # Each allowed pair is worth 1, so more pairs always win; the IoU term adds at most
    # min(N, M) / (2 min(N, M)) = 0.5 < 1 in total, so it only breaks ties between equal counts.
    weight = sub_allowed * (1.0 + sub_iou / (2 * min(sub_iou.shape)))
    r, c = linear_sum_assignment(weight, maximize=True)
    keep = sub_allowed[r, c]
    return rows[r[keep]], cols[c[keep]]


def _rate(numerator: int, denominator: int, nothing: bool) -> float:
    if denominator == 0:
        return 1.0 if nothing else 0.0
    return numerator / denominator


def _rle_area(ann: dict[str, Any]) -> float:
    rle = ann["segmentation"]
    counts = rle["counts"]
    return float(
        mask_utils.area({"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
    )


def _eval_annotation(ann: dict[str, Any], new_id: int) -> dict[str, Any]:
    """Copy of a ground-truth annotation with the fields COCOeval reads (it writes into them)."""
    out = {**ann, "id": new_id, "iscrowd": int(ann.get("iscrowd", 0))}
    if "area" not in out:
        out["area"] = _rle_area(ann)
    return out


def _check_references(kind: str, anns: list[dict[str, Any]], image_ids: set[int], categories: set[int]) -> None:
    for k, ann in enumerate(anns):
        if int(ann["image_id"]) not in image_ids:
            raise LabelError(f"{kind} {k} is for image_id {ann['image_id']}, which is not in images")
        if int(ann["category_id"]) not in categories:
            raise LabelError(
                f"{kind} {k} has category_id {ann['category_id']}; evaluated categories are {sorted(categories)}"
            )


def _coco(images: list[dict[str, Any]], anns: list[dict[str, Any]], categories: list[int]) -> COCO:
    """An indexed in-memory COCO dataset (no file)."""
    coco = COCO()
    coco.dataset = {
        "images": [dict(img) for img in images],
        "annotations": anns,
        "categories": [{"id": int(c), "name": str(c)} for c in categories],
    }
    coco.createIndex()
    return coco

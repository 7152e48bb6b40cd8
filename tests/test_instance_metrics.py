"""Instance metrics against real pycocotools: RLE round trips, mask AP on hand-made cases, matching."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest

from segops.errors import LabelError, SegopsError, ShapeError
from segops.instance_metrics import (
    coco_annotations,
    coco_results,
    decode_rle,
    encode_rle,
    mask_ap,
    match_instances,
)

H, W = 12, 17  # not square, so a transposed mask cannot pass


def _box(y0: int, y1: int, x0: int, x1: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """Bool mask with rows y0..y1-1 and columns x0..x1-1 set."""
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _image(image_id: int) -> dict:
    return {"id": image_id, "height": H, "width": W}


# --- RLE ---------------------------------------------------------------------------------------


def test_rle_round_trip_random_empty_and_full_masks() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.random((H, W)) < p for p in (0.1, 0.5, 0.9)]
    masks += [np.zeros((H, W), dtype=bool), np.ones((H, W), dtype=bool), _box(3, 5, 16, 17)]
    for mask in masks:
        rle = encode_rle(mask)
        assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
        restored = decode_rle(json.loads(json.dumps(rle)))
        assert restored.dtype == bool and restored.shape == (H, W)
        np.testing.assert_array_equal(restored, mask)


def test_decode_accepts_bytes_counts_and_encode_rejects_stacks() -> None:
    mask = _box(2, 6, 1, 9)
    rle = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle({**rle, "counts": rle["counts"].encode()}), mask)
    with pytest.raises(ShapeError, match=re.escape("(1, 12, 17)")):
        encode_rle(mask[None])


def test_coco_entries_carry_box_area_and_json_types() -> None:
    masks = np.stack([_box(2, 5, 3, 7), np.zeros((H, W), dtype=bool)])
    results = coco_results(7, masks, np.array([0.8, 0.1], dtype=np.float32), np.array([2, 1]))
    anns = coco_annotations(7, masks, np.array([2, 1]), first_id=5)
    json.dumps(results + anns)  # numpy scalars would fail here
    assert results[0]["bbox"] == [3.0, 2.0, 4.0, 3.0] and results[0]["area"] == 12.0
    assert results[0]["score"] == pytest.approx(0.8) and results[0]["category_id"] == 2
    assert results[1]["area"] == 0.0
    assert [a["id"] for a in anns] == [5, 6] and anns[0]["iscrowd"] == 0 and anns[1]["category_id"] == 1
    np.testing.assert_array_equal(decode_rle(anns[0]["segmentation"]), masks[0])
    assert coco_results(7, np.zeros((0, H, W), dtype=bool), np.zeros(0), np.zeros(0)) == []
    with pytest.raises(ShapeError, match=r"scores has shape \(1,\); expected \(2,\)"):
        coco_results(7, masks, np.array([0.5]), np.array([1, 1]))


# --- mask AP -----------------------------------------------------------------------------------


def test_ap_is_one_when_results_equal_ground_truth(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    images, annotations, results = [], [], []
    for image_id in (1, 2, 3):
        masks = np.stack([_box(y, y + 3, x, x + 4) for y, x in [(0, 0), (4, 5), (8, 12)]])
        classes = rng.integers(1, 3, size=len(masks))
        images.append(_image(image_id))
        annotations += coco_annotations(image_id, masks, classes, first_id=len(annotations) + 1)
        results += coco_results(image_id, masks, np.ones(len(masks)), classes)
    images.append(_image(4))  # an image with nothing on it changes nothing
    before = copy.deepcopy((images, annotations, results))
    ap = mask_ap(images, annotations, results, [1, 2])
    # COCO divides by tp + fp + eps, so "1.0" is 1 - 2e-16
    assert ap == pytest.approx({"ap": 1.0, "ap50": 1.0, "ap75": 1.0})
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed
    assert (images, annotations, results) == before  # COCOeval writes into what it is given


def _dense(n: int, side: int = 3) -> np.ndarray:
    """(n, S, S) disjoint ``side``-px squares on a grid: a confluent image of n cells."""
    per_row = math.ceil(math.sqrt(n))
    size = per_row * (side + 1)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        y, x = divmod(i, per_row)
        masks[i, y * (side + 1) : y * (side + 1) + side, x * (side + 1) : x * (side + 1) + side] = True
    return masks


def test_a_dense_image_scores_every_instance() -> None:
    """300 cells in one image, each predicted exactly: COCO's limit of 100 detections would cap
    recall at 1/3; the limit rises to the image's 300 instances, so the perfect model scores 1.
    (pycocotools' area() of more than 255 masks at once also overflowed under numpy 2.)"""
    masks = _dense(300)
    classes = np.ones(300, dtype=np.int64)
    annotations = coco_annotations(1, masks, classes)
    results = coco_results(1, masks, np.linspace(1.0, 0.5, 300), classes)
    assert [a["area"] for a in annotations] == [9.0] * 300 and [r["area"] for r in results] == [9.0] * 300
    image = {"id": 1, "height": masks.shape[1], "width": masks.shape[2]}
    assert mask_ap([image], annotations, results, [1]) == pytest.approx({"ap": 1.0, "ap50": 1.0, "ap75": 1.0})
    half = results[::2]  # every other cell found: recall 1/2 at precision 1
    assert mask_ap([image], annotations, half, [1])["ap50"] == pytest.approx(0.5, abs=0.01)


def test_ap_with_a_higher_scored_false_positive_is_known() -> None:
    # Two ground-truth objects A and B; predictions: a false positive (score 0.95) and A exactly
    # (score 0.9). Ranked by score: FP then TP → recall [0, 1/2], precision [0, 1/2], made
    # monotone from the right → [1/2, 1/2]. COCO samples precision at recall 0.00, 0.01, ..., 1.00:
    # the 51 points r ≤ 0.5 get 1/2 and the 50 points above (never reached) get 0, so
    # AP = 51 * 0.5 / 101 at every IoU threshold (IoUs are 1 and 0).
    a, b, fp = _box(0, 4, 0, 4), _box(6, 10, 0, 4), _box(0, 4, 10, 14)
    annotations = coco_annotations(1, np.stack([a, b]), np.array([1, 1]))
    results = coco_results(1, np.stack([fp, a]), np.array([0.95, 0.9]), np.array([1, 1]))
    expected = 25.5 / 101
    assert mask_ap([_image(1)], annotations, results, [1]) == pytest.approx(
        {"ap": expected, "ap50": expected, "ap75": expected}
    )
    # the same false positive ranked below the true positive costs nothing at recall ≤ 1/2
    results = coco_results(1, np.stack([fp, a]), np.array([0.5, 0.9]), np.array([1, 1]))
    assert mask_ap([_image(1)], annotations, results, [1])["ap"] == pytest.approx(51 / 101)


def test_ap50_and_ap75_differ_for_a_loose_mask() -> None:
    # GT is a 10x10 square; the prediction is 62 of its pixels (6 full rows + 2): IoU = 0.62.
    # It matches at IoU thresholds 0.50, 0.55, 0.60 (AP 1 each) and not at 0.65..0.95 (AP 0),
    # so AP = 3/10, AP50 = 1, AP75 = 0.
    gt = _box(0, 10, 0, 10)
    pred = _box(0, 6, 0, 10) | _box(6, 7, 0, 2)
    annotations = coco_annotations(1, gt[None], np.array([1]))
    results = coco_results(1, pred[None], np.array([0.7]), np.array([1]))
    assert mask_ap([_image(1)], annotations, results, [1]) == pytest.approx({"ap": 0.3, "ap50": 1.0, "ap75": 0.0})


def test_ap_without_results_is_zero_and_without_ground_truth_undefined() -> None:
    annotations = coco_annotations(1, _box(0, 4, 0, 4)[None], np.array([1]))
    assert mask_ap([_image(1), _image(2)], annotations, [], [1, 2]) == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    results = coco_results(1, _box(0, 4, 0, 4)[None], np.array([0.9]), np.array([1]))
    for res in (results, []):
        assert all(math.isnan(v) for v in mask_ap([_image(1)], [], res, [1]).values())


def test_ap_rejects_unknown_images_and_categories() -> None:
    results = coco_results(3, _box(0, 4, 0, 4)[None], np.array([0.9]), np.array([1]))
    with pytest.raises(LabelError, match="result 0 is for image_id 3, which is not in images"):
        mask_ap([_image(1)], [], results, [1])
    annotations = coco_annotations(1, _box(0, 4, 0, 4)[None], np.array([0]))
    with pytest.raises(LabelError, match=re.escape("annotation 0 has category_id 0; evaluated categories are [1]")):
        mask_ap([_image(1)], annotations, [], [1])


# --- matching ----------------------------------------------------------------------------------


def test_match_counts_and_overlap_on_hand_made_masks() -> None:
    a, b, c = _box(0, 4, 0, 4), _box(0, 4, 6, 10), _box(8, 12, 0, 4)
    b_shifted = _box(0, 4, 7, 11)  # 12 of B's 16 pixels: IoU 12/20 = 0.6, Dice 24/32 = 0.75
    stray = _box(8, 12, 12, 16)
    scores = match_instances(np.stack([a, b_shifted, stray]), np.stack([a, b, c]))
    # matched: (a, a) IoU 1 and (b_shifted, b) IoU 0.6; stray is FP, c is FN
    assert scores == pytest.approx(
        {
            "tp": 2,
            "fp": 1,
            "fn": 1,
            "matched_iou": 0.8,
            "matched_dice": 0.875,
            "precision": 2 / 3,
            "recall": 2 / 3,
            "f1": 2 / 3,
        }
    )
    assert all(isinstance(scores[k], int) for k in ("tp", "fp", "fn"))
    # at IoU ≥ 0.7 the shifted mask no longer matches
    assert match_instances(np.stack([a, b_shifted, stray]), np.stack([a, b, c]), 0.7)["tp"] == 1


def test_match_is_class_aware_when_classes_are_given() -> None:
    a, b = _box(0, 4, 0, 4), _box(6, 10, 6, 10)
    pred, gt = np.stack([a, b]), np.stack([a, b])
    scores = match_instances(pred, gt, pred_classes=np.array([1, 2]), gt_classes=np.array([1, 1]))
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 1, 1)
    assert match_instances(pred, gt)["tp"] == 2
    with pytest.raises(SegopsError, match="together"):
        match_instances(pred, gt, pred_classes=np.array([1, 2]))
    with pytest.raises(ShapeError, match=r"gt_classes has shape \(3,\); expected \(2,\)"):
        match_instances(pred, gt, pred_classes=np.array([1, 2]), gt_classes=np.array([1, 1, 1]))


def test_match_is_optimal_where_greedy_is_not() -> None:
    # One row, GT A = columns 0..9 and B = 10..19; P1 = columns 2..15, P2 = columns 0..3.
    # IoU(P1, A) = 8/16 = 0.5, IoU(P1, B) = 6/18 = 1/3, IoU(P2, A) = 4/10 = 0.4, IoU(P2, B) = 0.
    # At threshold 0.3, greedy takes the best pair (P1, A) first and strands P2 and B: 1 match.
    # The optimum is (P1, B) + (P2, A): 2 matches, Dice 2*6/24 = 0.5 and 2*4/14 = 4/7.
    row = (1, 20)
    gt = np.stack([_box(0, 1, 0, 10, row), _box(0, 1, 10, 20, row)])
    pred = np.stack([_box(0, 1, 2, 16, row), _box(0, 1, 0, 4, row)])
    scores = match_instances(pred, gt, iou_threshold=0.3)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 0, 0)
    assert scores["matched_iou"] == pytest.approx((1 / 3 + 0.4) / 2)
    assert scores["matched_dice"] == pytest.approx((0.5 + 4 / 7) / 2)


def test_match_empty_conventions() -> None:
    none = np.zeros((0, H, W), dtype=bool)
    two = np.stack([_box(0, 4, 0, 4), _box(6, 10, 6, 10)])
    both_empty = match_instances(none, none)
    assert (both_empty["tp"], both_empty["fp"], both_empty["fn"]) == (0, 0, 0)
    assert (both_empty["precision"], both_empty["recall"], both_empty["f1"]) == (1.0, 1.0, 1.0)
    assert math.isnan(both_empty["matched_iou"]) and math.isnan(both_empty["matched_dice"])
    missed, hallucinated = match_instances(none, two), match_instances(two, none)
    assert (missed["fn"], hallucinated["fp"]) == (2, 2)
    for scores in (missed, hallucinated):
        assert (scores["tp"], scores["precision"], scores["recall"], scores["f1"]) == (0, 0.0, 0.0, 0.0)
    # an empty predicted mask matches nothing, not even an empty ground-truth mask
    blank = np.zeros((1, H, W), dtype=bool)
    assert match_instances(blank, blank)["tp"] == 0


def test_match_shape_mismatch_names_both_shapes() -> None:
    pred, gt = np.zeros((2, 4, 5), dtype=bool), np.zeros((0, 4, 6), dtype=bool)
    with pytest.raises(ShapeError, match=re.escape("pred_masks shape (2, 4, 5) and gt_masks shape (0, 4, 6)")):
        match_instances(pred, gt)
    with pytest.raises(ShapeError, match=re.escape("gt_masks shape (4, 5)")):
        match_instances(pred, np.zeros((4, 5), dtype=bool))


def _most_pairs(ok: np.ndarray, used: frozenset[int] = frozenset()) -> int:
    """Largest matching in a boolean (N, M) pair table, by trying every assignment."""
    if ok.shape[1] == 0:
        return 0
    skip = _most_pairs(ok[:, 1:], used)
    take = [1 + _most_pairs(ok[:, 1:], used | {p}) for p in np.flatnonzero(ok[:, 0]) if p not in used]
    return max([skip, *take])


def test_match_count_equals_brute_force_maximum_on_random_masks() -> None:
    rng = np.random.default_rng(2)
    for _ in range(40):
        pred = rng.random((int(rng.integers(0, 5)), 4, 5)) < 0.5
        gt = rng.random((int(rng.integers(0, 5)), 4, 5)) < 0.5
        inter = (pred[:, None] & gt[None]).sum(axis=(2, 3))
        union = (pred[:, None] | gt[None]).sum(axis=(2, 3))
        iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
        scores = match_instances(pred, gt, iou_threshold=0.3)
        assert scores["tp"] == _most_pairs(iou >= 0.3)
        if scores["tp"]:  # matched pairs are real pairs at IoU ≥ 0.3
            assert 0.3 <= scores["matched_iou"] <= iou.max()

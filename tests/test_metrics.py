import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_iou

from segops.config.sources import IGNORE_LABEL
from segops.errors import ShapeError
from segops.metrics import case_scores, dice_score, iou_score, pixel_error, rand_error, summarize


def test_hand_computed_overlap() -> None:
    pred = np.zeros((4, 4), bool)
    truth = np.zeros((4, 4), bool)
    pred[0, :3] = True  # 3 pixels
    truth[0, 1:] = True  # 3 pixels, 2 shared
    assert dice_score(pred, truth) == pytest.approx(2 * 2 / 6)
    assert iou_score(pred, truth) == pytest.approx(2 / 4)


def test_empty_mask_conventions() -> None:
    empty, some = np.zeros((3, 3), bool), np.eye(3, dtype=bool)
    assert dice_score(empty, empty) == 1.0 and iou_score(empty, empty) == 1.0
    assert dice_score(some, empty) == 0.0 and iou_score(empty, some) == 0.0


def test_agrees_with_monai_on_non_empty_cases() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred, truth = rng.random((32, 32)) > 0.6, rng.random((32, 32)) > 0.5
        p = torch.from_numpy(pred)[None, None].float()
        t = torch.from_numpy(truth)[None, None].float()
        assert dice_score(pred, truth) == pytest.approx(compute_dice(p, t).item(), abs=1e-6)
        assert iou_score(pred, truth) == pytest.approx(compute_iou(p, t).item(), abs=1e-6)


def test_case_scores_average_foreground_classes() -> None:
    truth = np.array([[0, 1], [2, 2]])
    pred = np.array([[0, 1], [2, 0]])
    scores = case_scores(pred, truth, classes=3)
    assert scores["dice_1"] == 1.0 and scores["dice_2"] == pytest.approx(2 / 3)
    assert scores["dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["iou"] == pytest.approx((1 + 1 / 2) / 2)
    with pytest.raises(ShapeError, match=r"prediction shape \(2, 2\) differs from ground truth shape \(1, 2\)"):
        case_scores(pred, truth[:1], classes=3)


def test_summarize_skips_nan() -> None:
    stats = summarize([1.0, 0.5, float("nan"), 0.0], "dice")
    assert stats["dice_mean"] == pytest.approx(0.5) and stats["dice_median"] == pytest.approx(0.5)
    assert stats["dice_p5"] == pytest.approx(0.05)
    assert summarize([float("nan")], "x") == {}


def test_pixel_error_is_one_minus_accuracy() -> None:
    truth = np.zeros((4, 5), np.uint8)
    truth[1, :] = 1
    pred = truth.copy()
    pred[0, 0], pred[1, 4] = 1, 0  # 2 of 20 pixels wrong
    assert pixel_error(pred, truth) == pytest.approx(0.1)
    assert case_scores(pred, truth, 2)["pixel_error"] == pytest.approx(0.1)
    assert pixel_error(truth, truth) == 0.0


def test_rand_error_of_a_merge_by_hand() -> None:
    """Two cells split by a membrane column (class 1); the prediction misses the membrane.

    ISBI's foreground-restricted Rand: true membrane pixels are ignored, so n = 90 pixels
    (cells of 50 and 40). Pairs counted without self-pairs: precision = Σp_ij(p_ij−1) /
    Σb_j(b_j−1) = (50·49 + 40·39) / (90·89), recall = 1, error = 1 − F.
    """
    truth = np.zeros((10, 10), np.uint8)
    truth[:, 5] = 1
    merged = np.zeros_like(truth)
    precision = (50 * 49 + 40 * 39) / (90 * 89)
    assert rand_error(merged, truth, boundary_class=1) == pytest.approx(1 - 2 * precision / (precision + 1))
    assert rand_error(truth, truth, boundary_class=1) == 0.0
    # a thicker predicted membrane keeps the two cells apart: a small error (the true-cell pixels
    # predicted as membrane form one more region, as in scikit-image), far below the merge's
    thick = truth.copy()
    thick[:, 4] = 1
    assert pixel_error(thick, truth) == pytest.approx(0.1)
    # pairs of true-region pixels kept together: the 10 column-4 pixels split off the 50-pixel cell
    recall = (40 * 39 + 10 * 9 + 40 * 39) / (50 * 49 + 40 * 39)
    thick_error = rand_error(thick, truth, boundary_class=1)
    assert thick_error == pytest.approx(1 - 2 * recall / (recall + 1))  # precision 1: nothing merged
    assert thick_error < rand_error(merged, truth, boundary_class=1) / 2


def test_rand_error_of_a_split_and_of_no_regions() -> None:
    truth = np.zeros((8, 8), np.uint8)
    split = truth.copy()
    split[4, :] = 1  # a spurious membrane cuts the one true cell in two
    error = rand_error(split, truth, boundary_class=1)
    recall = (32 * 31 + 8 * 7 + 24 * 23) / (64 * 63)  # 32 + 24 pixels either side, 8 predicted as membrane
    assert error == pytest.approx(1 - 2 * recall / (recall + 1))  # precision 1: nothing merged
    assert np.isnan(rand_error(truth, np.ones_like(truth), boundary_class=1))  # all boundary: nothing to score


def test_a_case_mean_leaves_out_classes_neither_mask_holds() -> None:
    """A photo holding 1 of 4 foreground classes, predicted empty, scores 0 (counting the 3 absent
    classes as perfect would give 0.75: a model that finds nothing would look good)."""
    truth = np.zeros((6, 6), dtype=np.uint8)
    truth[:3, :3] = 2
    empty = np.zeros_like(truth)
    assert case_scores(empty, truth, classes=5)["dice"] == 0.0
    assert case_scores(empty, truth, classes=5)["dice_1"] == 1.0  # per class, both empty is still agreement
    wrong_class = np.where(truth == 2, 3, 0).astype(np.uint8)  # right place, wrong class: two classes, both 0
    assert case_scores(wrong_class, truth, classes=5)["dice"] == 0.0
    extra = truth.copy()
    extra[5, 5] = 4  # right, plus one false pixel of a class the truth lacks: mean of 1.0 and 0.0
    assert case_scores(extra, truth, classes=5)["dice"] == pytest.approx(0.5)
    assert case_scores(empty, empty, classes=5)["dice"] == case_scores(empty, empty, classes=5)["iou"] == 1.0


def test_ignored_truth_pixels_count_in_no_score() -> None:
    """ignore_void: whatever is predicted on pixels whose truth is 255 changes no score."""
    truth = np.zeros((6, 6), dtype=np.uint8)
    truth[1:4, 1:4] = 1
    truth[0, :] = truth[:, 0] = IGNORE_LABEL  # a void border
    pred = np.where(truth == 1, 1, 0).astype(np.uint8)
    for on_void in (0, 1, 2):
        guessed = np.where(truth == IGNORE_LABEL, on_void, pred).astype(np.uint8)
        scores = case_scores(guessed, truth, classes=3)
        assert scores["dice"] == scores["dice_1"] == 1.0 and scores["dice_2"] == 1.0
        assert scores["pixel_error"] == 0.0
    pred[5, 5] = 1  # one wrong pixel of the 25 scored
    assert case_scores(pred, truth, classes=3)["pixel_error"] == pytest.approx(1 / 25)
    assert case_scores(pred, truth, classes=3)["dice_1"] == pytest.approx(2 * 9 / (10 + 9))

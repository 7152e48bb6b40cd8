import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_iou

from segops.errors import ShapeError
from segops.metrics import case_scores, dice_score, iou_score, summarize


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

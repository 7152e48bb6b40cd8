"""Which validation metric chose the kept epoch, and the empty-prediction alarm of the segment step."""

from pathlib import Path

import pandas as pd

from segops.cluster.train import TrainOutcome
from segops.config.schema import TrainStep
from segops.steps.segment import empty_prediction_fraction
from segops.steps.train import _selection

STEP = {"step": "train", "model": {"arch": "unet"}}


def _outcome(val_cases: int, fg_cases: int) -> TrainOutcome:
    history = [
        {
            "epoch": e,
            "val_dice": 0.9 - 0.1 * e,
            "val_fg_dice": 0.1 * e,
            "val_cases": val_cases,
            "val_fg_cases": fg_cases,
            "val_score": 0.0,
        }
        for e in range(3)
    ]
    return TrainOutcome(Path("ckpt"), history, best_epoch=2, best_score=0.2, used_gpu=False)


def test_mostly_empty_validation_selects_by_foreground_dice() -> None:
    metric, best = _selection(TrainStep.model_validate(STEP), _outcome(val_cases=10, fg_cases=3))
    assert metric == "val_fg_dice" and best == {"best_val_dice": 0.7, "best_val_fg_dice": 0.2}
    metric, _ = _selection(TrainStep.model_validate(STEP), _outcome(val_cases=10, fg_cases=5))
    assert metric == "val_dice"
    metric, _ = _selection(TrainStep.model_validate(STEP | {"select": "last"}), _outcome(10, 3))
    assert metric == "none (select: last)"


def test_empty_prediction_fraction() -> None:
    assert empty_prediction_fraction(pd.Series([0.0, 0.0, 0.0])) == 1.0
    assert empty_prediction_fraction(pd.Series([0.0, 0.02, 0.0, 0.0])) == 0.75

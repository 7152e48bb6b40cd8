"""Cross-validation pieces without Ray: fold records, cv metrics, warm starts from ensembles, the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segops.cluster.folds import (
    CaseScore,
    FoldOutcome,
    cv_metrics,
    prediction_file,
    read_fold,
    saved_maps,
    write_fold,
)
from segops.cluster.train import TrainOutcome
from segops.config.schema import TrainStep
from segops.engine.checkpoint import save_ensemble
from segops.errors import StepError
from segops.outputs.atomic import atomic_write
from segops.steps.results import TrainResult
from segops.steps.train import _warm_start, run
from tests.steps.contexts import TINY_PREPROCESS, TINY_UNET, make_context, tiny_checkpoint

UNET = TINY_UNET.model_dump(mode="json")


def _fold(index: int, cases: list[tuple[str, float, bool]]) -> FoldOutcome:
    outcome = TrainOutcome(Path(f"model/fold_{index}"), [{"epoch": 0, "val_dice": 0.5}], 0, 0.5, False)
    return FoldOutcome(index, (f"g{index}",), outcome, tuple(CaseScore(*c) for c in cases))


def test_cv_metrics_average_cases_within_folds_then_folds() -> None:
    folds = [_fold(0, [("a", 1.0, False), ("b", 0.5, True), ("c", 0.0, True)]), _fold(1, [("d", 0.2, False)])]
    assert cv_metrics(folds) == pytest.approx(
        {
            "cv_fold0_dice": 0.5,
            "cv_fold0_fg_dice": 0.25,
            "cv_fold1_dice": 0.2,
            "cv_dice_mean": 0.35,
            "cv_fg_dice_mean": 0.25,
        }
    )
    assert "cv_fg_dice_mean" not in cv_metrics([_fold(0, [("a", 1.0, False)])])


def test_a_fold_record_round_trips(tmp_path: Path) -> None:
    fold = _fold(1, [("1.2.3", 0.75, True)])
    write_fold(tmp_path / "fold_1.json", fold)
    assert read_fold(tmp_path / "fold_1.json", Path("model/fold_1")) == fold


def _save(path: Path, class_map: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, class_map=class_map, label=class_map + 1)


def test_saved_maps_read_each_cases_map_and_label_in_order(tmp_path: Path) -> None:
    maps = {c: np.full((3, 4), i, np.uint8) for i, c in enumerate(["1.2.3", "x/y"])}
    for case_id, arr in maps.items():
        atomic_write(prediction_file(tmp_path, case_id), lambda tmp, a=arr: _save(tmp, a))
    assert prediction_file(tmp_path, "x/y").name == "x_y.npz"
    preds, labels = saved_maps(tmp_path, ["x/y", "1.2.3"])
    assert len(preds) == 2 and [int(p.max()) for p in preds] == [1, 0] and [int(t.max()) for t in labels] == [2, 1]
    assert [int(p.max()) for p in preds[1:]] == [0]


def test_a_folds_result_round_trips_through_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "split.json").write_text('{"train": ["a", "b"], "val": [], "test": ["c"], "folds": [["a"], ["b"]]}')
    result = TrainResult(
        tmp_path / "model",
        frozenset(),
        -1,
        "val_dice",
        {"cv_dice_mean": 0.7, "cv_fold0_dice": 0.6},
        None,
        ("m", "3"),
        "models:/m/3",
        frozenset({"c"}),
        folds=2,
    )
    assert TrainResult.from_manifest(result.to_manifest(), tmp_path / "split.json") == result
    single = TrainResult(tmp_path / "model", frozenset({"b"}), 2, "val_dice", {"best_val_dice": 0.5})
    (tmp_path / "split.json").write_text('{"train": ["a"], "val": ["b"], "test": []}')
    assert TrainResult.from_manifest(single.to_manifest(), tmp_path / "split.json") == single


def test_mask_rcnn_folds_stop_before_anything_starts(tmp_path: Path) -> None:
    step = TrainStep.model_validate({"step": "train", "model": {"arch": "maskrcnn"}, "folds": 3})
    with pytest.raises(StepError, match="folds: 3 cross-validates semantic models"):
        run(step, make_context(tmp_path))  # no ingest step: it would fail on that next


def test_warm_start_from_an_ensemble_goes_fold_by_fold(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    for i in range(2):
        tiny_checkpoint(parent / f"fold_{i}", seed=i)
    save_ensemble(parent, ["fold_0", "fold_1"], TINY_UNET, TINY_PREPROCESS)
    single = tiny_checkpoint(tmp_path / "single", seed=5)
    ctx = make_context(tmp_path)

    def step(init: Path, folds: int) -> TrainStep:
        return TrainStep.model_validate({"step": "train", "model": UNET, "folds": folds, "init_from": str(init)})

    assert _warm_start(step(parent, 2), ctx) == (str(parent), [parent / "fold_0", parent / "fold_1"])
    assert _warm_start(step(single, 2), ctx) == (str(single), [single, single])
    for folds in (1, 3):
        with pytest.raises(StepError, match=f"an ensemble of 2 fold models, but this step trains folds: {folds}"):
            _warm_start(step(parent, folds), ctx)

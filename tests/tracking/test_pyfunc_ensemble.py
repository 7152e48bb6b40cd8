"""A fold ensemble registers as one pyfunc version that predicts the mean of its folds' softmax."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch

from segops.config.schema import PreprocessSpec, TrackingSpec
from segops.engine.checkpoint import LoadedModel, load_checkpoint, save_checkpoint, save_ensemble
from segops.engine.ensemble import SoftmaxEnsemble
from segops.engine.predict import predict_masks
from segops.models import build_model
from segops.tracking import RunTracker, use_tracking_uri
from tests.tracking.conftest import SPEC


def test_the_registered_ensemble_predicts_the_mean_of_its_folds(store_uri: str, tmp_path: Path) -> None:
    root = tmp_path / "model"
    for i in range(2):
        torch.manual_seed(10 + i)
        save_checkpoint(root / f"fold_{i}", build_model(SPEC), SPEC, PreprocessSpec())
    save_ensemble(root, ["fold_0", "fold_1"], SPEC, PreprocessSpec())
    images = np.random.default_rng(2).normal(size=(3, 1, 24, 20)).astype(np.float32)
    tracker = RunTracker(TrackingSpec(uri=store_uri, experiment="ensemble"))
    tracker.start("train", {})
    registered = tracker.log_model(root, "cv-unet", images[:1], {})
    tracker.end()
    assert registered.version == "1"

    use_tracking_uri(store_uri)
    got = mlflow.pyfunc.load_model("models:/cv-unet/1").predict(images)  # MLflow's loader, no segops call

    folds = [load_checkpoint(root / f"fold_{i}") for i in range(2)]
    mean = LoadedModel(SoftmaxEnsemble([f.model for f in folds]).eval(), SPEC, PreprocessSpec(), {})
    expected = np.stack(predict_masks(mean, list(images)))
    np.testing.assert_array_equal(got, expected)
    assert any((got != np.stack(predict_masks(f, list(images)))).any() for f in folds)  # not just one fold

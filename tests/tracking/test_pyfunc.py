"""The logged pyfunc loads with ``mlflow.pyfunc.load_model`` and predicts what segops predicts."""

from __future__ import annotations

import pickle
from pathlib import Path

import mlflow
import numpy as np
import pytest

from segops.engine.checkpoint import load_checkpoint
from segops.engine.predict import predict_label_maps
from segops.tracking import SegmentationPyfunc, use_tracking_uri
from segops.tracking.pyfunc import _pip_requirements
from tests.tracking.conftest import MODEL


def test_the_registered_model_loads_and_predicts_like_the_checkpoint(logged_model: dict, checkpoint: Path) -> None:
    use_tracking_uri(logged_model["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    assert type(model.unwrap_python_model()).__module__ == "segops.tracking.pyfunc"
    images = np.random.default_rng(7).normal(size=(3, 1, 24, 20)).astype(np.float32)
    expected = np.stack(predict_label_maps(load_checkpoint(checkpoint), list(images)))
    assert set(np.unique(expected)) == {0, 1}  # the seeded untrained net predicts both classes
    got = model.predict(images)
    assert got.shape == (3, 24, 20) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    # gray (N, H, W) gets its channel axis (called on the wrapper: the signature asks for (N, C, H, W))
    np.testing.assert_array_equal(model.unwrap_python_model().predict(None, images[:, 0]), expected)


def test_the_signature_takes_any_batch_and_image_size(logged_model: dict) -> None:
    info = mlflow.models.get_model_info(f"runs:/{logged_model['run_id']}/model")
    inputs, outputs = info.signature.inputs.inputs[0], info.signature.outputs.inputs[0]
    assert (inputs.shape, inputs.type) == ((-1, 1, -1, -1), np.dtype(np.float32))
    assert (outputs.shape, outputs.type) == ((-1, -1, -1), np.dtype(np.uint8))


def test_models_logged_before_the_package_split_still_unpickle() -> None:
    """Their python_model.pkl names ``segops.tracking.SegmentationPyfunc`` (the old module path)."""
    old_reference = b"csegops.tracking\nSegmentationPyfunc\n."  # pickle protocol 0: a global by module + name
    assert pickle.loads(old_reference) is SegmentationPyfunc


def test_pip_requirements_are_pinned() -> None:
    from importlib.metadata import version

    reqs = _pip_requirements()
    assert [r.split("==")[0] for r in reqs] == ["segops", "torch", "monai", "numpy", "pydantic"]
    assert f"numpy=={version('numpy')}" in reqs


def test_the_registrys_own_prints_stay_out_of_the_terminal_and_nothing_else_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A retrain registers a new version of an existing name: MLflow prints that it "already
    exists" to stderr in the middle of the progress output; segops logs the version instead."""
    from mlflow.utils.logging_utils import eprint

    from segops.tracking.pyfunc import _without_registry_prints

    with _without_registry_prints():
        eprint("Registered model 'isbi-unet' already exists. Creating a new version of this model...")
        eprint("Created version '2' of model 'isbi-unet'.")
        eprint("a warning of another library")
    assert capsys.readouterr().err == "a warning of another library\n"

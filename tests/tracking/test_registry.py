"""Model URIs, registration and fetching a checkpoint back, against a real sqlite MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from segops.config.schema import TrackingSpec
from segops.errors import CheckpointError
from segops.tracking import RegisteredModel, RunTracker, download_checkpoint, is_model_uri
from tests.tracking.conftest import MODEL


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("models:/seg/3", True),
        ("models:/seg@champion", True),
        ("models:/seg/latest", True),
        ("runs:/0123abcd/model", True),
        ("/data/checkpoint", False),
        ("checkpoint", False),
        ("runs/wf-1a2b/train/checkpoint", False),  # a segops run folder, not an MLflow URI
        ("file:///data/checkpoint", False),
        ("s3://bucket/checkpoint", False),
        ("C:\\models\\checkpoint", False),
    ],
)
def test_is_model_uri(value: str, expected: bool) -> None:
    assert is_model_uri(value) is expected


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_log_model_registers_a_version_tagged_with_its_run(logged_model: dict) -> None:
    run_id = logged_model["run_id"]
    assert logged_model["registered"] == RegisteredModel(MODEL, "1", f"models:/{MODEL}/1")
    client = MlflowClient(tracking_uri=logged_model["uri"], registry_uri=logged_model["uri"])
    version = client.get_model_version(MODEL, "1")
    assert version.run_id == run_id
    assert version.tags == {"segops.run_id": run_id, "segops.parent_model": "none"}
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"


@pytest.mark.parametrize("ref", [f"models:/{MODEL}/1", f"models:/{MODEL}@champion"])
def test_download_checkpoint_gives_back_the_logged_bytes(
    logged_model: dict, checkpoint: Path, tmp_path: Path, ref: str
) -> None:
    local = download_checkpoint(ref, logged_model["uri"], tmp_path / "dl")
    assert local.is_dir() and local.is_relative_to(tmp_path / "dl")
    files = _files(local)
    assert files == _files(checkpoint) and len(files) >= 2


def test_download_checkpoint_by_run_uri(logged_model: dict, checkpoint: Path, tmp_path: Path) -> None:
    local = download_checkpoint(f"runs:/{logged_model['run_id']}/model", logged_model["uri"], tmp_path)
    assert _files(local) == _files(checkpoint)


def test_a_missing_model_is_a_checkpoint_error(logged_model: dict, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"cannot download model 'models:/{MODEL}/7' from sqlite:///"):
        download_checkpoint(f"models:/{MODEL}/7", logged_model["uri"], tmp_path)
    with pytest.raises(CheckpointError, match=rf"cannot download model 'models:/{MODEL}@nope'"):
        download_checkpoint(f"models:/{MODEL}@nope", logged_model["uri"], tmp_path)


def test_a_model_without_a_segops_checkpoint_is_refused(store_uri: str, tmp_path: Path) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: other.loader\n")
    tracker = RunTracker(TrackingSpec(uri=store_uri))
    run_id = tracker.start("other", {})
    tracker.log_artifact(folder, "other")
    with pytest.raises(CheckpointError, match=r"is not a segops model: it has no 'checkpoint' artifact"):
        download_checkpoint(f"runs:/{run_id}/other", store_uri, tmp_path / "dl")

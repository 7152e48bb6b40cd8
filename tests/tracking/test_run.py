"""RunTracker against a real sqlite MLflow store: what it logs, a client reads back exactly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from segops.config.schema import TrackingSpec
from segops.tracking import RunTracker, default_artifact_location, lineage_tags

REPO = Path(__file__).resolve().parents[2]


def test_a_run_holds_exactly_the_params_metrics_tags_and_artifacts_logged(store_uri: str, tmp_path: Path) -> None:
    tracker = RunTracker(TrackingSpec(uri=store_uri, experiment="exp"))
    run_id = tracker.start("wf-1", {"segops.run_id": "wf-1"})
    params = {f"p{i:03d}": i for i in range(150)} | {"long": "x" * 7000, "none": None}  # two batches of 100
    tracker.log_params(params)
    tracker.log_metrics({"dice": 0.75, "count": 3, "nan": float("nan"), "inf": float("inf"), "missing": None}, step=2)
    tracker.set_tags({"k": "v"})
    (tmp_path / "one.txt").write_text("one")
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    (tmp_path / "folder" / "a.json").write_text('{"a": 1}')
    (tmp_path / "folder" / "sub" / "b.txt").write_text("bb")
    tracker.log_artifact(tmp_path / "one.txt")
    tracker.log_artifact(tmp_path / "folder", "docs")
    tracker.end()

    client = MlflowClient(tracking_uri=store_uri)
    run = client.get_run(run_id)
    expected = {f"p{i:03d}": str(i) for i in range(150)} | {"long": "x" * 6000, "none": "None"}
    assert run.data.params == expected
    assert run.data.metrics == {"dice": 0.75, "count": 3.0}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "dice")] == [(2, 0.75)]
    assert {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")} == {
        "segops.run_id": "wf-1",
        "k": "v",
    }
    assert (run.info.run_name, run.info.status) == ("wf-1", "FINISHED")
    assert client.get_experiment(run.info.experiment_id).name == "exp"
    files = sorted(f.path for f in client.list_artifacts(run_id)) + sorted(
        f.path for f in client.list_artifacts(run_id, "docs")
    )
    assert files == ["docs", "one.txt", "docs/a.json", "docs/sub"]
    local = Path(client.download_artifacts(run_id, "docs/sub/b.txt", str(tmp_path / "dl")))
    assert local.read_text() == "bb"
    # a sqlite store keeps artifacts beside the database file
    store = Path(store_uri[len("sqlite:///") :]).parent
    assert (store / "mlartifacts").is_dir()
    assert client.get_experiment(run.info.experiment_id).artifact_location == (store / "mlartifacts").as_uri()


def test_start_reopens_a_run_and_end_records_the_status(store_uri: str) -> None:
    first = RunTracker(TrackingSpec(uri=store_uri, experiment="exp"))
    run_id = first.start("wf-1", {})
    first.end("FAILED")
    again = RunTracker(TrackingSpec(uri=store_uri, experiment="exp"))
    assert again.start("ignored", {}, run_id=run_id) == run_id
    client = MlflowClient(tracking_uri=store_uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    again.end("KILLED")
    assert client.get_run(run_id).info.status == "KILLED"
    assert len(client.search_runs([client.get_experiment_by_name("exp").experiment_id])) == 1


def test_a_tracker_that_has_not_started_says_so(store_uri: str) -> None:
    tracker = RunTracker(TrackingSpec(uri=store_uri))
    with pytest.raises(RuntimeError, match=r"RunTracker.start\(\) must be called first"):
        tracker.log_metrics({"dice": 1.0})
    tracker.end()  # nothing to close: no error


def test_a_dataset_input_reads_back_with_its_context_and_digest(store_uri: str) -> None:
    tracker = RunTracker(TrackingSpec(uri=store_uri))
    tracker.start("wf", {})
    table = pd.DataFrame({"case_id": ["a", "b", "c"], "modality": ["CT", "CT", "MR"]})
    tracker.log_dataset("images", "/data/images", table, "d" * 40, "training")
    inputs = tracker.run_dataset_inputs()
    assert [{k: v for k, v in item.items() if k != "profile"} for item in inputs] == [
        {"name": "images", "digest": "d" * 36, "source": '{"uri": "/data/images"}', "context": "training"}
    ]
    assert '"num_rows": 3' in inputs[0]["profile"]


def test_aliases_and_version_tags(store_uri: str) -> None:
    tracker = RunTracker(TrackingSpec(uri=store_uri))
    run_id = tracker.start("wf", {})
    tracker.client.create_registered_model("m")
    tracker.client.create_model_version("m", source=f"runs:/{run_id}/model", run_id=run_id)
    assert tracker.alias_version("m", "champion") is None
    assert tracker.alias_version("no-such-model", "champion") is None
    tracker.set_alias("m", "champion", "1")
    assert tracker.alias_version("m", "champion") == "1"
    tracker.set_version_tags("m", "1", {"short": "s", "long": "y" * 6000, "n": 3})
    assert tracker.client.get_model_version("m", "1").tags == {"short": "s", "long": "y" * 5000, "n": "3"}


def test_default_artifact_location_is_beside_a_sqlite_file_only(tmp_path: Path) -> None:
    assert default_artifact_location(f"sqlite:///{tmp_path}/x/m.db") == (tmp_path / "x" / "mlartifacts").as_uri()
    assert default_artifact_location("http://127.0.0.1:5000") is None
    assert default_artifact_location("postgresql://u@h/db") is None


def test_lineage_tags_name_this_checkout_and_the_package_versions() -> None:
    tags = lineage_tags()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags["segops.git_commit"] in (head, f"{head}-dirty")
    assert tags["pkg.mlflow"] == mlflow.__version__ and tags["pkg.numpy"] == np.__version__

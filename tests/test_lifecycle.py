"""Model lifecycle against a real MLflow tracking server on 127.0.0.1 (sqlite backend, artifacts
served with --serve-artifacts): retrain → evaluate champion vs challenger on a frozen held-out set
→ promotion gate; lineage; training resume after SIGKILL.

Three retrains share one server and one Ray session:
1. no champion yet: a weak first model (1 epoch from scratch) is promoted;
2. a challenger warm-started from the champion and trained on *inverted* labels is refused with
   reasons, and the aliases stay where they were;
3. a challenger warm-started from the champion and trained longer on the right labels passes,
   ``champion`` moves to it and ``previous`` to the old champion.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from segops.config import validate_workflow_text
from tests.stores import sqlite_store

from .processes import kill_session, start_mlflow_server, stop_group, subprocess_run

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL = "lifecycle-unet"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server`` on loopback (sqlite backend, artifacts served from a folder); yields its http:// URI."""
    root = tmp_path_factory.mktemp("mlflow-server")
    proc, uri = start_mlflow_server(sqlite_store(root), str(root / "artifacts"), root / "server.log")
    yield uri
    stop_group(proc)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, ct_archive: Path) -> dict:
    from segops.synth import make_ct_archive

    root = tmp_path_factory.mktemp("lifecycle")
    shutil.copytree(ct_archive, root / "good")
    shutil.copytree(ct_archive, root / "inverted")
    for label in (root / "inverted" / "labels").rglob("*.png"):
        mask = np.asarray(Image.open(label))
        Image.fromarray(np.where(mask > 0, 0, 255).astype(np.uint8)).save(label)  # foreground <-> background
    make_ct_archive(root / "heldout", series=2, slices=6, seed=21)
    return {"root": root}


def _retrain(data: dict, server: str, name: str, labels: str, epochs: int, lr: float) -> str:
    root = data["root"]
    source = {
        "kind": "dicom",
        "path": str(root / labels / "images"),
        "labels": {"kind": "mask-png", "path": str(root / labels / "labels")},
    }
    heldout = {
        "kind": "dicom",
        "path": str(root / "heldout" / "images"),
        "labels": {"kind": "mask-png", "path": str(root / "heldout" / "labels")},
    }
    return yaml.safe_dump(
        {
            "name": name,
            "output_dir": str(root / "runs"),
            "tracking": {"uri": server, "experiment": "lifecycle", "registered_model": MODEL},
            "cluster": {"num_cpus": 2},
            "steps": [
                {"step": "ingest", "source": source},
                {
                    "step": "train",
                    "init_from": f"models:/{MODEL}@champion",
                    "model": {"arch": "unet", "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
                    "preprocess": {
                        "intensity": {"kind": "window", "lower": -160, "upper": 240},
                        "patch_size": [64, 64],
                    },
                    "split": {"val_fraction": 0.34, "test_fraction": 0.0},  # held out: the evaluate step's set
                    "epochs": epochs,
                    "batch_size": 4,
                    "learning_rate": lr,
                    "patches_per_image": 2,
                },
                {"step": "evaluate", "source": heldout, "bootstrap": 500},
                {
                    "step": "promote",
                    "gate": {
                        "min_mean_dice_gain": 0.0,
                        "max_case_regression": {"dice_drop": 0.2, "fraction": 0.5},
                        "per_class_max_drop": 0.0,
                    },
                },
            ],
        }
    )


@pytest.fixture(scope="module")
def lifecycle(ray_session, server: str, data: dict) -> dict:
    from segops.workflows import run_workflow

    runs = {}
    for key, labels, epochs, lr in (
        ("first", "good", 1, 0.001),
        ("bad", "inverted", 3, 0.003),
        ("better", "good", 6, 0.003),
    ):
        text = _retrain(data, server, f"retrain-{key}", labels, epochs, lr)
        runs[key] = run_workflow(validate_workflow_text(text), text)
    return runs


def _decision(run) -> dict:
    return json.loads((run.run_dir / "promote" / "decision.json").read_text())


def test_first_model_is_promoted_when_there_is_no_champion(lifecycle, server: str) -> None:
    decision = _decision(lifecycle["first"])
    assert decision["passed"] and decision["reasons"] == ["no champion yet: the first model is promoted"]
    assert decision["champion"] is None and decision["challenger"]["version"] == "1"
    assert lifecycle["first"].outputs[1]["parent_model"] is None  # no champion: trained from scratch


def test_challenger_trained_on_inverted_labels_is_refused_and_aliases_stay(lifecycle, server: str) -> None:
    decision = _decision(lifecycle["bad"])
    assert not decision["passed"] and decision["challenger"]["version"] == "2"
    assert decision["champion"]["version"] == "1" and decision["champion_after"] == "1"
    assert any(r.startswith("mean Dice gain") for r in decision["reasons"]), decision["reasons"]
    failed = {c["name"] for c in decision["checks"] if not c["passed"]}
    assert "mean_dice_gain" in failed
    client = MlflowClient(server, registry_uri=server)
    v2 = client.get_model_version(MODEL, "2")
    assert v2.tags["segops.promotion"] == "rejected" and "mean Dice gain" in v2.tags["segops.rejected_reasons"]
    # the evidence: both per-case tables on the same held-out cases, and the gain with its CI
    run_id = lifecycle["bad"].mlflow_run_id
    evidence = {a.path for a in client.list_artifacts(run_id, "evaluate")}
    assert {
        "evaluate/champion_cases.parquet",
        "evaluate/challenger_cases.parquet",
        "evaluate/comparison.json",
    } <= evidence
    champion = pd.read_parquet(lifecycle["bad"].run_dir / "evaluate" / "champion_cases.parquet")
    challenger = pd.read_parquet(lifecycle["bad"].run_dir / "evaluate" / "challenger_cases.parquet")
    assert list(champion["case_id"]) == list(challenger["case_id"]) and len(champion) == 12
    metrics = client.get_run(run_id).data.metrics
    assert metrics["evaluate_dice_gain"] == pytest.approx(challenger["dice"].mean() - champion["dice"].mean())
    assert (
        metrics["evaluate_dice_gain_ci_low"] <= metrics["evaluate_dice_gain"] <= metrics["evaluate_dice_gain_ci_high"]
    )
    assert metrics["promote_passed"] == 0.0


def test_better_challenger_passes_and_aliases_move(lifecycle, server: str) -> None:
    decision = _decision(lifecycle["better"])
    assert decision["passed"], decision["reasons"]
    assert decision["champion"]["version"] == "1" and decision["challenger"]["version"] == "3"
    client = MlflowClient(server, registry_uri=server)
    assert client.get_model_version_by_alias(MODEL, "champion").version == "3"
    assert client.get_model_version_by_alias(MODEL, "previous").version == "1"
    v3 = client.get_model_version(MODEL, "3")
    assert v3.tags["segops.promotion"] == "promoted" and v3.tags["segops.replaced_version"] == "1"
    assert v3.tags["segops.parent_model"] == f"models:/{MODEL}/1"  # warm-started from the champion at the time


def test_lineage_is_recorded_on_run_and_model_version(lifecycle, server: str) -> None:
    from segops.cluster.datasets import dataset_digest

    client = MlflowClient(server, registry_uri=server)
    run = client.get_run(lifecycle["better"].mlflow_run_id)
    assert run.data.params["train.parent_model"] == f"models:/{MODEL}/1"
    assert run.data.tags["segops.spec_hash"] and run.data.tags["pkg.torch"] and run.data.tags["pkg.mlflow"]
    (training,) = [d for d in run.inputs.dataset_inputs if d.tags[0].value == "training"]
    dataset_dir = lifecycle["better"].run_dir / "dataset"
    assert training.dataset.source and str(dataset_dir.resolve()) in training.dataset.source
    assert json.loads(training.dataset.profile)["num_rows"] == 18  # every labelled case of the ingest
    assert training.dataset.digest == dataset_digest(dataset_dir)[:36]
    version = client.get_model_version(MODEL, "3")
    assert version.run_id == run.info.run_id and version.tags["segops.run_id"] == run.info.run_id
    assert version.tags["segops.spec_hash"] == run.data.tags["segops.spec_hash"]
    import mlflow

    mlflow.set_tracking_uri(server)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    assert model.metadata.signature is not None
    assert model.predict(np.zeros((1, 1, 32, 32), np.float32)).shape == (1, 32, 32)


def test_sigkilled_training_resumes_from_its_last_checkpoint_in_the_same_mlflow_run(
    lifecycle, server, data, tmp_path
) -> None:
    from segops.workflows import run_workflow

    text = _retrain(data, server, "retrain-resume", "good", 6, 0.003)  # epochs to spare: a loaded machine lags
    workflow = tmp_path / "resume.yaml"
    workflow.write_text(text)
    proc = subprocess_run(workflow)
    progress = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((data["root"] / "runs").glob("retrain-resume-*/ray-train/progress.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            progress = found[0]
            break
        time.sleep(0.5)
    assert progress is not None, "training did not report two epochs in time"
    kill_session(proc)
    before = [json.loads(line)["epoch"] for line in progress.read_text().splitlines()]
    assert before[:2] == [0, 1] and len(before) < 6

    result = run_workflow(validate_workflow_text(text), text)
    assert result.resumed
    epochs = [json.loads(line)["epoch"] for line in progress.read_text().splitlines()]
    assert epochs == [0, 1, 2, 3, 4, 5]  # the epochs done before the kill are not trained again
    client = MlflowClient(server)
    history = client.get_metric_history(result.mlflow_run_id, "train_loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4, 5]
    runs = client.search_runs(
        [client.get_experiment_by_name("lifecycle").experiment_id],
        filter_string="tags.`segops.workflow` = 'retrain-resume'",
    )
    assert [r.info.run_id for r in runs] == [result.mlflow_run_id]

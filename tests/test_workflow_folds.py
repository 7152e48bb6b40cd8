"""``train.folds: 2`` on real Ray (2 CPUs) and MLflow (sqlite): two fold models, out-of-fold
predictions, one registered ensemble, and a resumed run that keeps its finished fold.

The run is made once per module (two short Ray Train fits, then one resumed fit) and every test
inspects it; the tiny U-Net trains 2 epochs on 3 synthetic CT series of 6 slices (one test series,
one series per fold).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from segops.cluster.train_hooks import SNAPSHOT_NAME
from segops.config import validate_workflow_text
from segops.metrics import case_scores
from segops.outputs.manifest import load_manifest, read_manifest
from segops.steps.results import TrainResult
from tests.stores import sqlite_store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL_NAME = "folds-unet"


def _text(root: Path, archive: Path) -> str:
    train = {
        "step": "train",
        "model": {"arch": "unet", "channels": [4, 8], "strides": [2], "num_res_units": 0},
        "preprocess": {"intensity": {"kind": "window", "lower": -160, "upper": 240}, "patch_size": [32, 32]},
        "folds": 2,
        "epochs": 2,
        "batch_size": 4,
        "scaling": {"workers": 1},  # one worker process per fit: each fold pays Ray Train's start-up once
    }
    source = {
        "kind": "dicom",
        "path": str(archive / "images"),
        "labels": {"kind": "mask-png", "path": str(archive / "labels")},
    }
    return yaml.safe_dump(
        {
            "name": "folds",
            "output_dir": str(root / "runs"),
            "tracking": {"uri": sqlite_store(root), "experiment": "folds", "registered_model": MODEL_NAME},
            "cluster": {"num_cpus": 2},
            "steps": [{"step": "ingest", "source": source}, train],
        }
    )


@pytest.fixture(scope="module")
def runs(ray_session, ct_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The finished run, then the same run resumed after a simulated crash in fold 1's prediction
    (its fold record removed, the train step marked failed, and Ray Train's checkpoint record cut
    short as a kill during its write leaves it), with what fold 0 looked like before."""
    from segops.workflows import run_workflow

    root = tmp_path_factory.mktemp("folds")
    shutil.copytree(ct_archive, root / "ct")
    text = _text(root, root / "ct")
    first = run_workflow(validate_workflow_text(text), text)
    run_dir = first.run_dir
    before = {
        "fold0_record": (run_dir / "oof" / "fold_0.json").stat().st_mtime_ns,
        "fold0_epochs": (run_dir / "ray-train" / "fold_0" / "progress.jsonl").read_text(),
        "fold1_epochs": (run_dir / "ray-train" / "fold_1" / "progress.jsonl").read_text().count("\n"),
        "outputs": load_manifest(run_dir)["steps"][1]["outputs"],
    }
    (run_dir / "oof" / "fold_1.json").unlink()
    (run_dir / "ray-train" / "fold_1" / "train" / SNAPSHOT_NAME).write_bytes(b"")
    manifest = read_manifest(run_dir)
    manifest.step_failed(1, RuntimeError("simulated crash"))
    manifest.save()
    second = run_workflow(validate_workflow_text(text), text)
    return {"first": first, "second": second, "before": before, "run_dir": run_dir}


def _split(run_dir: Path) -> dict:
    return json.loads((run_dir / "split.json").read_text())


def test_split_holds_out_a_test_series_and_cuts_the_rest_into_folds(runs: dict) -> None:
    split = _split(runs["run_dir"])
    assert len(split["test"]) == 1 and split["val"] == [] and len(split["train"]) == 2
    assert sorted(g for fold in split["folds"] for g in fold) == split["train"]
    assert [len(f) for f in split["folds"]] == [1, 1]


def test_out_of_fold_predictions_score_as_each_fold_validated(runs: dict) -> None:
    run_dir = runs["run_dir"]
    client = MlflowClient(runs["second"].tracking_uri)
    metrics = client.get_run(runs["second"].mlflow_run_id).data.metrics
    fold_dice = []
    for i in range(2):
        record = json.loads((run_dir / "oof" / f"fold_{i}.json").read_text())
        assert record["val_groups"] == _split(run_dir)["folds"][i] and len(record["cases"]) == 6
        dice = []
        for case in record["cases"]:
            with np.load(run_dir / "oof" / f"{case['case_id']}.npz") as saved:
                pred, label = saved["class_map"], saved["label"]
            assert pred.dtype == np.uint8 and pred.shape == label.shape
            dice.append(case_scores(pred, label, 2)["dice"])
        assert [c["dice"] for c in record["cases"]] == pytest.approx(dice)
        kept = record["history"][record["best_epoch"]]
        # the kept model's out-of-fold Dice is the Dice its epoch was validated with
        assert np.mean(dice) == pytest.approx(kept["val_dice"], abs=1e-6)
        assert metrics[f"cv_fold{i}_dice"] == pytest.approx(np.mean(dice))
        fold_dice.append(np.mean(dice))
        steps = [m.step for m in client.get_metric_history(runs["second"].mlflow_run_id, f"fold{i}_train_loss")]
        assert sorted(set(steps)) == [0, 1]
    assert metrics["cv_dice_mean"] == pytest.approx(np.mean(fold_dice))
    assert len(list((run_dir / "oof").glob("*.npz"))) == 12


def test_one_ensemble_is_registered_with_its_postprocessing(runs: dict) -> None:
    from segops.engine.checkpoint import load_checkpoint
    from segops.engine.ensemble import SoftmaxEnsemble
    from segops.tracking import download_checkpoint

    run_dir, first = runs["run_dir"], runs["first"]
    train = first.results[1]
    assert isinstance(train, TrainResult) and train.folds == 2 and train.val_groups == frozenset()
    assert train.checkpoint == run_dir / "model" and train.best_epoch == -1
    assert set(train.best) >= {"cv_fold0_dice", "cv_fold1_dice", "cv_dice_mean"}
    assert train.test_groups == frozenset(_split(run_dir)["test"])
    assert TrainResult.from_manifest(train.to_manifest(), run_dir / "split.json") == train
    meta = json.loads((run_dir / "model" / "segops.json").read_text())
    assert meta["folds"] == ["fold_0", "fold_1"] and meta["postprocess"]["source"] == "out-of-fold"
    assert meta["postprocess"]["cases"] == 12
    client = MlflowClient(first.tracking_uri, registry_uri=first.tracking_uri)
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]  # one per run of the train step, not per fold
    local = download_checkpoint(f"models:/{MODEL_NAME}/1", first.tracking_uri, run_dir / "downloaded")
    loaded = load_checkpoint(local)
    assert isinstance(loaded.model, SoftmaxEnsemble) and len(loaded.model.members) == 2
    assert "postprocess" in loaded.meta


def test_a_resumed_run_keeps_the_finished_fold_and_resumes_the_other(runs: dict) -> None:
    run_dir, before = runs["run_dir"], runs["before"]
    assert runs["second"].resumed
    # fold 0 was not touched: its record (written once, after its prediction) and its epochs are as they were
    assert (run_dir / "oof" / "fold_0.json").stat().st_mtime_ns == before["fold0_record"]
    assert (run_dir / "ray-train" / "fold_0" / "progress.jsonl").read_text() == before["fold0_epochs"]
    # fold 1 resumed from its Ray Train checkpoint (its record put back from segops' copy): no epoch trained again
    progress = (run_dir / "ray-train" / "fold_1" / "progress.jsonl").read_text()
    assert progress.count("\n") == before["fold1_epochs"] == 2
    assert (run_dir / "oof" / "fold_1.json").is_file()
    outputs = load_manifest(run_dir)["steps"][1]["outputs"]
    assert {k: v for k, v in outputs.items() if k.startswith("cv_")} == {
        k: v for k, v in before["outputs"].items() if k.startswith("cv_")
    }

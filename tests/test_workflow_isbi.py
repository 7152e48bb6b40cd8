"""The shipped ISBI 2012 workflow, end to end on a small generated stand-in for the EM data.

The workflow file is ``workflows/isbi2012.yaml`` itself; only its data paths, tracking and
size knobs (epochs, patch, sliding-window tile) are changed, so the recipe that runs on the
real slices (label value mapping, augmentation, ``select: last``, Rand error, sliding
window, the unlabelled test-set step) is what runs here, on real Ray and MLflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from skimage.measure import label as connected_regions
from skimage.metrics import adapted_rand_error

from segops.config import validate_workflow_text
from segops.data.mask_files import read_mask_png
from segops.synth import make_membrane_archive
from tests.stores import sqlite_store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
N_LABELLED, N_TEST, EPOCHS = 12, 3, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("isbi")
    make_membrane_archive(root / "train", count=N_LABELLED, size=96, seed=0)
    make_membrane_archive(root / "test", count=N_TEST, size=96, seed=1)
    return {
        "root": root,
        "images": root / "train" / "images",
        "labels": root / "train" / "labels",
        "test": root / "test" / "images",
    }


@pytest.fixture(scope="module")
def run(ray_session, data: dict):
    from segops.workflows import run_workflow

    spec = yaml.safe_load((REPO / "workflows" / "isbi2012.yaml").read_text())
    root = data["root"]
    spec |= {
        "output_dir": str(root / "runs"),
        "cluster": {"num_cpus": 2},
        "tracking": {"uri": sqlite_store(root), "experiment": "isbi-test"},
    }
    ingest, train, segment, segment_test = spec["steps"]
    ingest["source"]["path"] = str(data["images"])
    ingest["source"]["labels"]["path"] = str(data["labels"])
    train |= {"epochs": EPOCHS, "patches_per_image": 2}
    train["preprocess"]["patch_size"] = [64, 64]
    train["augment"]["elastic"]["spacing"] = 32
    for step in (segment, segment_test):  # 96 px slices: force tiling with 64 px tiles
        step["sliding_window"] |= {"max_pixels": 64 * 64, "roi_size": [64, 64]}
    segment_test["source"]["path"] = str(data["test"])
    text = yaml.safe_dump(spec)
    return run_workflow(validate_workflow_text(text), text)


def test_labels_are_mapped_and_split_22_3_5_in_proportion(run, data: dict) -> None:
    report = pd.read_parquet(run.run_dir / "report.parquet")
    assert len(report) == N_LABELLED
    # 5 test and 3 validation of 30 on the real data; here round(0.1667 * 12) = 2 and round(0.1 * 12) = 1
    assert report["split"].value_counts().to_dict() == {"train": 9, "test": 2, "val": 1}
    # membrane (stored black) is class 1: its Dice is scored, and it is the thin minority class
    for _, row in report.iterrows():
        membrane = np.asarray(Image.open(data["labels"] / row["rel_path"])) == 0
        assert row["label_fg_fraction"] == pytest.approx(membrane.mean())
    assert (report["label_fg_fraction"] < 0.5).all()


def test_report_scores_match_an_independent_recomputation(run, data: dict) -> None:
    report = pd.read_parquet(run.run_dir / "report.parquet")
    assert report[["dice", "iou", "pixel_error", "rand_error"]].notna().all().all()
    for _, row in report.iterrows():
        stored = np.asarray(Image.open(data["labels"] / row["rel_path"]))
        membrane = stored == 0
        pred = read_mask_png(row["mask_path"], membrane.shape).astype(bool)
        assert row["pixel_error"] == pytest.approx(np.mean(pred != membrane))
        assert row["dice"] == pytest.approx(2 * (pred & membrane).sum() / (pred.sum() + membrane.sum()))
        expected_rand, _, _ = adapted_rand_error(
            connected_regions(~membrane, connectivity=1), connected_regions(~pred, connectivity=1)
        )
        assert row["rand_error"] == pytest.approx(expected_rand)


def test_training_learnt_membranes(run) -> None:
    """Held out (test) slices: fewer wrong pixels than calling everything cell interior."""
    report = pd.read_parquet(run.run_dir / "report.parquet")
    held = report[report["split"] == "test"]
    assert (held["pixel_error"] < held["label_fg_fraction"]).all(), held[["pixel_error", "label_fg_fraction"]]
    assert held["dice"].mean() > 0.3


def test_mlflow_has_the_recipe_and_the_isbi_metrics(run) -> None:
    client = MlflowClient(run.tracking_uri)
    mlrun = client.get_run(run.mlflow_run_id)
    params, metrics = mlrun.data.params, mlrun.data.metrics
    assert params["augment.elastic.prob"] == "0.5" and params["augment.elastic.magnitude"] == "[0.0, 10.0]"
    assert params["select"] == "last" and params["loss"] == "dice_ce"
    assert metrics["best_epoch"] == EPOCHS - 1  # select: last keeps the last epoch, whatever its val score
    report = pd.read_parquet(run.run_dir / "report.parquet")
    held, val = report[report["split"] == "test"], report[report["split"] == "val"]
    assert metrics["segment_heldout_cases"] == len(held) == 2
    assert metrics["segment_heldout_pixel_error_mean"] == pytest.approx(held["pixel_error"].mean())
    assert metrics["segment_heldout_rand_error_mean"] == pytest.approx(held["rand_error"].mean())
    assert metrics["segment_heldout_dice_mean"] == pytest.approx(held["dice"].mean())
    assert metrics["segment_val_dice_mean"] == pytest.approx(val["dice"].mean())


def test_unlabelled_test_slices_are_segmented_by_the_second_step(run, data: dict) -> None:
    masks = sorted(p.name for p in (run.run_dir / "segment-1" / "masks").rglob("*.png"))
    assert masks == sorted(p.name for p in data["test"].glob("*.png"))
    metrics = MlflowClient(run.tracking_uri).get_run(run.mlflow_run_id).data.metrics
    assert metrics["segment1_outputs"] == N_TEST and metrics["segment1_failed"] == 0

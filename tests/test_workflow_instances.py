"""Instance segmentation end to end: synthetic instance archive → Mask R-CNN on Ray Train (2 DDP
workers, CPU) → actor-pool inference writing class PNGs, instance-id PNGs and COCO RLE → mask AP
and matched-instance scores in the report and in MLflow.

One tiny run per module (a few Ray Train epochs on 64 px images); every test inspects it, and
checks what it can against the label files written by the generator, independently of segops.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from pycocotools.coco import COCO

from segops.config import validate_workflow_text
from segops.instance_metrics import decode_rle, mask_ap
from segops.steps.results import TrainResult
from tests.stores import sqlite_store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL_NAME = "e2e-maskrcnn"
N_IMAGES = 12


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from segops.synth import make_instance_archive

    root = tmp_path_factory.mktemp("instances")
    summary = make_instance_archive(root / "data", count=N_IMAGES, size=64, seed=4)
    (summary.images / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated" * 10)
    return {"root": root, "summary": summary}


def _workflow_text(archive: dict) -> str:
    root, summary = archive["root"], archive["summary"]
    model = {
        "arch": "maskrcnn",
        "classes": 3,
        "min_size": 64,
        "max_size": 64,
        "anchor_sizes": [8, 16, 32, 64, 128],
        "box_batch_size_per_image": 32,
        "score_threshold": 0.05,
        "mask_dice_weight": 1.0,
    }
    steps = [
        {
            "step": "ingest",
            "source": {
                "kind": "images",
                "path": str(summary.images),
                "labels": {
                    "kind": "instance-png",
                    "path": str(summary.instances),
                    "classes_pattern": "../classes/{rel_stem}.png",
                },
            },
        },
        {
            "step": "train",
            "model": model,
            "split": {"val_fraction": 0.25},
            "epochs": 2,
            "batch_size": 3,
            "learning_rate": 0.0005,
        },
        {"step": "segment", "outputs": ["png", "coco-rle"], "segments": {1: "cell", 2: "rod"}, "overlays": 2},
    ]
    return yaml.safe_dump(
        {
            "name": "e2e-instances",
            "output_dir": str(root / "runs"),
            "tracking": {
                "uri": sqlite_store(root),
                "experiment": "e2e-instances",
                "registered_model": MODEL_NAME,
            },
            "cluster": {"num_cpus": 2},
            "steps": steps,
        }
    )


@pytest.fixture(scope="module")
def run(ray_session, archive: dict):
    from segops.workflows import run_workflow

    text = _workflow_text(archive)
    return run_workflow(validate_workflow_text(text), text)


def _read(path: str | Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_every_readable_image_has_one_class_png_one_instance_png_and_one_coco_file(run, archive: dict) -> None:
    outputs = pd.read_parquet(run.run_dir / "outputs.parquet")
    assert len(outputs) == N_IMAGES and outputs["case_id"].is_unique
    for kind, suffix in (("masks", ".png"), ("instances", ".png"), ("coco", ".json")):
        written = sorted(p.relative_to(run.run_dir / kind).as_posix() for p in (run.run_dir / kind).rglob(f"*{suffix}"))
        assert written == sorted(f"scene-{i:04d}{suffix}" for i in range(N_IMAGES))
    for row in outputs.itertuples():
        classes, instances = _read(row.mask_path), _read(row.instance_path)
        assert instances.dtype == np.uint16 and classes.shape == instances.shape == (64, 64)
        assert np.array_equal(classes > 0, instances > 0)  # the two views of one prediction agree
        doc = json.loads(Path(row.coco_path).read_text())
        assert doc["case_id"] == row.case_id and (doc["height"], doc["width"]) == (64, 64)
        union = np.zeros((64, 64), bool)
        for result in doc["results"]:
            union |= decode_rle(result["segmentation"])
            assert result["score"] >= 0.05 and result["category_id"] in (1, 2)
        assert np.array_equal(union, instances > 0)  # the id map paints every detection's mask


def test_corrupt_image_is_quarantined(run) -> None:
    quarantine = pd.read_parquet(run.run_dir / "quarantine.parquet")
    assert [Path(p).name for p in quarantine["source_uri"]] == ["zz-broken.png"]


def test_report_counts_match_the_label_files(run, archive: dict) -> None:
    report = pd.read_parquet(run.run_dir / "report.parquet")
    # 12 images: test round(0.2 * 12) = 2 drawn first, validation round(0.25 * 12) = 3, 7 train
    assert len(report) == N_IMAGES and report["split"].value_counts().to_dict() == {"train": 7, "val": 3, "test": 2}
    for row in report.itertuples():
        truth = _read(archive["summary"].instances / row.rel_path)
        n_truth = len(np.unique(truth[truth > 0]))
        assert row.tp + row.fn == n_truth and row.tp + row.fp == row.n_instances
        assert np.isnan(row.matched_dice) == (row.tp == 0)


def test_mask_ap_in_mlflow_equals_cocoeval_on_the_written_files(run, archive: dict) -> None:
    """Recompute the archive's mask AP from coco_results.json and the generator's COCO file."""
    truth = COCO(str(archive["summary"].annotations))
    predicted = json.loads((run.run_dir / "coco_results.json").read_text())
    assert len(predicted["images"]) == N_IMAGES and [c["name"] for c in predicted["categories"]] == ["cell", "rod"]
    by_name = {img["file_name"]: img["id"] for img in truth.dataset["images"]}
    ids = {img["id"]: by_name[img["file_name"]] for img in predicted["images"]}
    results = [a | {"image_id": ids[a["image_id"]]} for a in predicted["annotations"]]
    expected = mask_ap(truth.dataset["images"], truth.dataset["annotations"], results, [1, 2])
    metrics = MlflowClient(run.tracking_uri).get_run(run.mlflow_run_id).data.metrics
    assert metrics["segment_mask_ap"] == pytest.approx(expected["ap"], abs=1e-9)
    assert metrics["segment_mask_ap50"] == pytest.approx(expected["ap50"], abs=1e-9)
    report = pd.read_parquet(run.run_dir / "report.parquet")
    assert metrics["segment_instances_tp"] == report["tp"].sum()
    held = report[report["split"] == "test"]
    assert metrics["segment_heldout_cases"] == 2 and metrics["segment_heldout_instances_tp"] == held["tp"].sum()
    assert {"segment_heldout_mask_ap50", "segment_val_mask_ap50"} <= set(metrics)  # scored on test and val alone


def test_training_logs_loss_components_and_validation_ap_per_epoch(run) -> None:
    client = MlflowClient(run.tracking_uri)
    for name in (
        "train_loss",
        "train_loss_mask",
        "train_loss_mask_dice",
        "train_loss_classifier",
        "train_loss_box_reg",
        "train_loss_objectness",
        "train_loss_rpn_box_reg",
    ):
        history = client.get_metric_history(run.mlflow_run_id, name)
        assert [m.step for m in history] == [0, 1] and all(np.isfinite(m.value) and m.value > 0 for m in history)
    for name in ("val_mask_ap", "val_mask_ap50", "val_mask_ap75"):
        assert [m.step for m in client.get_metric_history(run.mlflow_run_id, name)] == [0, 1]
    # each epoch's wall time, and the validation's part of it
    seconds = {
        name: sorted(client.get_metric_history(run.mlflow_run_id, name), key=lambda m: m.step)
        for name in ("epoch_seconds", "val_seconds")
    }
    assert [m.step for m in seconds["epoch_seconds"]] == [m.step for m in seconds["val_seconds"]] == [0, 1]
    assert all(0 < v.value < e.value for v, e in zip(seconds["val_seconds"], seconds["epoch_seconds"]))
    params = client.get_run(run.mlflow_run_id).data.params
    assert params["model.arch"] == "maskrcnn" and params["model.mask_dice_weight"] == "1.0"


def test_registered_model_predicts_instance_label_maps(run, archive: dict) -> None:
    from segops.engine.checkpoint import load_checkpoint
    from segops.engine.predict import predict_label_maps

    mlflow.set_tracking_uri(run.tracking_uri)
    mlflow.set_registry_uri(run.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1")
    image = _read(archive["summary"].images / "scene-0000.png").astype(np.float32)
    maps = model.predict(image[None, None])
    expected = predict_label_maps(load_checkpoint(run.latest(TrainResult).checkpoint), [image[None]])[0]
    assert maps.shape == (1, 64, 64) and maps.dtype == np.int32
    np.testing.assert_array_equal(maps[0], expected)

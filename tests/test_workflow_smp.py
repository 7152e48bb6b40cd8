"""arch: smp end to end on Ray: an ImageNet ResNet-18 U-Net (weights placed by the test in a
temporary TORCH_HOME) fine-tuned with a frozen-then-slower encoder and warm-up on gray and RGB
inspection photos → sliding-window segmentation with mirroring → evaluate → promote → the
registered pyfunc. One small run per module; every test inspects it."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from torchvision.models import resnet18

from segops.config import validate_workflow_text
from segops.engine.checkpoint import INIT_WEIGHTS_KEY, load_checkpoint, read_meta
from segops.engine.predict import predict_masks
from segops.models.weights import sha256_file
from segops.steps.results import TrainResult
from tests.stores import sqlite_store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL_NAME = "e2e-smp"
N_IMAGES = 10


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from segops.synth import make_inspection_archive

    root = tmp_path_factory.mktemp("smp")
    make_inspection_archive(root / "data", count=N_IMAGES, seed=11)
    make_inspection_archive(root / "heldout", count=4, seed=12)
    for path in sorted((root / "heldout").rglob("part-*.png")):  # other file names: other groups than training's
        path.rename(path.with_name(path.name.replace("part-", "held-")))
    weights = root / "torch-home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), weights)  # stands in for torchvision's ImageNet file
    return {"root": root, "weights": weights}


def _workflow_text(archive: dict) -> str:
    root = archive["root"]

    def source(name: str) -> dict:
        return {
            "kind": "images",
            "path": str(root / name / "images"),
            "labels": {"kind": "mask-png", "path": str(root / name / "labels")},
        }

    steps = [
        {"step": "ingest", "source": source("data")},
        {
            "step": "train",
            "model": {"arch": "smp", "encoder": "resnet18", "encoder_weights": "imagenet", "in_channels": 1},
            "preprocess": {"patch_size": [64, 64]},
            "split": {"val_fraction": 0.3, "test_fraction": 0.0},
            "epochs": 2,
            "batch_size": 4,
            "freeze_backbone_epochs": 1,
            "backbone_lr_mult": 0.5,
            "warmup_epochs": 1,
            "scaling": {"workers": 1},
        },
        {
            "step": "segment",
            "overlays": 0,
            "tta": {"flip_axes": [0, 1]},
            "sliding_window": {"max_pixels": 4096},  # every 96-128 px image is tiled in 64 px windows
        },
        {"step": "evaluate", "source": source("heldout"), "bootstrap": 200},
        {"step": "promote"},
    ]
    return yaml.safe_dump(
        {
            "name": "e2e-smp",
            "output_dir": str(root / "runs"),
            "tracking": {"uri": sqlite_store(root), "experiment": "e2e-smp", "registered_model": MODEL_NAME},
            "cluster": {"num_cpus": 2},
            "steps": steps,
        }
    )


@pytest.fixture(scope="module")
def run(ray_session, archive: dict):
    from segops.workflows import run_workflow

    text = _workflow_text(archive)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(archive["root"] / "torch-home"))
        return run_workflow(validate_workflow_text(text), text)


def test_every_image_is_segmented_and_the_run_is_promoted(run) -> None:
    outputs = pd.read_parquet(run.run_dir / "outputs.parquet")
    assert len(outputs) == N_IMAGES
    for path in outputs["mask_path"]:
        with Image.open(path) as mask:
            assert set(np.unique(np.asarray(mask))) <= {0, 1, 255}
    decision = (run.run_dir / "promote" / "decision.json").read_text()
    assert "no champion yet" in decision


def test_weights_origin_and_fine_tuning_controls_reach_mlflow_and_the_checkpoint(run, archive: dict) -> None:
    client = MlflowClient(run.tracking_uri)
    data = client.get_run(run.mlflow_run_id).data
    digest = sha256_file(archive["weights"])
    assert data.params["model.arch"] == "smp" and data.params["model.encoder_weights"] == "imagenet"
    assert data.params["freeze_backbone_epochs"] == "1" and data.params["backbone_lr_mult"] == "0.5"
    assert data.params["warmup_epochs"] == "1"
    assert data.params["train.init_weights"] == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    assert data.params["train.init_weights.0.sha256"] == digest
    assert data.params["train.init_weights.0.target"] == "encoder"
    assert data.params["train.init_weights.0.mismatched"] == "0"
    lr = [m.value for m in sorted(client.get_metric_history(run.mlflow_run_id, "lr"), key=lambda m: m.step)]
    backbone = sorted(client.get_metric_history(run.mlflow_run_id, "backbone_lr"), key=lambda m: m.step)
    # warm-up: half the rate in epoch 0; encoder frozen in epoch 0, then at half the head's rate
    assert lr[0] == pytest.approx(1e-3 * 0.5) and [m.value for m in backbone] == [0.0, pytest.approx(0.5 * lr[1])]
    # each epoch's wall time and the validation's share of it, per epoch
    seconds = {
        name: [m.value for m in sorted(client.get_metric_history(run.mlflow_run_id, name), key=lambda m: m.step)]
        for name in ("epoch_seconds", "val_seconds")
    }
    assert len(seconds["epoch_seconds"]) == len(lr) == len(seconds["val_seconds"])
    assert all(0 < v < e for v, e in zip(seconds["val_seconds"], seconds["epoch_seconds"]))
    checkpoint = run.latest(TrainResult).checkpoint
    assert read_meta(checkpoint)[INIT_WEIGHTS_KEY] == [
        {
            "origin": "torchvision:ResNet18_Weights.IMAGENET1K_V1",
            "file": str(archive["weights"]),
            "sha256": digest,
            "target": "encoder",
        }
    ]
    assert "train/init_weights.json" in {a.path for a in client.list_artifacts(run.mlflow_run_id, "train")}
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.tags["segops.init_weights"] == f"torchvision:ResNet18_Weights.IMAGENET1K_V1 sha256:{digest}"


def test_registered_pyfunc_rebuilds_the_smp_model(run, archive: dict) -> None:
    mlflow.set_tracking_uri(run.tracking_uri)
    mlflow.set_registry_uri(run.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1")
    channels = model.metadata.get_input_schema().inputs[0].shape[1]  # the logged example's (gray or RGB)
    with Image.open(archive["root"] / "heldout" / "images" / "held-0000.png") as img:
        image = np.repeat(np.asarray(img.convert("L"), dtype=np.float32)[None], channels, axis=0)
    maps = model.predict(image[None])
    expected = predict_masks(load_checkpoint(run.latest(TrainResult).checkpoint), [image])[0]
    assert maps.shape == (1, *image.shape[1:]) and np.array_equal(maps[0], expected)

"""Ray Train on the GPUs of the machine, with the default scaling (skipped cleanly without CUDA).

What only a GPU shows: Ray Train starts one worker per GPU (the default two workers would wait for
a second GPU on a one-GPU machine) and its process group carries both the gradients (NCCL) and the
loop's CPU sums of loss and Dice (gloo).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml

from segops.config import validate_workflow_text
from tests.stores import sqlite_store

pytestmark = [pytest.mark.gpu, pytest.mark.ray, pytest.mark.slow]


def test_default_scaling_trains_one_worker_per_gpu_and_segments_every_slice(
    ray_session, ct_archive: Path, tmp_path: Path
) -> None:
    from segops.workflows import run_workflow

    text = yaml.safe_dump(
        {
            "name": "gpu-train",
            "output_dir": str(tmp_path / "runs"),
            "tracking": {"uri": sqlite_store(tmp_path), "experiment": "gpu-train"},
            "steps": [
                {
                    "step": "ingest",
                    "source": {
                        "kind": "dicom",
                        "path": str(ct_archive / "images"),
                        "labels": {"kind": "mask-png", "path": str(ct_archive / "labels")},
                    },
                },
                {
                    "step": "train",
                    "model": {"arch": "unet", "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
                    "preprocess": {
                        "intensity": {"kind": "window", "lower": -160, "upper": 240},
                        "patch_size": [64, 64],
                    },
                    "split": {"val_fraction": 0.34, "test_fraction": 0.0},
                    "epochs": 3,
                    "batch_size": 4,
                    "learning_rate": 0.003,
                },
                {"step": "segment"},
            ],
        }
    )
    run = run_workflow(validate_workflow_text(text), text)
    client = mlflow.tracking.MlflowClient(run.tracking_uri)
    params = client.get_run(run.mlflow_run_id).data.params
    assert params["train.used_gpu"] == "True"
    assert params["scaling.workers"] == str(torch.cuda.device_count())
    losses = [m.value for m in sorted(client.get_metric_history(run.mlflow_run_id, "train_loss"), key=lambda m: m.step)]
    assert len(losses) == 3 and losses[-1] < losses[0]  # the sums crossed the process group every epoch
    outputs = pd.read_parquet(run.outputs[2]["outputs"])
    assert len(outputs) == len(list((ct_archive / "images").rglob("*.dcm")))

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
from tests.small_workflows import small_quickstart

pytestmark = [pytest.mark.gpu, pytest.mark.ray, pytest.mark.slow]


def test_default_scaling_trains_one_worker_per_gpu_and_segments_every_slice(
    ray_session, ct_archive: Path, tmp_path: Path
) -> None:
    from segops.workflows import run_workflow

    # the quickstart's scaling left to its default: one worker per GPU
    text = yaml.safe_dump(small_quickstart(tmp_path, ct_archive, "gpu-train", {"epochs": 3}, {}))
    run = run_workflow(validate_workflow_text(text), text)
    client = mlflow.tracking.MlflowClient(run.tracking_uri)
    params = client.get_run(run.mlflow_run_id).data.params
    assert params["train.used_gpu"] == "True"
    assert params["scaling.workers"] == str(torch.cuda.device_count())
    losses = [m.value for m in sorted(client.get_metric_history(run.mlflow_run_id, "train_loss"), key=lambda m: m.step)]
    assert len(losses) == 3 and losses[-1] < losses[0]  # the sums crossed the process group every epoch
    outputs = pd.read_parquet(run.outputs[2]["outputs"])
    assert len(outputs) == len(list((ct_archive / "images").rglob("*.dcm")))

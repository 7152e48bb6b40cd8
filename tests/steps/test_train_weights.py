"""The train step looks for published starting weights on the driver first, before it reads any
data or starts any worker (no Ray here: the step fails before it would need it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from segops.config.schema import TrainStep
from segops.errors import CheckpointError
from segops.steps import train
from tests.steps.contexts import make_context


def test_missing_coco_weights_stop_the_train_step_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    step = TrainStep(step="train", model={"arch": "maskrcnn", "backbone": "resnet50_fpn", "weights": "coco"})
    ctx = make_context(tmp_path)  # no ingest result: the step would fail on that next
    expected = tmp_path / "empty-torch-home" / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    with pytest.raises(CheckpointError, match="https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco") as e:
        train.run(step, ctx)
    assert str(expected) in str(e.value) and not expected.parent.exists()
    assert not (ctx.run_dir / "init-weights").exists()

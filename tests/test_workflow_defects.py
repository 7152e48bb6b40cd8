"""First contact with an inspection folder as public sets ship it (issue: label hygiene and
``segops plan``): JPEG photos with same-name anti-aliased PNG masks in the same folders, 70 %
defect-free, stray overview figures in the root.

- A hand-written workflow without ``labels.threshold`` stops before any training worker starts,
  with one error that names the stored values, the files and the fix.
- ``segops plan`` on the folder writes a workflow that, run unedited, learns the rare defects:
  held-out foreground Dice >= 0.6 on the defect photos, and the fingerprint is stored with the model.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from segops.cli import app
from segops.config.load import load_workflow, validate_workflow_text
from segops.data.fingerprint import Fingerprint
from segops.errors import LabelValueError
from segops.steps.results import SegmentResult, TrainResult
from tests.stores import sqlite_store

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segops.synth import make_defect_archive

    root = tmp_path_factory.mktemp("defects")
    make_defect_archive(root / "parts", count=80, seed=4, size=72)
    return root


def test_anti_aliased_masks_stop_the_run_before_training(parts: Path) -> None:
    from segops.workflows import run_workflow

    text = yaml.safe_dump(
        {
            "name": "defects-no-threshold",
            "output_dir": str(parts / "runs"),
            "tracking": {"uri": sqlite_store(parts), "experiment": "defects"},
            "steps": [
                {
                    "step": "ingest",
                    "source": {
                        "kind": "images",
                        "path": str(parts / "parts"),
                        "exclude": ["README.png", "dataset.jpg"],
                        "labels": {"kind": "mask-png", "path": str(parts / "parts")},
                    },
                },
                {
                    "step": "train",
                    "model": {"arch": "unet", "classes": 2},
                    "epochs": 1,
                    "preprocess": {"patch_size": [32, 32]},
                },
            ],
        }
    )
    start = time.monotonic()
    with pytest.raises(LabelValueError, match=r"labels\.threshold: 128") as err:
        run_workflow(validate_workflow_text(text), text)
    assert time.monotonic() - start < 120  # ingest only: no training epoch ran
    message = str(err.value)
    assert "model.classes" in message or "classes" in message
    run_dir = next((parts / "runs").iterdir())
    assert not (run_dir / "ray-train").exists()
    dataset = pd.read_parquet(run_dir / "dataset", columns=["rel_path", "status"])
    # masks beside their images and the two figures are not images: 80 photos, all decoded
    assert len(dataset) == 80 and set(dataset["status"]) == {"ok"}
    assert not dataset["rel_path"].str.endswith(".png").any()


def test_planned_workflow_learns_the_rare_defects(parts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segops.workflows import run_workflow

    monkeypatch.chdir(parts)
    out = parts / "plan" / "parts.yaml"
    result = CliRunner().invoke(
        app, ["plan", "parts", "-o", str(out), "--budget-minutes", "1.5", "--name", "parts-plan"]
    )
    assert result.exit_code == 0, result.output
    spec = load_workflow(out)  # unedited
    assert spec.steps[0].source.labels.threshold == 128
    run = run_workflow(spec, out.read_text())

    report = pd.read_parquet(run.latest(SegmentResult).report)
    heldout_defects = report[(report["split"] == "test") & (report["label_fg_fraction"] > 0)]
    assert len(heldout_defects) >= 3
    assert heldout_defects["dice"].mean() >= 0.6, heldout_defects[["rel_path", "dice", "fg_fraction"]]
    assert run.latest(SegmentResult).metrics["segment_heldout_fg_dice_mean"] == pytest.approx(
        heldout_defects["dice"].mean()
    )

    stored = Fingerprint.from_json((run.latest(TrainResult).checkpoint / "fingerprint.json").read_text())
    assert stored.n_labelled == 80
    artifacts = {a.path for a in MlflowClient(run.tracking_uri).list_artifacts(run.mlflow_run_id, "train")}
    assert "train/fingerprint.json" in artifacts
    mlflow.set_tracking_uri(run.tracking_uri)
    model = mlflow.pyfunc.load_model(run.latest(TrainResult).model_uri)  # the extra file in the model folder is ignored
    assert model.predict(np.zeros((1, 1, 64, 48), np.float32)).shape == (1, 64, 48)

"""Label census at ingest and the label-value check before training, on real Ray and MLflow.

Anti-aliased masks (values 0..255 on edges) used to reach Ray Train workers and fail in MONAI's
one_hot after a minute; now ingest records what the labels hold and train stops in seconds.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from segops.cluster.label_check import check_dataset_labels
from segops.config import validate_workflow_text
from segops.data.instances import INSTANCE_STRIDE as S
from segops.errors import LabelValueError
from tests.stores import sqlite_store

from ..data.test_label_census import antialiased_mask

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]

N = 8


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """8 gray JPEG photos in images/ and their anti-aliased PNG masks (same stem) in labels/."""
    root = tmp_path_factory.mktemp("antialiased")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(7)
    masks = {}
    for i in range(N):
        mask = antialiased_mask(64, (20 + 3 * i, 30), 8 + i)
        image = np.clip(60 + 0.5 * mask + rng.normal(0, 8, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"part{i}.jpg", quality=90)
        Image.fromarray(mask).save(root / "labels" / f"part{i}.png")
        masks[str((root / "labels" / f"part{i}.png").resolve())] = mask
    return {"root": root, "masks": masks}


def _text(root: Path, name: str, steps: list[dict]) -> str:
    tracking = {"uri": sqlite_store(root), "experiment": "labels"}
    spec = {
        "name": name,
        "output_dir": str(root / "runs"),
        "cluster": {"num_cpus": 2},
        "tracking": tracking,
        "steps": steps,
    }
    return yaml.safe_dump(spec)


def _ingest(photos: dict, **label_options) -> dict:
    labels = {"kind": "mask-png", "path": str(photos["root"] / "labels")} | label_options
    return {"step": "ingest", "source": {"kind": "images", "path": str(photos["root"] / "images"), "labels": labels}}


TRAIN = {
    "step": "train",
    "epochs": 1,
    "batch_size": 2,
    "register_model": False,
    "model": {"arch": "unet", "channels": [8, 16], "strides": [2], "num_res_units": 0},
    "preprocess": {"patch_size": [32, 32]},
}


@pytest.fixture(scope="module")
def failed_run(photos: dict) -> dict:
    from segops.workflows import run_workflow

    text = _text(photos["root"], "antialiased", [_ingest(photos), TRAIN])
    warnings = _Collect()
    logging.getLogger("segops.steps.ingest").addHandler(warnings)
    try:
        with pytest.raises(LabelValueError) as err:
            run_workflow(validate_workflow_text(text), text)
    finally:
        logging.getLogger("segops.steps.ingest").removeHandler(warnings)
    (run_dir,) = (photos["root"] / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {
        "error": str(err.value),
        "run_dir": run_dir,
        "manifest": manifest,
        "warnings": warnings.messages,
        "text": text,
    }


class _Collect(logging.Handler):
    """The ingest step's warnings, for a module-scoped fixture (caplog is per test)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.slow
def test_train_stops_in_seconds_with_the_threshold_fix(failed_run: dict, photos: dict) -> None:
    message = failed_run["error"]
    assert message.startswith("label value(s) [") and "model.classes: 2, so 0..1" in message
    assert f"{N} of {N} label file(s) carry them" in message
    assert "labels.threshold: 128" in message
    assert str(photos["root"] / "labels" / "part0.png") in message
    train = failed_run["manifest"]["steps"][1]
    assert train["state"] == "failed" and train["error"].startswith("LabelValueError: label value(s)")
    elapsed = datetime.fromisoformat(train["finished"]) - datetime.fromisoformat(train["started"])
    assert elapsed.total_seconds() < 30
    assert not (failed_run["run_dir"] / "ray-train").exists()  # no Ray Train worker ever started


@pytest.mark.slow
def test_ingest_writes_the_label_census_and_logs_it(failed_run: dict, photos: dict) -> None:
    census = pd.read_parquet(failed_run["run_dir"] / "labels.parquet")
    values, pixels = np.unique(np.stack(list(photos["masks"].values())), return_counts=True)
    files = [sum(int((m == v).any()) for m in photos["masks"].values()) for v in values]
    assert census["value"].tolist() == values.tolist() and census["pixels"].tolist() == pixels.tolist()
    assert census["files"].tolist() == files and census.loc[census["value"] == 0, "files"].item() == N
    outputs = failed_run["manifest"]["steps"][0]["outputs"]
    assert outputs["labels"] == str(failed_run["run_dir"] / "labels.parquet")
    client = MlflowClient(f"sqlite:///{photos['root']}/mlflow.db")
    artifacts = client.list_artifacts(failed_run["manifest"]["mlflow_run_id"], "ingest")
    assert "ingest/labels.csv" in {a.path for a in artifacts}
    (warning,) = [w for w in failed_run["warnings"] if "label(s) hold values" in w]
    assert (
        warning.startswith(f"{N} of {N} label(s) hold values that are neither") and "labels.threshold: 128" in warning
    )


@pytest.mark.slow
def test_segment_check_and_older_datasets_without_census_columns(failed_run: dict, tmp_path: Path) -> None:
    dataset = failed_run["run_dir"] / "dataset"
    with pytest.raises(LabelValueError, match=r"model.classes: 2.*labels.threshold: 128"):
        check_dataset_labels(dataset, classes=2, instance=False)
    check_dataset_labels(dataset, classes=256, instance=False)  # every 8-bit value is a class: fits
    old = tmp_path / "old-dataset"  # as written before the census columns existed
    old.mkdir()
    table = pads.dataset(str(dataset), format="parquet").to_table()
    pq.write_table(table.drop_columns(["label_values", "label_pixels"]), old / "part-0.parquet")
    with pytest.raises(LabelValueError, match=rf"{N} of {N} label file\(s\) carry them.*labels.threshold: 128"):
        check_dataset_labels(old, classes=2, instance=False)


@pytest.mark.slow
def test_cli_prints_the_error_without_a_traceback(failed_run: dict, photos: dict) -> None:
    from typer.testing import CliRunner

    from segops.cli import app

    workflow = photos["root"] / "antialiased.yaml"
    workflow.write_text(failed_run["text"])
    result = CliRunner().invoke(app, ["run", str(workflow)])  # resumes the failed run: train fails again
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in output
    assert "run failed: label value(s) [" in output and "labels.threshold: 128" in output


@pytest.mark.slow
def test_threshold_gives_a_binary_census_and_no_warning(photos: dict, caplog: pytest.LogCaptureFixture) -> None:
    from segops.workflows import run_workflow

    text = _text(photos["root"], "thresholded", [_ingest(photos, threshold=128)])
    with caplog.at_level(logging.WARNING, logger="segops.steps.ingest"):
        result = run_workflow(validate_workflow_text(text), text)
    census = pd.read_parquet(result.run_dir / "labels.parquet")
    fg = sum(int((m >= 128).sum()) for m in photos["masks"].values())
    assert census.to_dict("list") == {
        "value": [0, 1],
        "records": [N, N],
        "files": [N, N],
        "pixels": [N * 64 * 64 - fg, fg],
    }
    assert "labels.threshold" not in caplog.text


def test_segment_source_masks_are_checked_without_decoding_images(photos: dict) -> None:
    """A segment step that decodes a folder as it goes reads its mask files alone first."""
    from segops.cluster.datasets import mask_label_rows
    from segops.cluster.label_check import check_source_labels
    from segops.config.schema import ImageSource

    labels = {"kind": "mask-png", "path": photos["root"] / "labels"}
    source = ImageSource(kind="images", path=photos["root"] / "images", labels=labels)
    with pytest.raises(LabelValueError, match=r"labels\.threshold: 128") as err:
        check_source_labels(source, classes=2)
    assert f"{N} of {N} label file(s)" in str(err.value)
    thresholded = ImageSource(kind="images", path=photos["root"] / "images", labels=labels | {"threshold": 128})
    check_source_labels(thresholded, classes=2)  # {0, 1}: passes
    rows = mask_label_rows(thresholded).set_index("label_uri")
    assert set(rows.index) == set(photos["masks"])
    for uri, mask in photos["masks"].items():
        assert list(rows.loc[uri, "label_values"]) == [0, 1]
        assert list(rows.loc[uri, "label_pixels"]) == [int((mask < 128).sum()), int((mask >= 128).sum())]


def test_segment_source_class_masks_of_instance_pngs_are_checked(photos: dict, tmp_path: Path) -> None:
    """Instance-png labels whose classes sit in class masks (``classes_pattern``) are checked from
    those masks alone before any actor starts: a class the model lacks fails, naming the file."""
    from segops.cluster.datasets import mask_label_rows
    from segops.cluster.label_check import check_source_labels
    from segops.config.schema import ImageSource

    (tmp_path / "instances").mkdir()
    (tmp_path / "classes").mkdir()
    ids = np.zeros((64, 64), np.uint16)
    ids[5:15, 5:15], ids[30:40, 30:50] = 1, 2
    for i in range(N):
        classes = np.where(ids == 1, 1, np.where(ids == 2, 3 if i == 5 else 2, 0)).astype(np.uint8)
        Image.fromarray(ids).save(tmp_path / "instances" / f"part{i}.png")
        Image.fromarray(classes).save(tmp_path / "classes" / f"part{i}.png")
    labels = {
        "kind": "instance-png",
        "path": tmp_path,
        "pattern": "instances/{rel_stem}.png",
        "classes_pattern": "classes/{rel_stem}.png",
    }
    source = ImageSource(kind="images", path=photos["root"] / "images", labels=labels)
    rows = mask_label_rows(source).set_index("label_uri")
    bad = str((tmp_path / "classes" / "part5.png").resolve())
    assert list(rows.loc[bad, "label_values"]) == [S + 1, 3 * S + 1]
    assert list(rows.loc[bad, "label_pixels"]) == [100, 200]
    assert list(rows.loc[str((tmp_path / "classes" / "part0.png").resolve()), "label_values"]) == [S + 1, 2 * S + 1]
    check_source_labels(source, classes=4, instance=True)  # classes 1..3 fit a 4-class model
    with pytest.raises(LabelValueError, match="part5.png") as err:
        check_source_labels(source, classes=3, instance=True)
    assert f"1 of {N} label file(s)" in str(err.value)

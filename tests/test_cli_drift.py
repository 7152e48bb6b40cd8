"""``segops drift``: exit 0 on a fresh sample of the training generator, 3 when the intensities
moved (the table and drift.json say what), 2 for a model reference that is no model."""

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segops.cli import EXIT_DRIFT, app

from .steps.test_drift import drift_archives, drift_model

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.ray
def test_drift_exit_codes_and_report(ray_session, tmp_path: Path) -> None:
    images = drift_archives(tmp_path / "data", count=24)
    checkpoint = drift_model(tmp_path, images["train"])

    ok = runner.invoke(app, ["drift", str(images["fresh"]), "--model", str(checkpoint), "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert "nothing moved" in ok.output and "encoder embedding" in ok.output
    embedding = json.loads((tmp_path / "a" / "drift.json").read_text())["rows"][-1]
    assert embedding["feature"] == "encoder embedding" and math.isfinite(embedding["distance"])

    args = ["drift", str(images["brighter"]), "--model", str(checkpoint), "--out", str(tmp_path / "b")]
    moved = runner.invoke(app, args)
    assert moved.exit_code == EXIT_DRIFT == 3, moved.output
    assert "intensity histogram, image mean intensity moved" in moved.output
    body = json.loads((tmp_path / "b" / "drift.json").read_text())
    assert body["verdict"] == "drift" and body["n_new"] == 24
    assert (tmp_path / "b" / "drift.html").read_text().count("background:#fdd") == 2

    missing = runner.invoke(app, ["drift", str(images["fresh"]), "--model", str(tmp_path / "no-model")])
    assert missing.exit_code == 2 and "neither a model URI" in missing.output

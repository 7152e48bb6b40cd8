"""The run summary: foreground Dice first, and a warning when the model predicted no foreground."""

from pathlib import Path

import pytest

from segops.cli import _print_summary
from segops.steps.results import SegmentResult
from segops.workflows import RunResult


def _result(metrics: dict[str, float]) -> RunResult:
    root = Path("runs/r1")
    segment = SegmentResult(root / "outputs.parquet", root / "report.parquet", "d1", root, str(root), metrics)
    return RunResult("r1", root, "m1", "sqlite:///mlruns.db", [segment.to_manifest()], (segment,))


def test_summary_leads_with_foreground_dice_and_warns_on_empty_predictions(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = {
        "segment_heldout_dice_mean": 0.72,
        "segment_heldout_fg_dice_mean": 0.0,
        "segment_fg_dice_mean": 0.0,
        "segment_dice_mean": 0.7,
        "segment_empty_prediction_fraction": 1.0,
    }
    _print_summary(_result(metrics))
    text = capsys.readouterr().out
    rows = [line.strip("│┃ ").split(" ")[0] for line in text.splitlines()]
    dice_rows = [r for r in rows if "dice" in r]
    assert dice_rows == ["heldout_fg_dice_mean", "fg_dice_mean", "heldout_dice_mean", "dice_mean"]
    assert "predicted no foreground on any segmented image" in text
    _print_summary(_result(metrics | {"segment_empty_prediction_fraction": 0.7}))
    assert "predicted no foreground" not in capsys.readouterr().out

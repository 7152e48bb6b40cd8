"""Real run contexts for step unit tests: an MLflow sqlite store in a temp folder, a started run,
and tiny U-Net checkpoints built with segops' own model builder (no Ray, no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segops.config.schema import PreprocessSpec, PromoteStep, TrackingSpec, UNetSpec, WindowIntensity, WorkflowSpec
from segops.engine.checkpoint import save_checkpoint
from segops.models import build_model
from segops.steps.context import RunContext
from segops.steps.results import TrainResult
from segops.tracking import RunTracker
from tests.stores import sqlite_store

TINY_UNET = UNetSpec(arch="unet", channels=(4, 8), strides=(2,), num_res_units=0)
TINY_PREPROCESS = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=-160, upper=240), patch_size=(16, 16))


def make_context(root: Path, results: list[Any] | None = None, seed: int = 0, run: str = "run") -> RunContext:
    """A run context whose tracker has started a new run in ``<root>/mlflow.db`` (created on first
    use, shared by later contexts on the same root); run folder ``<root>/<run>``."""
    spec = WorkflowSpec(
        name="unit",
        seed=seed,
        tracking=TrackingSpec(uri=sqlite_store(root), experiment="unit"),
        steps=[PromoteStep(step="promote")],
    )
    tracker = RunTracker(spec.tracking)
    run_id = tracker.start(run, {})
    run_dir = root / run
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(spec, "hash", run_id, run_dir, tracker, {"CPU": 1.0}, list(results or []))


def trained(checkpoint: Path | str, registered: tuple[str, str] | None = None) -> TrainResult:
    """A train step's result as later steps see it: its checkpoint, and its registered version."""
    uri = None if registered is None else f"models:/{registered[0]}/{registered[1]}"
    return TrainResult(Path(checkpoint), frozenset(), 0, "val_dice", {}, None, registered, uri)


def tiny_checkpoint(folder: Path, seed: int) -> Path:
    """An untrained 2-class 2D U-Net checkpoint; different seeds give different weights."""
    torch.manual_seed(seed)
    return save_checkpoint(folder, build_model(TINY_UNET), TINY_UNET, TINY_PREPROCESS)

"""Real MLflow stores for the tracking tests: sqlite files in tmp folders, no server, no mocks.

Each store is a copy of one migrated empty database (:func:`tests.stores.sqlite_store`), so each
test still gets a store of its own without paying MLflow's schema migrations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segops.config.schema import PreprocessSpec, TrackingSpec, UNetSpec
from tests.stores import sqlite_store

MODEL = "tiny-unet"
SPEC = UNetSpec(arch="unet", channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return sqlite_store(tmp_path / "store")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real segops checkpoint folder of a tiny (untrained, seeded) 2D U-Net."""
    from segops.engine.checkpoint import save_checkpoint
    from segops.models import build_model

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint", build_model(SPEC), SPEC, PreprocessSpec())


@pytest.fixture(scope="session")
def logged_model(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``checkpoint`` logged as a pyfunc by RunTracker.log_model, registered as ``tiny-unet`` v1 (alias champion)."""
    from segops.tracking import RunTracker

    uri = sqlite_store(tmp_path_factory.mktemp("logged") / "store")
    example = np.random.default_rng(1).normal(size=(2, 1, 16, 16)).astype(np.float32)
    tracker = RunTracker(TrackingSpec(uri=uri, experiment="registry"))
    run_id = tracker.start("train", {})
    registered = tracker.log_model(checkpoint, MODEL, example, {"segops.parent_model": "none"})
    tracker.set_alias(MODEL, "champion", registered.version)
    tracker.end()
    return {"uri": uri, "run_id": run_id, "registered": registered, "tracker": tracker, "example": example}

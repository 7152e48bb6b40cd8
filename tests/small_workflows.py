"""Workflow specs the end-to-end tests share: the quickstart's steps at test size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.stores import sqlite_store


def small_quickstart(
    root: Path, archive: Path, name: str, train: dict[str, Any], segment: dict[str, Any] | None
) -> dict[str, Any]:
    """The quickstart's ingest → train (→ segment) on a synthetic CT ``archive`` (``images/`` +
    ``labels/``): a smaller U-Net on 64 px patches, two of three series training (as the timings
    assume); ``train`` and ``segment`` add to or replace the steps' settings; MLflow in ``root``."""
    steps: list[dict[str, Any]] = [
        {
            "step": "ingest",
            "source": {
                "kind": "dicom",
                "path": str(archive / "images"),
                "labels": {"kind": "mask-png", "path": str(archive / "labels")},
            },
        },
        {
            "step": "train",
            "model": {"arch": "unet", "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
            "preprocess": {"intensity": {"kind": "window", "lower": -160, "upper": 240}, "patch_size": [64, 64]},
            "split": {"val_fraction": 0.34, "test_fraction": 0.0},
            "batch_size": 4,
            "learning_rate": 0.003,
            "patches_per_image": 2,
            **train,
        },
    ]
    if segment is not None:
        steps.append({"step": "segment", **segment})
    return {
        "name": name,
        "output_dir": str(root / "runs"),
        "cluster": {},
        "tracking": {"uri": sqlite_store(root), "experiment": name},
        "steps": steps,
    }

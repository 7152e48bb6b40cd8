"""3D models end to end: train on volume records, segment them with the 3D sliding window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from segops.config import validate_workflow_text
from segops.config.schema import PreprocessSpec, SegmentStep, UNetSpec
from segops.data.mask_files import read_mask_png
from segops.engine.checkpoint import LoadedModel
from segops.errors import StepError
from segops.models import build_model
from segops.steps.segment import _check_model_fits_step
from segops.synth import make_ct_archive
from tests.stores import sqlite_store

MODEL_3D = {"arch": "unet", "spatial_dims": 3, "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def test_a_3d_model_on_slice_records_stops_the_segment_step() -> None:
    spec = UNetSpec.model_validate(MODEL_3D)
    loaded = LoadedModel(build_model(spec), spec, PreprocessSpec(patch_size=(8, 32, 32)), {})
    with pytest.raises(
        StepError, match=r"3D U-Net \(model.spatial_dims: 3\): it segments volume records, not 'slices'"
    ):
        _check_model_fits_step(SegmentStep(step="segment", model="ckpt"), loaded)
    with pytest.raises(StepError, match=r"roi_size \[32, 32\] has 2 sizes; this 3D model needs 3"):
        _check_model_fits_step(
            SegmentStep.model_validate(
                {"step": "segment", "model": "ckpt", "records": "volumes", "sliding_window": {"roi_size": [32, 32]}}
            ),
            loaded,
        )
    _check_model_fits_step(SegmentStep(step="segment", model="ckpt", records="volumes"), loaded)


@pytest.mark.ray
@pytest.mark.slow
def test_3d_unet_trains_on_volumes_and_segments_each_series_whole(ray_session, tmp_path: Path) -> None:
    import mlflow
    import nibabel as nib

    from segops.workflows import run_workflow

    archive = tmp_path / "ct"
    make_ct_archive(archive, series=3, slices=8, seed=0, size=64)
    text = yaml.safe_dump(
        {
            "name": "vol3d",
            "output_dir": str(tmp_path / "runs"),
            "cluster": {"num_cpus": 2},
            "tracking": {"uri": sqlite_store(tmp_path), "experiment": "vol3d"},
            "steps": [
                {
                    "step": "ingest",
                    "volumes": True,
                    "source": {
                        "kind": "dicom",
                        "path": str(archive / "images"),
                        "labels": {"kind": "mask-png", "path": str(archive / "labels")},
                    },
                },
                {
                    "step": "train",
                    "model": MODEL_3D,
                    "epochs": 2,
                    "batch_size": 1,
                    "patches_per_image": 2,
                    "preprocess": {
                        "intensity": {"kind": "window", "lower": -160, "upper": 240},
                        "patch_size": [8, 32, 32],
                    },
                    # 3 volumes: no test set, so 2 train (one per training worker) and 1 validates
                    "split": {"val_fraction": 0.34, "test_fraction": 0.0, "seed": 0},
                    "scaling": {"workers": 2},
                },
                {
                    "step": "segment",
                    "records": "volumes",
                    "outputs": ["png"],
                    "batch_size": 1,
                    "sliding_window": {"tile_batch": 2},
                },
            ],
        }
    )
    torch.manual_seed(0)
    run = run_workflow(validate_workflow_text(text), text)
    train, segment = run.outputs[1], run.outputs[2]
    # one validation volume, Dice per volume through the 3D window: the kept epoch's logged val_dice
    history = mlflow.tracking.MlflowClient(run.tracking_uri).get_metric_history(run.mlflow_run_id, "val_dice")
    assert train["best_val_dice"] == pytest.approx({m.step: m.value for m in history}[train["best_epoch"]])
    columns = ["case_id", "slices", "height", "width", "source_uris"]
    volumes = pd.read_parquet(run.run_dir / "volumes", columns=columns).set_index("case_id")
    outputs = pd.read_parquet(segment["outputs"]).set_index("case_id")
    assert sorted(outputs.index) == sorted(volumes.index)  # one output per series
    dice: dict[str, float] = {}
    for uid, row in volumes.iterrows():
        nifti = nib.load(outputs.loc[uid, "mask_path"])
        assert nifti.shape == (row["width"], row["height"], row["slices"]) == (64, 64, 8)
        mask = np.transpose(np.asarray(nifti.dataobj), (2, 1, 0))  # (x, y, z) → (z, y, x)
        assert set(np.unique(mask).tolist()) <= {0, 1}
        labels = [
            archive / "labels" / Path(u).relative_to(archive / "images").with_suffix(".png") for u in row.source_uris
        ]
        truth = np.stack([read_mask_png(path, mask.shape[1:]) for path in labels]).astype(bool)
        denom = int(mask.sum()) + int(truth.sum())
        dice[uid] = 1.0 if denom == 0 else 2 * int(np.logical_and(mask == 1, truth).sum()) / denom
    report = pd.read_parquet(segment["report"])
    assert len(report) == 3 and report["split"].value_counts().to_dict() == {"train": 2, "val": 1}
    assert segment["segment_heldout_cases"] == 0 and "segment_heldout_dice_mean" not in segment  # nothing held out
    assert segment["segment_val_dice_mean"] == pytest.approx(report.loc[report["split"] == "val", "dice"].mean())
    assert report.set_index("case_id")["dice"].to_dict() == pytest.approx(dice)  # recomputed from the files
    mlflow.set_tracking_uri(run.tracking_uri)
    mlflow.set_registry_uri(run.tracking_uri)
    signature = mlflow.models.get_model_info(train["model_uri"]).signature  # any batch, any volume size
    assert signature.inputs.inputs[0].shape == (-1, 1, -1, -1, -1) and signature.outputs.inputs[0].shape == (
        -1,
        -1,
        -1,
        -1,
    )


def _nnunet_nifti_dataset(root: Path, cases: int = 4) -> dict[str, np.ndarray]:
    """``imagesTr/case_00k_0000.nii.gz`` + ``labelsTr/case_00k.nii.gz``: 16 slices of 32x32 (stored
    (I, J, K) = (32, 32, 16)), a bright block as class 1, each case with its own non-identity
    affine (left- and right-handed, anisotropic, oblique). Returns each case's affine."""
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    turn = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    columns = [np.diag([-0.8, 0.8, 2.5]), np.diag([0.7, -0.9, 2.0]), turn @ np.diag([1.0, 1.0, 3.0]), np.eye(3)]
    affines = {}
    for k in range(cases):
        affine = np.eye(4)
        affine[:3, :3], affine[:3, 3] = columns[k % len(columns)], (10.0 * k, -20.0, 5.0 * k)
        label = np.zeros((32, 32, 16), np.uint8)
        x, y, z = rng.integers(4, 16, size=3)
        label[x : x + 12, y : y + 12, z // 2 : z // 2 + 8] = 1
        image = (label * 150.0 + rng.normal(20, 10, size=label.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{k:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{k:03d}.nii.gz")
        affines[f"case_{k:03d}"] = affine
    return affines


@pytest.mark.ray
@pytest.mark.slow
def test_a_nifti_dataset_in_nnunet_layout_trains_in_3d_and_masks_align_with_the_inputs(
    ray_session, tmp_path: Path
) -> None:
    import nibabel as nib

    from segops.workflows import run_workflow

    root = tmp_path / "Dataset001_Blocks"
    affines = _nnunet_nifti_dataset(root)
    text = yaml.safe_dump(
        {
            "name": "nifti3d",
            "output_dir": str(tmp_path / "runs"),
            "cluster": {"num_cpus": 2},
            "tracking": {"uri": sqlite_store(tmp_path), "experiment": "nifti3d"},
            "steps": [
                {
                    "step": "ingest",
                    "volumes": True,
                    "source": {
                        "kind": "volumes",
                        "path": str(root / "imagesTr"),
                        "labels": {"kind": "volume", "path": str(root / "labelsTr")},
                    },
                },
                {
                    "step": "train",
                    "model": MODEL_3D,
                    "epochs": 1,
                    "batch_size": 1,
                    "patches_per_image": 1,
                    "preprocess": {
                        "intensity": {"kind": "window", "lower": 0, "upper": 200},
                        "patch_size": [8, 16, 16],
                    },
                    "split": {"val_fraction": 0.25, "test_fraction": 0.0, "seed": 0},
                    "scaling": {"workers": 1},
                },
                {"step": "segment", "records": "volumes", "outputs": ["png"], "batch_size": 1},
            ],
        }
    )
    torch.manual_seed(0)
    run = run_workflow(validate_workflow_text(text), text)
    ingest, segment = run.outputs[0], run.outputs[2]
    volumes = pd.read_parquet(run.run_dir / "volumes", columns=["case_id", "slices", "has_label"]).set_index("case_id")
    assert sorted(volumes.index) == sorted(affines) and volumes["slices"].tolist() == [16] * 4
    assert volumes["has_label"].all() and ingest["ingest_labelled"] == 64.0
    outputs = pd.read_parquet(segment["outputs"]).set_index("case_id")
    assert sorted(outputs.index) == sorted(affines)
    for case, affine in affines.items():
        mask = nib.load(outputs.loc[case, "mask_path"])
        image = nib.load(root / "imagesTr" / f"{case}_0000.nii.gz")
        assert mask.shape == image.shape == (32, 32, 16)
        assert np.allclose(mask.affine, image.affine, atol=1e-4) and np.allclose(mask.affine, affine, atol=1e-4)
        assert set(np.unique(np.asarray(mask.dataobj)).tolist()) <= {0, 1}
    report = pd.read_parquet(segment["report"])
    assert sorted(report["case_id"]) == sorted(affines) and report["split"].value_counts().to_dict() == {
        "train": 3,
        "val": 1,
    }

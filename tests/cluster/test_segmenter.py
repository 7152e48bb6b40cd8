"""The inference actor class, called directly (no Ray): per-case failure isolation and parts."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from segops.cluster.infer import _Segmenter, read_parts
from segops.config.schema import PreprocessSpec, SlidingWindowSpec, UNetSpec, ZScoreIntensity
from segops.data.mask_files import read_mask_png
from segops.engine.cases import InferenceSettings
from segops.engine.checkpoint import save_checkpoint
from segops.models import build_model
from segops.outputs.case_outputs import OutputConfig
from segops.outputs.reports import RESULT_COLUMNS, RESULT_SCHEMA


def _batch(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    n = len(images)
    column = lambda v: np.array([v] * n, dtype=object)  # noqa: E731
    return {
        "case_id": np.array([f"c{i}" for i in range(n)], dtype=object),
        "group_id": column("g"),
        "source_uri": column("/x"),
        "rel_path": np.array([f"img{i}.png" for i in range(n)], dtype=object),
        "frame": np.zeros(n, int),
        "modality": column("XC"),
        "has_label": np.array([True] * n),
        "label_uri": column(""),
        "status": column("ok"),
        "stage": column(""),
        "error_type": column(""),
        "error": column(""),
        "transfer_syntax": column("PNG"),
        "image": np.array(images + [None], dtype=object)[:-1],
        "label": np.array([np.ones(img.shape[1:], np.uint8) for img in images] + [None], dtype=object)[:-1],
    }


def _call(actor: _Segmenter, batch: dict[str, np.ndarray]) -> pd.DataFrame:
    """Call the actor on ``batch``; its rows as the part it wrote records them (the actor returns
    only each case's id and seconds to Ray: the rows are read back from the parts)."""
    out = actor(batch)
    assert list(out) == ["case_id", "infer_seconds"] and list(out["case_id"]) == list(batch["case_id"])
    assert np.all(out["infer_seconds"] > 0)
    digest = hashlib.sha1("\n".join(sorted(batch["case_id"])).encode()).hexdigest()[:20]  # write_part's name
    return pd.read_parquet(Path(actor.parts_dir) / f"part-{digest}.parquet")


def _dice_against_all_ones(fg_fraction: float) -> float:
    """Dice of a prediction covering ``fg_fraction`` of the pixels against a label of all ones:
    2|P|/(|P| + N) = 2f/(f + 1)."""
    return 2 * fg_fraction / (fg_fraction + 1)


def _actor(
    tmp_path: Path, spec: UNetSpec, preprocess: PreprocessSpec, settings: InferenceSettings | None = None
) -> _Segmenter:
    """An actor over a freshly initialised (seed 0) checkpoint of ``spec``, writing PNG masks (NIfTI
    for volumes) under ``tmp_path/out`` and its parts under ``tmp_path/parts``."""
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt", build_model(spec), spec, preprocess)
    config = OutputConfig(str(tmp_path / "out"), ("png",), "mirror", {1: "x"}, 2, "digest")
    settings = settings or InferenceSettings(amp=False)
    return _Segmenter(str(tmp_path / "ckpt"), config, str(tmp_path / "parts"), settings)


_SPEC_2D = UNetSpec(arch="unet", in_channels=1, channels=(4, 8), strides=(2,), num_res_units=0)


def test_a_case_that_fails_alone_is_marked_failed_and_the_batch_goes_on(tmp_path: Path) -> None:
    preprocess = PreprocessSpec(intensity=ZScoreIntensity(kind="zscore"), patch_size=(16, 16))
    actor = _actor(tmp_path, _SPEC_2D, preprocess)
    good = np.random.default_rng(0).normal(size=(1, 12, 12)).astype(np.float32)
    bad = np.zeros((2, 12, 12), np.float32)  # two channels: the model takes one, no conversion exists
    out = _call(actor, _batch([good, bad, good.copy()]))
    assert list(out["status"]) == ["ok", "failed", "ok"]
    assert out["error_type"][1] == "ShapeError" and "2 channel" in out["error"][1]
    assert out["mask_path"][1] == "" and Path(out["mask_path"][0]).is_file()
    assert out["mask_sha256"][0] == out["mask_sha256"][2] and len(out["mask_sha256"][0]) == 64
    assert set(out["model"]) == {"digest"} and np.isnan(out["dice"][1])
    fg = float((read_mask_png(out["mask_path"][0], (12, 12)) > 0).mean())
    assert out["fg_fraction"][0] == fg and out["dice"][0] == pytest.approx(_dice_against_all_ones(fg))
    parts = read_parts(tmp_path / "parts")
    assert list(parts.columns) == list(RESULT_COLUMNS) and sorted(parts["case_id"]) == ["c0", "c1", "c2"]
    (part,) = (tmp_path / "parts").glob("part-*.parquet")
    assert pq.read_schema(part).remove_metadata() == RESULT_SCHEMA
    actor(_batch([good]))  # the same case again (a retried batch) is recorded once
    assert len(read_parts(tmp_path / "parts")) == 3


def test_a_case_that_cannot_be_scored_is_marked_failed_and_the_batch_goes_on(tmp_path: Path) -> None:
    actor = _actor(tmp_path, _SPEC_2D, PreprocessSpec(patch_size=(16, 16)))
    image = np.random.default_rng(0).normal(size=(1, 12, 12)).astype(np.float32)
    batch = _batch([image, image.copy()])
    batch["label"][1] = np.ones((10, 12), np.uint8)  # not the image's shape
    out = _call(actor, batch)
    assert list(out["status"]) == ["ok", "failed"] and list(out["stage"]) == ["", "score"]
    assert out["error_type"][1] == "ShapeError" and out["mask_path"][1] == "" and np.isnan(out["fg_fraction"][1])
    assert len(read_parts(tmp_path / "parts")) == 2


def test_a_3d_model_segments_volume_records_whole_and_fails_slice_records(tmp_path: Path) -> None:
    import nibabel as nib

    spec = UNetSpec(arch="unet", spatial_dims=3, channels=(4, 8), strides=(2,), num_res_units=0)
    preprocess = PreprocessSpec(intensity=ZScoreIntensity(kind="zscore"), patch_size=(4, 16, 16))
    actor = _actor(tmp_path, spec, preprocess, InferenceSettings(amp=False, sliding=SlidingWindowSpec(tile_batch=2)))
    volume = np.random.default_rng(0).normal(size=(1, 6, 20, 24)).astype(np.float32)
    batch = _batch([volume]) | {
        "affine": np.array([np.eye(4).ravel()], dtype=object),
        "source_uris": np.array([[]], dtype=object),
    }
    out = _call(actor, batch)
    nifti = nib.load(out["mask_path"][0])
    assert out["mask_path"][0].endswith(".nii.gz") and nifti.shape == (24, 20, 6)  # (x, y, z) of a (Z, H, W) mask
    fg = float((np.asarray(nifti.dataobj) > 0).mean())
    assert list(out["status"]) == ["ok"] and out["dice"][0] == pytest.approx(_dice_against_all_ones(fg))  # one 3D Dice
    out = _call(actor, _batch([volume[:, 0]]))  # a slice record: the segment step refuses this up front
    assert list(out["status"]) == ["failed"] and "takes volumes of shape (C, Z, H, W)" in out["error"][0]

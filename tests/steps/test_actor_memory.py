"""The inference actors' memory request: the run's largest image, probed through the real per-case path."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from segops.config.schema import PreprocessSpec, UNetSpec, ZScoreIntensity
from segops.engine.cases import InferenceSettings
from segops.engine.checkpoint import LoadedModel
from segops.engine.memory import ACTOR_BASE_BYTES, model_bytes
from segops.errors import StepError
from segops.models import build_model
from segops.steps.actor_memory import _dataset_shape, _fingerprint_shape, actor_memory, decoded_row_bytes, run_shape

SETTINGS = InferenceSettings(amp=False)


def _loaded() -> LoadedModel:
    torch.manual_seed(0)
    spec = UNetSpec(arch="unet", classes=2, channels=(4, 8), strides=(2,), num_res_units=0)
    pre = PreprocessSpec(intensity=ZScoreIntensity(kind="zscore"), patch_size=(32, 32))
    return LoadedModel(build_model(spec).eval(), spec, pre, {})


def _dataset(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "dataset"
    path.mkdir()
    pd.DataFrame(rows).to_parquet(path / "part-0.parquet")
    return path


def test_the_largest_ok_image_of_a_dataset_sizes_the_probe(tmp_path: Path) -> None:
    rows = [
        {"status": "ok", "height": 64, "width": 80},
        {"status": "ok", "height": 96, "width": 70},  # 6720 px: the largest readable one
        {"status": "quarantined", "height": 4000, "width": 4000},  # never segmented
    ]
    assert _dataset_shape(_dataset(tmp_path, rows)) == (96, 70)


def test_volume_records_are_sized_by_their_slices(tmp_path: Path) -> None:
    rows = [
        {"status": "ok", "height": 32, "width": 32, "source_uris": ["a"] * 10},
        {"status": "ok", "height": 40, "width": 40, "source_uris": ["b"] * 3},
    ]
    assert _dataset_shape(_dataset(tmp_path, rows)) == (10, 32, 32)


def test_a_folder_source_is_sized_from_the_training_fingerprint(tmp_path: Path) -> None:
    assert _fingerprint_shape(tmp_path) is None
    (tmp_path / "fingerprint.json").write_text(json.dumps({"shapes": [[64, 64, 30], [512, 256, 2], [300, 300, 5]]}))
    assert _fingerprint_shape(tmp_path) == (512, 256)


def test_request_covers_base_model_and_batch_and_refuses_what_no_node_has(tmp_path: Path) -> None:
    loaded = _loaded()
    assert run_shape(None, tmp_path) is None and actor_memory(loaded, SETTINGS, 4, None) is None  # Ray's default
    shape = run_shape(_dataset(tmp_path, [{"status": "ok", "height": 128, "width": 128}]), tmp_path)
    request = actor_memory(loaded, SETTINGS, 4, shape)
    assert request > ACTOR_BASE_BYTES + model_bytes(loaded.model)  # plus what the batch was measured to take
    with pytest.raises(StepError, match=r"one inference actor would need .* GiB .*batch_size 4.* lower the step's"):
        actor_memory(loaded, SETTINGS, 4, shape, available=ACTOR_BASE_BYTES / 2)


def test_a_decoded_row_counts_its_float32_image_and_label() -> None:
    assert decoded_row_bytes(None, 1) == 0
    assert decoded_row_bytes((3000, 4000), 3) == 4 * 4 * 12_000_000  # a 12-megapixel photo: 192 MB
    assert decoded_row_bytes((512, 512), 1) == 4 * 4 * 512 * 512  # a gray slice still counts 3 colour channels
    assert decoded_row_bytes((64, 256, 256), 2) == 4 * 3 * 64 * 256 * 256  # a 2-channel volume: as it is


def test_a_pool_is_sized_from_the_runs_largest_image(tmp_path: Path) -> None:
    from segops.cluster.infer import PoolSize
    from segops.steps.actor_memory import sized_for_run

    loaded, pool = _loaded(), PoolSize(1, 2, 0.5, 0.0, 1)
    dataset = _dataset(tmp_path, [{"status": "ok", "height": 128, "width": 96}])
    sized = sized_for_run(pool, loaded, SETTINGS, 4, dataset, tmp_path)
    assert sized.memory_per_actor > ACTOR_BASE_BYTES + model_bytes(loaded.model)  # measured, as actor_memory does
    assert sized.row_bytes == decoded_row_bytes((128, 96), loaded.model_spec.in_channels)
    assert (sized.min_actors, sized.max_actors, sized.cpus_per_actor) == (1, 2, 0.5)
    assert sized_for_run(pool, loaded, SETTINGS, 4, None, tmp_path) == pool  # no size known: as it was


def test_a_model_with_a_target_spacing_is_probed_at_the_largest_image_as_resampled(tmp_path: Path) -> None:
    """``preprocess.spacing``: a 96x70 image of 2 mm pixels is 192x140 at 1 mm, larger than the
    stored largest image; the decoded rows themselves keep their stored size."""
    pre = PreprocessSpec(spacing=(1.0, 1.0))
    rows = [
        {"status": "ok", "height": 100, "width": 100, "spacing_y": 0.5, "spacing_x": 0.5, "spacing_known": True},
        {"status": "ok", "height": 96, "width": 70, "spacing_y": 2.0, "spacing_x": 2.0, "spacing_known": True},
        {"status": "ok", "height": 120, "width": 90, "spacing_y": 1.0, "spacing_x": 1.0, "spacing_known": False},
    ]
    dataset = _dataset(tmp_path, rows)
    assert run_shape(dataset, tmp_path) == (120, 90)  # as stored: what the pipeline holds
    assert run_shape(dataset, tmp_path, pre) == (192, 140)  # as the network takes them; unknown spacing: as stored
    folder = tmp_path / "model"
    folder.mkdir()
    samples = {"spacing_y": [0.5, 1.5], "spacing_x": [0.8, 1.2]}
    (folder / "fingerprint.json").write_text(json.dumps({"shapes": [[512, 256, 2]], "image_samples": samples}))
    assert run_shape(None, folder) == (512, 256) and run_shape(None, folder, pre) == (768, 307)

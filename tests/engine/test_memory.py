"""The memory probe: resident-memory growth measured around real work, scaled into an actor's request."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from segops.config.schema import PreprocessSpec, UNetSpec, ZScoreIntensity
from segops.engine.cases import InferenceSettings
from segops.engine.checkpoint import LoadedModel
from segops.engine.memory import ACTOR_BASE_BYTES, SAFETY, MemoryProbe, model_bytes, peak_growth, probe_inference
from segops.models import build_model

MIB = 2**20


def test_model_bytes_counts_parameters_and_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.BatchNorm1d(20))
    # weights 10*20 + 20, norm weight + bias 2*20, buffers running mean/var 2*20 (float32) + num_batches (int64)
    assert model_bytes(model) == (200 + 20 + 40 + 40) * 4 + 8


def test_peak_growth_sees_memory_that_was_freed_before_the_call_returned() -> None:
    def spike() -> None:
        block = np.ones(300 * MIB // 8)  # touched: resident
        del block

    growth, seconds = peak_growth(spike)
    assert 250 * MIB < growth < 450 * MIB and seconds > 0
    idle, _ = peak_growth(lambda: None)
    assert idle < 50 * MIB


def test_probe_grows_with_the_image_and_the_request_with_the_batch() -> None:
    torch.manual_seed(0)
    spec = UNetSpec(arch="unet", classes=2, channels=(16, 32), strides=(2,), num_res_units=0)
    pre = PreprocessSpec(intensity=ZScoreIntensity(kind="zscore"), patch_size=(64, 64))
    loaded = LoadedModel(build_model(spec).eval(), spec, pre, {})
    settings = InferenceSettings(amp=False)
    small = probe_inference(loaded, settings, (1, 64, 64))
    large = probe_inference(loaded, settings, (1, 1536, 1536))
    assert small.parameters == large.parameters == model_bytes(loaded.model)
    assert large.peak_per_image > small.peak_per_image + 20 * MIB  # whole-image buffers: 1536² float32 = 9 MiB each
    assert abs(large.actor_bytes(4) - large.actor_bytes(1) - 3 * large.peak_per_image * SAFETY) <= 1
    fixed = MemoryProbe(parameters=10 * MIB, peak_per_image=100 * MIB, seconds=0.1, shape=(1, 8, 8))
    assert fixed.actor_bytes(2) == ACTOR_BASE_BYTES + 10 * MIB + int(2 * 100 * MIB * SAFETY)


def test_training_probe_measures_a_bigger_batch_as_more_memory() -> None:
    from segops.config.schema import TrainStep
    from segops.engine.memory import probe_training

    def step(batch: int, patches: int = 1) -> TrainStep:
        model = {"arch": "unet", "channels": [16, 32, 64], "strides": [2, 2], "num_res_units": 1}
        return TrainStep.model_validate(
            {
                "step": "train",
                "model": model,
                "preprocess": {"patch_size": [256, 256]},
                "batch_size": batch,
                "patches_per_image": patches,
            }
        )

    small, large = probe_training(step(1)), probe_training(step(16))
    assert small.parameters == large.parameters > 0 and large.shape == (16, 1, 256, 256)
    # 16 patches' activations, kept for the backward pass, are far more than one patch's
    assert large.peak_per_image * 16 > small.peak_per_image + 100 * MIB
    # a worker's step holds batch_size images x patches_per_image patches: the probe measures that many
    assert probe_training(step(2, patches=3)).shape == (6, 1, 256, 256)


def test_a_mask_rcnn_worker_is_probed_on_the_runs_largest_image_as_it_trains() -> None:
    """Photos of 300x400 train at 240x320 with min_size 240: the probe is that image with the most
    objects any image holds, not a square min_size one; the resize is torchvision's own."""
    import torch
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from segops.config.schema import TrainStep
    from segops.engine.memory import TrainingImage, largest_training_image, probe_training, resized_shape

    for h, w, lo, hi in ((300, 400, 240, 400), (100, 900, 128, 512), (37, 41, 64, 96), (512, 512, 256, 256)):
        resize = GeneralizedRCNNTransform(lo, hi, [0.0], [1.0])
        batch, _ = resize([torch.zeros(1, h, w)])
        assert resized_shape(h, w, lo, hi) == tuple(batch.image_sizes[0]), (h, w)
    model = {"arch": "maskrcnn", "backbone": "resnet18_fpn", "classes": 2, "min_size": 240, "max_size": 400}
    step = TrainStep.model_validate({"step": "train", "model": model, "batch_size": 1})
    photos = pd.DataFrame(
        {
            "height": [300, 200, 120],
            "width": [400, 200, 700],
            "label_values": [[0, 65537, 65538], [0], list(range(65537, 65542))],
        }
    )
    assert largest_training_image(photos, step.model) == TrainingImage((240, 320), 5)  # 120x700 → 68x400: fewer px
    assert largest_training_image(photos.iloc[:0], step.model) == TrainingImage((240, 240), 1)
    assert largest_training_image(photos.drop(columns="label_values"), step.model).objects == 1  # an older dataset
    model |= {"min_size": 128, "max_size": 192}
    step = TrainStep.model_validate({"step": "train", "model": model, "batch_size": 1})
    assert probe_training(step, TrainingImage((96, 192), 3)).shape == (1, 1, 96, 192)


def test_the_probe_image_scales_without_a_warning_under_per_image_percentiles() -> None:
    import warnings

    from segops.config.schema import PercentileIntensity

    spec = UNetSpec(arch="unet", classes=2, channels=(4, 8), strides=(2,), num_res_units=0)
    pre = PreprocessSpec(intensity=PercentileIntensity(kind="percentile"), patch_size=(32, 32))
    loaded = LoadedModel(build_model(spec).eval(), spec, pre, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a blank image made MONAI warn "Divide by zero (a_min == a_max)"
        probe = probe_inference(loaded, InferenceSettings(amp=False), (1, 32, 32))
    assert probe.shape == (1, 32, 32)

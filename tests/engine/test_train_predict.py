"""The plain torch loops, without Ray: they must learn, checkpoint and predict."""

from pathlib import Path

import numpy as np
import pytest
import torch

from segops.config.schema import PreprocessSpec, UNetSpec, WindowIntensity
from segops.engine.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from segops.engine.predict import class_indices, predict_masks
from segops.engine.train import train_steps, training_batch, validation_dice
from segops.errors import CheckpointError
from segops.losses import build_loss
from segops.models import build_model

from .squares import squares, trained_on_squares

SPEC = UNetSpec(arch="unet", channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(32, 32))


def test_training_learns_and_checkpoint_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(SPEC)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = build_loss("dice_ce")
    data, val = squares(16, 1), squares(6, 2)
    losses = []
    for _ in range(40):
        batches = [training_batch(data[i : i + 8], PRE, 1, rng) for i in range(0, 16, 8)]
        total, count = train_steps(model, batches, loss_fn, optimizer, torch.device("cpu"))
        losses.append(total / count)
    assert count == 16 and losses[-1] < 0.5 * losses[0]
    loaded = LoadedModel(model, SPEC, PRE, {})
    dice_sum, n = validation_dice(loaded, val, torch.device("cpu"))
    assert n == 6 and dice_sum / n > 0.7

    save_checkpoint(tmp_path / "ckpt", model, SPEC, PRE, extra={"epoch": 11})
    reloaded = load_checkpoint(tmp_path / "ckpt")
    assert reloaded.model_spec == SPEC and reloaded.preprocess == PRE and reloaded.meta["epoch"] == 11
    images = [img for img, _ in val]
    before = predict_masks(loaded, images)
    after = predict_masks(reloaded, images)
    for a, b in zip(before, after):
        assert a.shape == (36, 44) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_class_indices_equal_argmax_ties_included(classes: int) -> None:
    gen = torch.Generator().manual_seed(classes)
    logits = torch.randint(-2, 3, (3, classes, 7, 6), generator=gen).float()  # small integers: many ties
    assert (logits[:, 0] == logits[:, 1]).any()
    expected = logits.argmax(dim=1).to(torch.uint8)
    np.testing.assert_array_equal(class_indices(logits).numpy(), expected.numpy())
    volume = logits[:, :, None].expand(-1, -1, 4, -1, -1)  # (N, C, Z, H, W), non-contiguous
    np.testing.assert_array_equal(class_indices(volume).numpy(), volume.argmax(dim=1).to(torch.uint8).numpy())


def test_predict_handles_mixed_sizes_and_rgb() -> None:
    spec = UNetSpec(arch="unet", in_channels=1, channels=(4, 8), strides=(2,), num_res_units=0)
    loaded = LoadedModel(build_model(spec).eval(), spec, PRE, {})
    images = [np.zeros((1, 17, 9), np.float32), np.zeros((3, 8, 8), np.float32), np.zeros((1, 17, 9), np.float32)]
    shapes = [m.shape for m in predict_masks(loaded, images)]
    assert shapes == [(17, 9), (8, 8), (17, 9)]


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is not a segops checkpoint"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path / "a", build_model(SPEC), SPEC, PRE)
    meta = (tmp_path / "a" / "segops.json").read_text().replace('"classes": 2', '"classes": 3')
    (tmp_path / "a" / "segops.json").write_text(meta)
    with pytest.raises(CheckpointError, match="do not match model spec"):
        load_checkpoint(tmp_path / "a")


def test_sliding_window_matches_whole_image_inference() -> None:
    from segops.config.schema import SlidingWindowSpec

    loaded = LoadedModel(trained_on_squares(SPEC, PRE), SPEC, PRE, {})
    # a 96 x 128 scene of several squares: three times the 32 x 32 training patch
    image = np.random.default_rng(3).normal(60, 20, (1, 96, 128)).astype(np.float32)
    for y, x, s in [(5, 5, 10), (40, 70, 12), (70, 20, 8), (60, 100, 14)]:
        image[0, y : y + s, x : x + s] += 120
    (whole,) = predict_masks(loaded, [image], sliding=SlidingWindowSpec(max_pixels=10**6))
    (tiled,) = predict_masks(
        loaded, [image], sliding=SlidingWindowSpec(max_pixels=1000, roi_size=(32, 32), overlap=0.5)
    )
    assert whole.shape == tiled.shape == (96, 128)
    assert whole.sum() > 300  # it found the squares
    agreement = float((whole == tiled).mean())
    assert agreement > 0.99, agreement

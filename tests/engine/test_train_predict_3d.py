"""The plain torch loops with a 3D U-Net, without Ray: patches, learning, sliding window."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segops.config.schema import PreprocessSpec, SlidingWindowSpec, UNetSpec, WindowIntensity
from segops.data.transforms import prepare_image
from segops.engine.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from segops.engine.predict import predict_masks
from segops.engine.train import train_steps, training_batch, validation_dice
from segops.errors import ShapeError
from segops.losses import build_loss
from segops.models import build_model

SPEC = UNetSpec(arch="unet", spatial_dims=3, channels=(4, 8, 16), strides=(2, 2), num_res_units=0)
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(8, 16, 16))


def _cubes(n: int, seed: int, shape: tuple[int, int, int] = (12, 24, 24)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bright boxes in noisy volumes; the label is the box."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        image = rng.normal(60, 20, (1, *shape)).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        z, y, x = (int(rng.integers(0, s - 6)) for s in shape)
        d, h, w = rng.integers(3, 7, 3)
        image[0, z : z + d, y : y + h, x : x + w] += 120
        label[z : z + d, y : y + h, x : x + w] = 1
        pairs.append((image, label))
    return pairs


@pytest.fixture(scope="module")
def trained() -> tuple[LoadedModel, list[float]]:
    """A tiny 3D U-Net after 15 epochs of 2 steps on 8 volumes, and its loss per epoch."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(SPEC)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data, losses = _cubes(8, 1), []
    for _ in range(15):
        batches = [training_batch(data[i : i + 4], PRE, 1, rng, patches_per_image=2) for i in range(0, 8, 4)]
        total, count = train_steps(model, batches, build_loss("dice_ce"), optimizer, torch.device("cpu"))
        losses.append(total / count)
    return LoadedModel(model.eval(), SPEC, PRE, {}), losses


def test_3d_patches_have_the_patch_shape() -> None:
    x, y = training_batch(_cubes(2, 0), PRE, 1, np.random.default_rng(0), patches_per_image=3)
    assert x.shape == (6, 1, 8, 16, 16) and x.dtype == torch.float32
    assert y.shape == (6, 1, 8, 16, 16) and y.dtype == torch.int64


def test_a_few_3d_training_steps_lower_the_loss_and_validate_per_volume(trained) -> None:
    loaded, losses = trained
    assert losses[-1] < 0.6 * losses[0], losses
    dice_sum, n = validation_dice(loaded, _cubes(3, 2), torch.device("cpu"))
    assert n == 3 and dice_sum / n > 0.5  # one Dice per volume


def test_3d_sliding_window_matches_whole_volume_inference(trained) -> None:
    loaded, _ = trained
    # a 16 x 48 x 48 volume of several boxes: 2 x 3 x 3 training patches
    image = np.random.default_rng(3).normal(60, 20, (1, 16, 48, 48)).astype(np.float32)
    for z, y, x, s in [(2, 5, 5, 5), (8, 20, 30, 6), (3, 35, 10, 4), (10, 36, 38, 5)]:
        image[0, z : z + s, y : y + s, x : x + s] += 120
    (tiled,) = predict_masks(loaded, [image], sliding=SlidingWindowSpec(overlap=0.5, tile_batch=2))
    with torch.no_grad():
        whole = loaded.model(torch.from_numpy(prepare_image(image, PRE.intensity, 1, 3))[None]).argmax(1)[0].numpy()
    assert tiled.shape == whole.shape == (16, 48, 48) and tiled.dtype == np.uint8
    assert whole.sum() > 300  # it found the boxes
    agreement = float((whole == tiled).mean())
    assert agreement > 0.98, agreement


class _TileRecorder(nn.Module):
    """Delegates to a network and records the shape of every batch of tiles it is given."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.shapes = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def test_tile_batch_bounds_the_tiles_per_forward_pass() -> None:
    recorder = _TileRecorder(build_model(SPEC).eval())
    loaded = LoadedModel(recorder, SPEC, PRE, {})
    volume = np.zeros((1, 6, 40, 40), np.float32)  # 6 slices: the 8-slice roi is cut to 8 (6 rounded up to 4s)
    (mask,) = predict_masks(
        loaded, [volume], sliding=SlidingWindowSpec(roi_size=(8, 16, 16), overlap=0.25, tile_batch=3)
    )
    assert mask.shape == (6, 40, 40)
    assert {s[1:] for s in recorder.shapes} == {(1, 8, 16, 16)}  # every forward pass sees roi-sized tiles
    tiles = sum(s[0] for s in recorder.shapes)
    assert tiles == 9 and max(s[0] for s in recorder.shapes) == 3  # 1 x 3 x 3 tiles, 3 at a time


def test_a_3d_model_rejects_2d_images_and_2d_rois() -> None:
    loaded = LoadedModel(build_model(SPEC).eval(), SPEC, PRE, {})
    with pytest.raises(ShapeError, match=r"takes volumes of shape \(C, Z, H, W\), got \(1, 32, 32\).*records: volumes"):
        predict_masks(loaded, [np.zeros((1, 32, 32), np.float32)])
    with pytest.raises(ShapeError, match=r"roi_size \[16, 16\] has 2 sizes; a 3D model needs 3"):
        predict_masks(loaded, [np.zeros((1, 8, 32, 32), np.float32)], sliding=SlidingWindowSpec(roi_size=(16, 16)))


def test_3d_checkpoint_round_trips_and_old_checkpoints_load_as_2d(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "3d", build_model(SPEC), SPEC, PRE)
    assert load_checkpoint(tmp_path / "3d").model_spec.spatial_dims == 3
    spec2d = UNetSpec(arch="unet", channels=(4, 8), strides=(2,), num_res_units=0)
    save_checkpoint(tmp_path / "old", build_model(spec2d), spec2d, PreprocessSpec(patch_size=(16, 16)))
    meta_file = tmp_path / "old" / "segops.json"
    meta = meta_file.read_text()
    meta_file.write_text(meta.replace('"spatial_dims": 2,', ""))  # as written before the field existed
    assert "spatial_dims" not in meta_file.read_text()
    old = load_checkpoint(tmp_path / "old")
    assert old.model_spec.spatial_dims == 2 and old.preprocess.patch_size == (16, 16)

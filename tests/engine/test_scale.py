"""``preprocess.scale``: large images go through the network smaller, masks come back at full size."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from segops.config.schema import (
    AugmentSpec,
    PreprocessSpec,
    SlidingWindowSpec,
    TrainStep,
    UNetSpec,
    WindowIntensity,
)
from segops.data.augment import Augmenter
from segops.data.transforms import rescale_image, rescale_label
from segops.engine.checkpoint import LoadedModel
from segops.engine.predict import class_probabilities, predict
from segops.engine.train import training_batch

WINDOW = WindowIntensity(kind="window", lower=0, upper=255)


def _disc(size: tuple[int, int], radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc on a dark (C, H, W) image and its (H, W) mask."""
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    mask = (yy - size[0] / 2) ** 2 + (xx - size[1] / 2) ** 2 < radius**2
    return np.where(mask, 220.0, 30.0).astype(np.float32)[None], mask.astype(np.uint8)


class _Counting(nn.Module):
    """Logits (0, 8x - 4) per pixel of the window-normalised image x: foreground where x > 0.5.
    Records the input sizes it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[2:]))
        return torch.cat([torch.zeros_like(x), 8 * x - 4], dim=1)


def _loaded(scale: float) -> tuple[LoadedModel, _Counting]:
    net = _Counting()
    spec = UNetSpec(arch="unet", classes=2, channels=(4, 8), strides=(2,))
    return LoadedModel(net, spec, PreprocessSpec(intensity=WINDOW, patch_size=(64, 64), scale=scale), {}), net


def test_resizing_keeps_values_and_classes() -> None:
    image = np.full((3, 300, 400), 7.0, np.float32)
    assert rescale_image(image, 0.25).shape == (3, 75, 100)
    np.testing.assert_allclose(rescale_image(image, 0.25), 7.0, rtol=1e-6)  # a flat image stays flat
    label = np.zeros((300, 400), np.uint8)
    label[:150, :200], label[150:, 200:] = 1, 2
    small = rescale_label(label, 0.1)
    assert small.shape == (30, 40) and set(np.unique(small)) == {0, 1, 2}  # nearest: no class between two
    assert (small[:15, :20] == 1).all() and (small[15:, 20:] == 2).all()
    assert rescale_image(image, 1.0) is image
    image.setflags(write=False)  # a record's pixels, as Arrow hands them out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about non-writable arrays into the user's terminal
        assert rescale_image(image, 0.5).shape == (3, 150, 200)


@pytest.mark.parametrize("max_pixels", [1_000_000, 1_000])  # whole image, then tiles
def test_a_scaled_model_sees_the_smaller_image_and_masks_keep_the_input_size(max_pixels: int) -> None:
    image, mask = _disc((600, 800), 200)
    loaded, net = _loaded(0.25)
    sliding = SlidingWindowSpec(max_pixels=max_pixels)
    (pred,) = predict(loaded, [image], sliding=sliding)
    assert pred.shape == (600, 800)
    assert max(np.prod(s) for s in net.seen) <= 160 * 208  # 150x200 padded to the divisor, or its tiles
    inter = np.logical_and(pred == 1, mask == 1).sum()
    assert 2 * inter / (pred.sum() + mask.sum()) > 0.99  # the disc back at full size, edges aside
    (probs,) = predict(loaded, [image], sliding=sliding, head=class_probabilities)
    assert probs.shape == (2, 600, 800)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)


def test_training_patches_come_from_the_scaled_image_and_label() -> None:
    image, mask = _disc((400, 400), 120)
    pre = PreprocessSpec(intensity=WINDOW, patch_size=(100, 100), scale=0.25)
    rng = np.random.default_rng(0)
    aug = Augmenter(AugmentSpec(flip=0.0, rotate90=0.0), 0, spatial_dims=2)
    x, y = training_batch([(image, mask)], pre, 1, rng, patches_per_image=2, augmenter=aug)
    # the 100x100 image at 0.25 is the whole patch: the disc (radius 30) and its ring of background
    assert x.shape == (2, 1, 100, 100) and y.shape == (2, 1, 100, 100)
    assert abs(int(y[0].sum()) - np.pi * 30**2) < 0.05 * np.pi * 30**2
    agree = ((x[:, 0] > 0.5).numpy() == (y[:, 0].numpy() == 1)).mean()
    assert agree > 0.99  # still aligned: only edge pixels, blended by the resize, may differ


def test_scale_is_refused_for_mask_rcnn_and_3d_models() -> None:
    base = {"step": "train", "preprocess": {"patch_size": [16, 16], "scale": 0.5}}
    TrainStep.model_validate(base | {"model": {"arch": "unet", "classes": 2}})
    with pytest.raises(ValueError, match="preprocess.scale resizes 2D images"):
        TrainStep.model_validate(base | {"model": {"arch": "maskrcnn", "classes": 2}})
    with pytest.raises(ValueError, match="preprocess.scale resizes 2D images"):
        TrainStep.model_validate(
            {"step": "train", "preprocess": {"patch_size": [8, 16, 16], "scale": 0.5}}
            | {"model": {"arch": "unet", "classes": 2, "spatial_dims": 3}}
        )

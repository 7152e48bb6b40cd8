"""Test-time mirroring and class probabilities in the per-case path (no Ray): whole 2D images, the
2D and 3D sliding windows, volumes slice by slice; masks unchanged when mirroring is off."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segops.config.schema import (
    MaskRCNNSpec,
    PreprocessSpec,
    SegmentStep,
    SlidingWindowSpec,
    TTASpec,
    UNetSpec,
    ZScoreIntensity,
)
from segops.data.transforms import prepare_image
from segops.engine.cases import InferenceSettings, case_result, predict_batch
from segops.engine.checkpoint import LoadedModel, load_checkpoint
from segops.engine.ensemble import mirror_sets
from segops.engine.predict import class_probabilities, network, predict, predict_masks, probability_class_map
from segops.errors import ShapeError, StepError
from segops.models import build_model

from ..steps.contexts import tiny_checkpoint

ZSCORE = ZScoreIntensity(kind="zscore")


def _unet(classes: int, dims: int = 2, seed: int = 0) -> LoadedModel:
    """An untrained segops U-Net: not equivariant to mirroring."""
    torch.manual_seed(seed)
    spec = UNetSpec(arch="unet", spatial_dims=dims, classes=classes, channels=(4, 8), strides=(2,), num_res_units=0)
    patch = (16, 16) if dims == 2 else (8, 16, 16)
    return LoadedModel(build_model(spec).eval(), spec, PreprocessSpec(intensity=ZSCORE, patch_size=patch), {})


def _pointwise(dims: int = 2) -> LoadedModel:
    """A 1x1 convolution: each pixel's logits depend on that pixel alone, so mirroring the input
    mirrors the output exactly and test-time mirroring changes nothing. Logits (-3x, 1, 3x): class 0
    below x = -1/3, class 2 above 1/3, class 1 between."""
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 3, 1).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-3.0, 0.0, 3.0]).reshape(3, 1, *[1] * dims))
        conv.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    spec = UNetSpec(arch="unet", spatial_dims=dims, classes=3, channels=(4, 8), strides=(2,))
    patch = (16, 16) if dims == 2 else (8, 16, 16)
    return LoadedModel(conv, spec, PreprocessSpec(intensity=ZSCORE, patch_size=patch), {})


def _mirror_mean(loaded: LoadedModel, image: np.ndarray, flip_axes: tuple[int, ...]) -> np.ndarray:
    """By hand: the mean over every mirror of the softmax of the mirrored image, mirrored back.
    (Images here are multiples of the size divisor: no padding.)"""
    dims = loaded.model_spec.spatial_dims
    x = torch.from_numpy(prepare_image(image, loaded.preprocess.intensity, 1, spatial_dims=dims))[None]
    total = torch.zeros(())
    with torch.no_grad():
        for combo in mirror_sets(flip_axes):
            d = [2 + a for a in combo]
            total = total + torch.flip(torch.softmax(loaded.model(torch.flip(x, d)), dim=1), d)
    return (total / len(mirror_sets(flip_axes)))[0].numpy()


def _image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, *shape)).astype(np.float32)


@pytest.mark.parametrize("classes", [2, 3])
def test_probabilities_off_mirroring_give_todays_masks_from_a_checkpoint(tmp_path: Path, classes: int) -> None:
    """Masks with the probabilities output are the argmax of the probabilities, identical to the
    class maps without it (whole images of two sizes, one large image tiled, a volume slice by slice)."""
    if classes == 2:
        loaded = load_checkpoint(tiny_checkpoint(tmp_path / "ckpt", seed=3))
    else:
        loaded = _unet(classes)
    sliding = SlidingWindowSpec(max_pixels=900, tile_batch=2)  # 40 x 48 > 900: tiled
    images = [_image((20, 24), 0) * 100, _image((16, 16), 1) * 100, _image((40, 48), 2) * 100]
    volume = _image((3, 20, 24), 3) * 100
    plain = InferenceSettings(amp=False, sliding=sliding)
    with_probabilities = InferenceSettings(amp=False, sliding=sliding, probabilities=True)
    before = predict_batch(loaded, images, plain) + predict_batch(loaded, [volume], plain)
    after = predict_batch(loaded, images, with_probabilities) + predict_batch(loaded, [volume], with_probabilities)
    for old, new, image in zip(before, after, [*images, volume]):
        assert old.probabilities is None
        np.testing.assert_array_equal(new.class_map, old.class_map)
        np.testing.assert_array_equal(new.class_map, probability_class_map(new.probabilities))
        spatial = image.shape[1:]
        assert new.probabilities.shape == (classes, *spatial) and new.probabilities.dtype == np.float32
        np.testing.assert_allclose(new.probabilities.sum(axis=0), 1.0, atol=1e-6)
        assert len(np.unique(new.class_map)) > 1  # a real test of the argmax: more than one class
    result = case_result(after[0], None, with_probabilities, classes)
    assert result.probabilities.dtype == np.float16
    np.testing.assert_array_equal(result.probabilities, after[0].probabilities.astype(np.float16))
    assert case_result(before[0], None, plain, classes).probabilities is None


@pytest.mark.parametrize("dims, flip_axes", [(2, (0, 1)), (3, (0, 1, 2))])
def test_mirroring_a_pointwise_model_changes_no_mask(dims: int, flip_axes: tuple[int, ...]) -> None:
    """Whole images and both sliding windows (several tiles): a flip-equivariant model gives the
    same masks, and the same probabilities, with and without mirroring."""
    loaded = _pointwise(dims)
    shape = (24, 40) if dims == 2 else (10, 24, 40)
    sliding = SlidingWindowSpec(roi_size=(16, 16) if dims == 2 else (8, 16, 16), max_pixels=400, tile_batch=3)
    images = [_image(shape, 4)] + ([_image((12, 16), 5)] if dims == 2 else [])  # 2D: tiled and whole
    off = InferenceSettings(amp=False, sliding=sliding, probabilities=True)
    on = InferenceSettings(amp=False, sliding=sliding, probabilities=True, tta=TTASpec(flip_axes=flip_axes))
    for plain, mirrored in zip(predict_batch(loaded, images, off), predict_batch(loaded, images, on)):
        np.testing.assert_array_equal(mirrored.class_map, plain.class_map)
        np.testing.assert_allclose(mirrored.probabilities, plain.probabilities, atol=1e-5)
        assert len(np.unique(plain.class_map)) == 3
    masks_on = predict_masks(loaded, images, sliding=sliding, flip_axes=flip_axes)
    for mask, plain in zip(masks_on, predict_batch(loaded, images, off)):
        np.testing.assert_array_equal(mask, plain.class_map)


@pytest.mark.parametrize(
    "dims, shape, flip_axes, sliding",
    [
        (2, (16, 24), (0, 1), SlidingWindowSpec()),  # whole image
        (2, (16, 24), (1,), SlidingWindowSpec()),
        (2, (16, 24), (0, 1), SlidingWindowSpec(max_pixels=1, roi_size=(16, 24))),  # 2D window, one tile
        (3, (8, 16, 16), (0, 2), SlidingWindowSpec(roi_size=(8, 16, 16))),  # 3D window, one tile
    ],
)
def test_mirroring_a_unet_averages_the_softmax_over_the_mirrors(
    dims: int, shape: tuple[int, ...], flip_axes: tuple[int, ...], sliding: SlidingWindowSpec
) -> None:
    """An untrained U-Net is not flip-equivariant: mirroring changes its probabilities, to exactly
    the hand-computed mean of the mirrored softmaxes (one tile covering the image blends to itself)."""
    loaded = _unet(3, dims)
    image = _image(shape, 6)
    tta = InferenceSettings(amp=False, sliding=sliding, probabilities=True, tta=TTASpec(flip_axes=flip_axes))
    off = InferenceSettings(amp=False, sliding=sliding, probabilities=True)
    (mirrored,) = predict_batch(loaded, [image], tta)
    (plain,) = predict_batch(loaded, [image], off)
    expected = _mirror_mean(loaded, image, flip_axes)
    np.testing.assert_allclose(mirrored.probabilities, expected, atol=2e-6)
    np.testing.assert_allclose(plain.probabilities, _mirror_mean(loaded, image, ()), atol=2e-6)
    assert np.abs(mirrored.probabilities - plain.probabilities).max() > 1e-3
    np.testing.assert_array_equal(mirrored.class_map, probability_class_map(expected))
    (mask,) = predict_masks(loaded, [image], sliding=sliding, flip_axes=flip_axes)
    np.testing.assert_array_equal(mask, mirrored.class_map)


def test_a_volume_through_a_2d_model_is_mirrored_slice_by_slice() -> None:
    loaded = _unet(2)
    volume = _image((3, 16, 24), 7)
    settings = InferenceSettings(amp=False, probabilities=True, tta=TTASpec(flip_axes=(0, 1)))
    (prediction,) = predict_batch(loaded, [volume], settings)
    assert prediction.probabilities.shape == (2, 3, 16, 24)
    for z in range(3):
        expected = _mirror_mean(loaded, volume[:, z], (0, 1))
        np.testing.assert_allclose(prediction.probabilities[:, z], expected, atol=2e-6)
    np.testing.assert_array_equal(prediction.class_map, probability_class_map(prediction.probabilities))


def test_mirroring_is_the_ensemble_module_on_the_model() -> None:
    loaded = _unet(2)
    assert network(loaded) is loaded.model
    mirrored = network(loaded, (1,))
    assert type(mirrored).__name__ == "MirroredModel" and mirrored.model is loaded.model
    assert mirrored.flips == [(), (1,)]


def test_a_flip_axis_the_model_lacks_is_refused() -> None:
    loaded = _unet(2)
    with pytest.raises(ShapeError, match=r"tta.flip_axes \[0, 2\] has axis \[2\] but this 2D model"):
        predict_masks(loaded, [_image((16, 16), 0)], flip_axes=(0, 2))
    step = SegmentStep(step="segment", tta={"flip_axes": [2]}, outputs=["png", "probabilities"])
    settings = InferenceSettings.from_step(step)
    assert settings.tta.flip_axes == (2,) and settings.probabilities
    with pytest.raises(StepError, match=r"segment.tta.flip_axes \[2\]: this is a 2D model.*axes below 2"):
        settings.check_model(loaded.model_spec, "segment")
    settings.check_model(_unet(2, dims=3).model_spec, "segment")  # a 3D model has axis 2
    InferenceSettings(tta=TTASpec(flip_axes=(1, 0))).check_model(loaded.model_spec, "evaluate")


def test_instance_models_take_neither_mirroring_nor_probabilities() -> None:
    spec = MaskRCNNSpec(arch="maskrcnn")
    with pytest.raises(StepError, match=r"evaluate.tta.flip_axes \[0\]: test-time mirroring is for semantic"):
        InferenceSettings(tta=TTASpec(flip_axes=(0,))).check_model(spec, "evaluate")
    with pytest.raises(StepError, match=r"segment.outputs: probabilities needs a semantic model"):
        InferenceSettings(probabilities=True).check_model(spec, "segment")
    InferenceSettings().check_model(spec, "segment")


@pytest.mark.gpu
@pytest.mark.parametrize("dims", [2, 3])
def test_mirroring_under_bf16_autocast_on_cuda_matches_fp32(dims: int) -> None:
    """The mirrored network runs under the bf16 autocast (2D whole images, 3D tiles on the GPU
    with the volume on the host) and gives float32 probabilities close to the fp32 ones."""
    loaded = _unet(3, dims)
    loaded = LoadedModel(loaded.model.to("cuda"), loaded.model_spec, loaded.preprocess, {})
    shape = (64, 80) if dims == 2 else (12, 40, 48)
    images = [_image(shape, 8), _image(shape, 9)]
    flips = (0, 1) if dims == 2 else (0, 1, 2)
    fp32 = predict(loaded, images, "cuda", amp=False, flip_axes=flips, head=class_probabilities)
    bf16 = predict(loaded, images, "cuda", amp=True, flip_axes=flips, head=class_probabilities)
    for a, b in zip(fp32, bf16):
        assert a.dtype == b.dtype == np.float32 and a.shape == (3, *shape)
        assert np.abs(a - b).max() < 0.05
        assert (probability_class_map(a) == probability_class_map(b)).mean() > 0.95

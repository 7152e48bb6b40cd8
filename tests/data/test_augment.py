"""Training augmentation: MONAI dictionary transforms, image and label together, seeded."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from segops.config.schema import AugmentSpec, TrainStep
from segops.data.augment import Augmenter, build_transforms

ALL_SPATIAL = {
    "flip": 0.5,
    "rotate90": 0.75,
    "rotate": {"prob": 1.0},
    "elastic": {"prob": 1.0, "spacing": 24, "magnitude": [4, 8]},
}


def _pattern(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A label with thin lines and blobs, and an image that is the label itself (so alignment is checkable)."""
    rng = np.random.default_rng(0)
    label = np.zeros((size, size), np.uint8)
    label[:, size // 3] = 1
    label[2 * size // 3, :] = 1
    for y, x in rng.integers(8, size - 8, (6, 2)):
        label[y - 4 : y + 4, x - 3 : x + 3] = 1
    return label[None].astype(np.float32), label


def test_same_seed_same_augmentations_other_seed_different() -> None:
    spec = AugmentSpec.model_validate(ALL_SPATIAL | {"intensity": {"prob": 1.0, "noise_std": 0.05}})
    image, label = _pattern()
    a, b, c = Augmenter(spec, 7), Augmenter(spec, 7), Augmenter(spec, 8)
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = a(image, label), b(image, label), c(image, label)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(xa, xc)


def test_spatial_transforms_move_image_and_label_together() -> None:
    spec = AugmentSpec.model_validate(ALL_SPATIAL)
    image, label = _pattern()
    aug = Augmenter(spec, 0)
    for _ in range(10):
        x, y = aug(image, label)
        assert x.shape == image.shape and x.dtype == np.float32
        assert y.shape == label.shape and y.dtype == label.dtype
        assert set(np.unique(y).tolist()) <= {0, 1}  # nearest-neighbour label: no blended classes
        assert not np.array_equal(y, label)  # rotation and deformation at prob 1 did move it
        # the image was the label: bilinear vs nearest interpolation may differ on a pixel's edge only
        agreement = np.mean((x[0] > 0.5) == (y == 1))
        assert agreement > 0.97, agreement


def test_elastic_deformation_is_smooth_and_of_the_asked_size() -> None:
    """A coordinate ramp deformed by the elastic transform: displacements of the configured
    magnitude (std ~ magnitude px at the control points), varying smoothly between pixels."""
    size = 128
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ramp = np.stack([yy, xx])
    spec = AugmentSpec.model_validate(
        {"flip": 0.0, "rotate90": 0.0, "elastic": {"prob": 1.0, "spacing": 32, "magnitude": [6, 6]}}
    )
    out, _ = Augmenter(spec, 3)(ramp, np.zeros((size, size), np.uint8))
    inner = (slice(None), slice(16, -16), slice(16, -16))
    displacement = (out - ramp)[inner]
    assert 2.0 < np.abs(displacement).mean() < 12.0
    neighbour_step = np.abs(np.diff(displacement, axis=2)).mean()
    assert neighbour_step < 0.5  # a smooth field, not per-pixel noise


def test_intensity_jitter_changes_the_image_only() -> None:
    spec = AugmentSpec.model_validate({"flip": 0.0, "rotate90": 0.0, "intensity": {"prob": 1.0, "noise_std": 0.02}})
    image, label = _pattern()
    x, y = Augmenter(spec, 1)(image * 0.5 + 0.25, label)
    np.testing.assert_array_equal(y, label)
    assert not np.allclose(x, image * 0.5 + 0.25)


def test_defaults_are_lossless_flips_and_rotations() -> None:
    names = [type(t).__name__ for t in build_transforms(AugmentSpec())]
    assert names == ["RandFlipd", "RandFlipd", "RandRotate90d"]
    image, label = _pattern()
    x, y = Augmenter(AugmentSpec(), 0)(image, label)
    assert sorted(x.ravel().tolist()) == sorted(image.ravel().tolist())  # a permutation of the pixels
    np.testing.assert_array_equal(x[0] > 0.5, y == 1)


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="magnitude"):
        AugmentSpec.model_validate({"elastic": {"magnitude": [5, 1]}})
    with pytest.raises(ValidationError, match="gamma"):
        AugmentSpec.model_validate({"intensity": {"gamma": [0, 1]}})
    with pytest.raises(ValidationError, match="rotate90 turns patches by 90° and needs square ones"):
        TrainStep.model_validate({"step": "train", "model": {"arch": "unet"}, "preprocess": {"patch_size": [96, 64]}})
    assert (
        TrainStep.model_validate(
            {
                "step": "train",
                "model": {"arch": "unet"},
                "preprocess": {"patch_size": [96, 64]},
                "augment": {"rotate90": 0},
            }
        ).augment.rotate90
        == 0
    )
    with pytest.raises(ValidationError, match="Mask R-CNN"):
        TrainStep.model_validate({"step": "train", "model": {"arch": "maskrcnn"}, "augment": {"elastic": {}}})


def _pattern_3d(depth: int = 8, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A volume of 2D patterns whose foreground differs per slice (so a Z flip or a Z-mixing rotation shows)."""
    _, base = _pattern(size)
    label = np.stack([np.roll(base, 3 * z, axis=1) * (z % 3 != 0) for z in range(depth)]).astype(np.uint8)
    return label[None].astype(np.float32), label


def test_3d_augmentation_moves_volume_and_label_together() -> None:
    spec = AugmentSpec.model_validate(
        {"flip": 0.5, "rotate90": 0.75, "rotate": {"prob": 1.0}, "intensity": {"prob": 1.0, "scale": 0.0, "shift": 0.0}}
    )
    names = [type(t).__name__ for t in build_transforms(spec, spatial_dims=3)]
    assert names[:4] == ["RandFlipd", "RandFlipd", "RandFlipd", "RandRotate90d"]  # flips on Z, H and W
    image, label = _pattern_3d()
    aug = Augmenter(spec, 0, spatial_dims=3)
    for _ in range(6):
        x, y = aug(image, label)
        assert x.shape == image.shape and x.dtype == np.float32 and y.shape == label.shape and y.dtype == label.dtype
        assert set(np.unique(y).tolist()) <= {0, 1}
        assert not np.array_equal(y, label)
        agreement = np.mean((x[0] > 0.5) == (y == 1))  # gamma keeps 0 and 1: the image still marks the label
        assert agreement > 0.97, agreement


def test_3d_rotations_turn_the_slice_plane_only() -> None:
    spec = AugmentSpec.model_validate({"flip": 0.0, "rotate90": 1.0, "rotate": {"prob": 1.0, "degrees": 40}})
    _, base = _pattern(48)
    label = np.stack([base * (z % 3 != 0) for z in range(8)]).astype(np.uint8)  # equal slices, and empty ones
    aug = Augmenter(spec, 1, spatial_dims=3)
    for _ in range(4):
        _, y = aug(label[None].astype(np.float32), label)
        # a turn about the slice normal maps equal slices to equal slices and keeps empty ones empty
        assert not np.array_equal(y[1], base)
        for z in range(8):
            np.testing.assert_array_equal(y[z], y[1] if z % 3 else 0)


def test_elastic_is_rejected_for_3d() -> None:
    from segops.errors import ShapeError

    with pytest.raises(ShapeError, match="elastic augmentation is 2D only"):
        build_transforms(AugmentSpec.model_validate({"elastic": {}}), spatial_dims=3)
    with pytest.raises(ValidationError, match="augment.elastic deforms 2D images"):
        TrainStep.model_validate(
            {
                "step": "train",
                "model": {"arch": "unet", "spatial_dims": 3},
                "preprocess": {"patch_size": [16, 64, 64]},
                "augment": {"elastic": {}},
            }
        )


def test_zoom_scales_the_content_about_the_centre_and_keeps_the_patch_size() -> None:
    label = np.zeros((64, 64), np.uint8)
    label[24:40, 24:40] = 1  # a 16 px square in the middle
    image = label[None].astype(np.float32)
    for factor, side in ((2.0, 32), (0.5, 8)):
        spec = AugmentSpec.model_validate({"flip": 0, "rotate90": 0, "zoom": {"prob": 1.0, "range": [factor, factor]}})
        x, y = Augmenter(spec, 0)(image, label)
        assert x.shape == image.shape and y.shape == label.shape and y.dtype == np.uint8
        rows, cols = np.nonzero(y[16:48, 16:48])  # the middle: away from the reflected copies a zoom-out adds
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (side, side)
        assert np.mean((x[0] > 0.5) == (y == 1)) > 0.99  # image and label zoomed together
    # a zoom-out reflects the patch at its borders (no dark band): the square's mirror images appear
    spec = AugmentSpec.model_validate({"flip": 0, "rotate90": 0, "zoom": {"prob": 1.0, "range": [0.5, 0.5]}})
    assert Augmenter(spec, 0)(image, label)[1].sum() > 64
    x, y = Augmenter(AugmentSpec.model_validate({"zoom": {"prob": 1.0}}), 0, spatial_dims=3)(*_pattern_3d())
    assert x.shape == (1, 8, 48, 48) and y.shape == (8, 48, 48)
    with pytest.raises(ValidationError, match="range must be"):
        AugmentSpec.model_validate({"zoom": {"range": [1.4, 0.7]}})
    with pytest.raises(ValidationError, match="rotate/zoom/elastic/intensity"):
        TrainStep.model_validate({"step": "train", "model": {"arch": "maskrcnn"}, "augment": {"zoom": {}}})

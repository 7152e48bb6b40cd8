"""Training-patch augmentation from an :class:`~segops.config.schema.AugmentSpec` (MONAI).

Dictionary transforms act on ``{"image": (C, H, W) float32, "label": (1, H, W)}`` (or
(C, Z, H, W) and (1, Z, H, W) patches of volumes) so that image and label are flipped, rotated
and deformed together (label by nearest neighbour); intensity jitter touches the image only.
In 3D, flips act on all three axes and rotations turn the H-W plane (about the slice normal:
CT voxels are rarely isotropic, so turning Z into H would mix spacings). One :class:`Augmenter` per
training worker, seeded once, gives a reproducible stream of augmentations for that worker.
"""

from __future__ import annotations

import math

import numpy as np
from monai.transforms import (
    Compose,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
)

from segops.config.schema import AugmentSpec
from segops.errors import ShapeError

_KEYS = ("image", "label")


def build_transforms(spec: AugmentSpec, spatial_dims: int = 2) -> list:
    """The MONAI dictionary transforms ``spec`` asks for, in the order they are applied.

    Raises:
        ShapeError: ``spec.elastic`` with ``spatial_dims=3`` (2D only; TrainStep rejects it too).
    """
    if spatial_dims == 3 and spec.elastic is not None:
        raise ShapeError("elastic augmentation is 2D only; remove augment.elastic for a 3D model")
    transforms: list = [RandFlipd(_KEYS, prob=spec.flip, spatial_axis=axis) for axis in range(spatial_dims)]
    # (0, 1) is (H, W) in 2D; in 3D (1, 2) is (H, W), and range_x below turns that plane too
    transforms.append(
        RandRotate90d(_KEYS, prob=spec.rotate90, max_k=3, spatial_axes=(spatial_dims - 2, spatial_dims - 1))
    )
    if spec.rotate is not None:
        rotate = RandRotated(
            _KEYS,
            range_x=math.radians(spec.rotate.degrees),
            prob=spec.rotate.prob,
            mode=("bilinear", "nearest"),
            padding_mode="reflection",
            keep_size=True,
        )
        transforms.append(rotate)
    if spec.zoom is not None:  # one factor for every axis; reflected borders, as rotate's (not dark bands)
        low, high = spec.zoom.range
        zoom = RandZoomd(
            _KEYS,
            prob=spec.zoom.prob,
            min_zoom=low,
            max_zoom=high,
            mode=("bilinear", "nearest"),
            padding_mode="reflect",
            keep_size=True,
        )
        transforms.append(zoom)
    if spec.elastic is not None:
        e = spec.elastic
        elastic = Rand2DElasticd(
            _KEYS,
            spacing=(e.spacing, e.spacing),
            magnitude_range=e.magnitude,
            prob=e.prob,
            mode=("bilinear", "nearest"),
            padding_mode="reflection",
        )
        transforms.append(elastic)
    if spec.intensity is not None:
        i = spec.intensity
        if i.scale:
            transforms.append(RandScaleIntensityd("image", factors=i.scale, prob=i.prob))
        if i.shift:
            transforms.append(RandShiftIntensityd("image", offsets=i.shift, prob=i.prob))
        if i.gamma != (1.0, 1.0):
            transforms.append(RandAdjustContrastd("image", gamma=i.gamma, prob=i.prob))
        if i.noise_std:
            transforms.append(RandGaussianNoised("image", std=i.noise_std, prob=i.prob))
    return transforms


class Augmenter:
    """Applies ``spec`` to (image, label) patches; same seed → same sequence of outputs."""

    def __init__(self, spec: AugmentSpec, seed: int, spatial_dims: int = 2):
        self.compose = Compose(build_transforms(spec, spatial_dims), lazy=False)
        self.compose.set_random_state(seed=seed % 2**32)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Args: image (C, H, W) float32, label (H, W) integer (or (C, Z, H, W), (Z, H, W)).
        Returns both augmented, same dtypes; same shapes when H == W (a 90° turn swaps them)."""
        out = self.compose({"image": image, "label": label[None]})
        x = np.ascontiguousarray(np.asarray(out["image"], dtype=np.float32))
        y = np.ascontiguousarray(np.asarray(out["label"])[0]).astype(label.dtype, copy=False)
        return x, y

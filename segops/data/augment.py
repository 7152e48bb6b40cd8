"""Training-patch augmentation from an :class:`~segops.config.schema.AugmentSpec` (MONAI).

Dictionary transforms act on ``{"image": (C, H, W) float32, "label": (1, H, W)}`` so that
image and label are flipped, rotated and deformed together (label by nearest neighbour);
intensity jitter touches the image only. One :class:`Augmenter` per training worker, seeded
once, gives a reproducible stream of augmentations for that worker.
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
)

from segops.config.schema import AugmentSpec

_KEYS = ("image", "label")


def build_transforms(spec: AugmentSpec) -> list:
    """The MONAI dictionary transforms ``spec`` asks for, in the order they are applied."""
    transforms: list = [
        RandFlipd(_KEYS, prob=spec.flip, spatial_axis=0),
        RandFlipd(_KEYS, prob=spec.flip, spatial_axis=1),
        RandRotate90d(_KEYS, prob=spec.rotate90, max_k=3),
    ]
    if spec.rotate is not None:
        rotate = RandRotated(_KEYS, range_x=math.radians(spec.rotate.degrees), prob=spec.rotate.prob,
                             mode=("bilinear", "nearest"), padding_mode="reflection", keep_size=True)  # fmt: skip
        transforms.append(rotate)
    if spec.elastic is not None:
        e = spec.elastic
        elastic = Rand2DElasticd(_KEYS, spacing=(e.spacing, e.spacing), magnitude_range=e.magnitude, prob=e.prob,
                                 mode=("bilinear", "nearest"), padding_mode="reflection")  # fmt: skip
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

    def __init__(self, spec: AugmentSpec, seed: int):
        self.compose = Compose(build_transforms(spec), lazy=False)
        self.compose.set_random_state(seed=seed % 2**32)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Args: image (C, H, W) float32, label (H, W) integer. Returns both augmented, same shapes/dtypes."""
        out = self.compose({"image": image, "label": label[None]})
        x = np.ascontiguousarray(np.asarray(out["image"], dtype=np.float32))
        y = np.ascontiguousarray(np.asarray(out["label"])[0]).astype(label.dtype, copy=False)
        return x, y

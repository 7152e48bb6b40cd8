"""Array transforms from record pixels to network input (MONAI intensity transforms).

Everything here works on one image: ``image`` is (C, H, W) float32, ``label`` is (H, W) uint8.
"""

from __future__ import annotations

import numpy as np
from monai.transforms import NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

from segops.config.schema import IntensitySpec, PercentileIntensity, WindowIntensity
from segops.errors import ShapeError

# ITU-R BT.601 luma weights, as PIL's RGB → L conversion uses
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def normalize_intensity(image: np.ndarray, spec: IntensitySpec) -> np.ndarray:
    """Map raw intensities (HU, 8/16-bit counts) to the range the network was trained on."""
    if isinstance(spec, WindowIntensity):
        transform = ScaleIntensityRange(spec.lower, spec.upper, 0.0, 1.0, clip=True)
    elif isinstance(spec, PercentileIntensity):
        transform = ScaleIntensityRangePercentiles(spec.lower, spec.upper, 0.0, 1.0, clip=True, channel_wise=True)
    else:
        transform = NormalizeIntensity(channel_wise=True)
    return np.asarray(transform(image), dtype=np.float32)


def match_channels(image: np.ndarray, in_channels: int) -> np.ndarray:
    """Convert gray ↔ RGB so the image has the model's channel count."""
    channels = image.shape[0]
    if channels == in_channels:
        return image
    if channels == 3 and in_channels == 1:
        return np.tensordot(_LUMA, image, axes=1)[None].astype(np.float32)
    if channels == 1 and in_channels == 3:
        return np.repeat(image, 3, axis=0)
    raise ShapeError(
        f"image has {channels} channel(s) but the model takes {in_channels}; only gray<->RGB conversion is automatic"
    )


def prepare_image(image: np.ndarray, intensity: IntensitySpec, in_channels: int) -> np.ndarray:
    """Record pixels → normalised (in_channels, H, W) float32 network input."""
    if image.ndim != 3:
        raise ShapeError(f"expected an image of shape (C, H, W), got {image.shape}")
    if not image.flags.writeable:  # Ray hands out read-only views; torch warns on those
        image = image.copy()
    return normalize_intensity(match_channels(image, in_channels), intensity)


def pad_to_multiple(image: np.ndarray, divisor: int) -> np.ndarray:
    """Zero-pad (C, H, W) at the bottom/right so H and W are multiples of ``divisor``."""
    _, h, w = image.shape
    ph, pw = -h % divisor, -w % divisor
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, 0), (0, ph), (0, pw)))


def random_patch(
    image: np.ndarray,
    label: np.ndarray,
    patch_size: tuple[int, int],
    rng: np.random.Generator,
    foreground_prob: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop a (patch_h, patch_w) patch, padding first if the image is smaller.

    With probability ``foreground_prob`` the patch is centred on a random foreground pixel
    (nnU-Net's oversampling), so small structures are seen often enough to be learnt.
    """
    ph, pw = patch_size
    _, h, w = image.shape
    pad_h, pad_w = max(ph - h, 0), max(pw - w, 0)
    if pad_h or pad_w:
        image = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)))
        label = np.pad(label, ((0, pad_h), (0, pad_w)))
        h, w = label.shape
    fg = np.argwhere(label > 0) if rng.random() < foreground_prob else np.empty((0, 2))
    if len(fg):
        cy, cx = fg[rng.integers(len(fg))]
        top = int(np.clip(cy - ph // 2, 0, h - ph))
        left = int(np.clip(cx - pw // 2, 0, w - pw))
    else:
        top = int(rng.integers(0, h - ph + 1))
        left = int(rng.integers(0, w - pw + 1))
    return image[:, top : top + ph, left : left + pw], label[top : top + ph, left : left + pw]

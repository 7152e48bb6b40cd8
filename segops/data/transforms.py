"""Array transforms from record pixels to network input (MONAI intensity transforms).

Everything here works on one image: ``image`` is (C, H, W) float32, ``label`` is (H, W) uint8,
or on one volume: ``image`` (C, Z, H, W), ``label`` (Z, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

from segops.config.schema import IntensitySpec, PercentileIntensity, PreprocessSpec, WindowIntensity
from segops.config.sources import IGNORE_LABEL
from segops.errors import ShapeError

#: How a 2D image is resized before the network: one factor, or (row, column) factors (:func:`image_scale`).
Scale = float | tuple[float, float]
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


def prepare_image(
    image: np.ndarray, intensity: IntensitySpec, in_channels: int, spatial_dims: int = 2, scale: Scale = 1.0
) -> np.ndarray:
    """Record pixels → normalised (in_channels, H, W) float32 network input ((in_channels, Z, H, W)
    with ``spatial_dims=3``). A 2D image is first resized by ``scale`` (:func:`image_scale`):
    before normalising, since the percentiles of a 4000x3000 photo cost more than its network pass
    at 0.17; volumes are never resized."""
    if image.ndim != spatial_dims + 1:
        if spatial_dims == 3:
            raise ShapeError(
                f"a 3D model takes volumes of shape (C, Z, H, W), got {image.shape}; "
                "segment volume records (records: volumes) or use a 2D model"
            )
        raise ShapeError(f"expected an image of shape (C, H, W), got {image.shape}")
    # a copy: MONAI's NormalizeIntensity (z-score) writes into a writable input, and the caller's
    # record must stay as decoded (the risk, the embeddings and the prediction each read it)
    if spatial_dims == 2:
        image = rescale_image(image, scale)
    return normalize_intensity(match_channels(np.array(image, dtype=np.float32), in_channels), intensity)


def image_scale(preprocess: PreprocessSpec, spacing: Sequence[float] | None = None) -> Scale:
    """The factor a 2D image is resized by before the network: ``preprocess.scale``, or with
    ``preprocess.spacing`` (row, column) its own ``spacing`` (the last two values: (row, column) mm,
    None when unknown) over the target's, per axis; 1 for an image of unknown spacing."""
    if preprocess.spacing is None:
        return preprocess.scale
    if spacing is None or len(spacing) < 2 or not all(np.isfinite(spacing[-2:])):
        return 1.0
    factors = (float(spacing[-2]) / preprocess.spacing[0], float(spacing[-1]) / preprocess.spacing[1])
    return 1.0 if factors == (1.0, 1.0) else factors


def unscaled(scale: Scale) -> bool:
    """Whether ``scale`` leaves an image as it is (1, or (1, 1))."""
    return scale == 1 or scale == (1.0, 1.0)


def scaled_shape(shape: tuple[int, ...], scale: Scale) -> tuple[int, ...]:
    """(H, W) resized by ``scale`` (one factor, or (row, column) factors): each side rounded, at least 1 px."""
    factors = scale if isinstance(scale, tuple) else (scale, scale)
    return tuple(max(1, round(n * f)) for n, f in zip(shape, factors))


def rescale_image(image: np.ndarray, scale: Scale) -> np.ndarray:
    """(C, H, W) float32 resized by ``scale``: area-averaged (antialiased bilinear) when shrinking,
    so thin bright or dark lines fade rather than alias; unchanged at 1."""
    if unscaled(scale):
        return image
    size = scaled_shape(image.shape[1:], scale)
    array = np.ascontiguousarray(image, dtype=np.float32)
    tensor = torch.from_numpy(array if array.flags.writeable else array.copy())[None]  # a record's pixels are read-only
    resized = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].numpy()


def rescale_label(label: np.ndarray, scale: Scale) -> np.ndarray:
    """(H, W) class map resized by ``scale`` by nearest neighbour (no class mixes); unchanged at 1."""
    if unscaled(scale):
        return label
    size = scaled_shape(label.shape, scale)
    rows = np.minimum((np.arange(size[0]) + 0.5) * label.shape[0] / size[0], label.shape[0] - 1).astype(np.intp)
    cols = np.minimum((np.arange(size[1]) + 0.5) * label.shape[1] / size[1], label.shape[1] - 1).astype(np.intp)
    return label[np.ix_(rows, cols)]


def padded_size(spatial: Sequence[int], divisor: int, min_size: Sequence[int] = ()) -> tuple[int, ...]:
    """The spatial size :func:`pad_to_multiple` pads ``spatial`` to (each axis at least ``min_size``'s,
    then up to a multiple of ``divisor``), without padding anything."""
    sizes = [max(n, m) for n, m in zip(spatial, min_size)] + list(spatial[len(min_size) :])
    return tuple(s + (-s % divisor) for s in sizes)


def pad_to_multiple(image: np.ndarray, divisor: int, min_size: Sequence[int] = ()) -> np.ndarray:
    """Pad (C, H, W) or (C, Z, H, W) at the end of each spatial axis to multiples of ``divisor``,
    mirroring the image at its edge; with ``min_size`` (the training patch size), an axis shorter
    than it is first padded up to it.

    Mirrored, not zero: after a window or percentile normalisation 0 is the darkest value, and a
    black band along the bottom and right edges looks like a dark defect to a network that
    learnt dark pits and cracks (it then predicted foreground along those edges of every image).
    ``min_size``: an image smaller than the patches the network trained on (a 28 px crop beside
    200 px photos) goes through it at the patch size, as nnU-Net pads such images; padded only to
    the divisor, its bottleneck would be 1 px, where instance normalisation has nothing to
    normalise over (torch raises) and a network's context ends at the image's edge.
    """
    pads = [t - n for t, n in zip(padded_size(image.shape[1:], divisor, min_size), image.shape[1:])]
    if not any(pads):
        return image
    return np.pad(image, ((0, 0), *((0, p) for p in pads)), mode="symmetric")


def random_patch(
    image: np.ndarray,
    label: np.ndarray,
    patch_size: tuple[int, ...],
    rng: np.random.Generator,
    foreground_prob: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop a patch of ``patch_size`` ((H, W), or (Z, H, W) from a volume), padding first
    where the image is smaller.

    With probability ``foreground_prob`` the patch is centred on a random foreground pixel
    (nnU-Net's oversampling), so small structures are seen often enough to be learnt. Where the
    label holds several foreground classes, one of them is chosen first, uniformly, then one of
    its pixels (as nnU-Net's data loader): an oesophagus beside two lungs, or a rare defect type
    beside a common one, is centred as often as the large class, not in proportion to its pixels.

    Args:
        image: (C, *spatial); label: (*spatial), with ``len(spatial) == len(patch_size)``.
    """
    if label.ndim != len(patch_size) or image.shape[1:] != label.shape:
        raise ShapeError(f"patch_size {list(patch_size)} does not fit image {image.shape} and label {label.shape}")
    pads = [max(p - n, 0) for p, n in zip(patch_size, label.shape)]
    if any(pads):
        image = np.pad(image, ((0, 0), *((0, p) for p in pads)))
        label = np.pad(label, [(0, p) for p in pads])
    wanted = (label > 0) & (label != IGNORE_LABEL)  # ignored pixels (ignore_void) are no foreground
    fg = np.argwhere(wanted) if rng.random() < foreground_prob else np.empty((0, label.ndim))
    if len(fg):
        values = label[tuple(fg.T)]
        classes = np.unique(values)
        if len(classes) > 1:  # one class alone draws nothing more: binary labels keep their seeded patches
            fg = fg[values == classes[rng.integers(len(classes))]]
        centre = fg[rng.integers(len(fg))]
        starts = [int(np.clip(c - p // 2, 0, n - p)) for c, p, n in zip(centre, patch_size, label.shape)]
    else:
        starts = [int(rng.integers(0, n - p + 1)) for p, n in zip(patch_size, label.shape)]
    window = tuple(slice(s, s + p) for s, p in zip(starts, patch_size))
    return image[(slice(None), *window)], label[window]

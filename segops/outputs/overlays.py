"""Pictures of cases for people: a case's image decoded again, scaled for display, masks drawn over it.

The segment step's overlay thumbnails and the audit's worst-case overlays both come from here, so a
mask looks the same wherever it is shown and a case's image is re-decoded one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from segops.config.schema import DicomSource, ImageSource, VolumeSource
from segops.config.sources import IGNORE_LABEL, VOLUME_EXTENSIONS, SlicePlane
from segops.data.decode import decode_file
from segops.data.records import STATUS_OK
from segops.data.slice_planes import FILE_ORDER, PLANES, case_axes, plane_axes
from segops.data.volumes import file_grid, volume_extension
from segops.errors import DecodeError, SegopsError, ShapeError

#: File suffixes read as 2D images; anything else is read as DICOM (see :func:`guess_source`).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")
RED = (1.0, 0.1, 0.1)
#: The longest side, in pixels, of an overlay picture (review page, segment overlays).
DISPLAY_SIDE = 1024
GREEN = (0.1, 1.0, 0.1)

Colour = tuple[float, float, float]  # RGB in [0, 1]


# --------------------------------------------------------------------------- drawing


def draw_masks(
    image01: np.ndarray,
    fill: tuple[np.ndarray, Colour] | None = None,
    outlines: Sequence[tuple[np.ndarray, Colour]] = (),
    scale: int = 1,
    width: int = 1,
) -> np.ndarray:
    """Draw masks over an image: one tinted, any number outlined (in order, later ones on top).

    Args:
        image01: (H, W) gray or (H, W, C≥3) colour, float in [0, 1] (clipped).
        fill: (class map (H, W), colour): non-zero pixels blended 45 % towards the colour.
        outlines: (class map (H, W), colour) pairs: the inner edge of each mask's foreground.
            A mask with no pixels (the (0, 0) label of an unlabelled record) draws nothing.
        scale: each pixel becomes ``scale`` × ``scale`` pixels before drawing, so outlines stay
            thin on small images shown large.
        width: outline thickness in output pixels.

    Returns:
        (H·scale, W·scale, 3) uint8 RGB.
    """
    gray = np.clip(image01, 0, 1)
    if gray.ndim == 2:
        rgb = np.stack([gray, gray, gray], axis=-1)
    elif gray.ndim == 3 and gray.shape[-1] >= 3:
        rgb = np.array(gray[..., :3])
    else:
        raise ShapeError(f"expected an (H, W) or (H, W, 3) image, got shape {image01.shape}")
    rgb = _upscale(rgb, scale)
    if fill is not None:
        fg = _mask(fill[0], image01.shape[:2], scale)
        rgb[fg] = 0.55 * rgb[fg] + 0.45 * np.array(fill[1])
    for mask, colour in outlines:
        fg = _mask(mask, image01.shape[:2], scale)
        rgb[fg & ~ndimage.binary_erosion(fg, iterations=width)] = np.array(colour)
    return (rgb * 255).round().astype(np.uint8)


def overlay_rgb(image01: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """Prediction tinted red, ground truth outlined in green (:func:`draw_masks`).

    Args:
        image01: (H, W) float in [0, 1].
        pred: (H, W) class map; non-zero pixels are tinted red.
        truth: optional (H, W) class map, drawn as a green outline.

    Returns:
        (H, W, 3) uint8 RGB; an image longer than :data:`DISPLAY_SIDE` is first shrunk by a whole
        factor to fit it (:func:`fit_for_display`), so a 12-megapixel photo gives a picture of
        about 1000 px, not a 20 MB PNG.
    """
    image01, pred, truth = fit_for_display(image01, pred, truth)
    return draw_masks(image01, fill=(pred, RED), outlines=[(truth, GREEN)] if truth is not None else [])


def fit_for_display(
    image01: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Shrink an image and its masks by the smallest whole factor that brings the longer side to at
    most :data:`DISPLAY_SIDE`: the image by block means, the masks by taking every factor-th pixel
    (no class mixes). Smaller images are returned as they are."""
    h, w = image01.shape[:2]
    factor = -(-max(h, w) // DISPLAY_SIDE)
    if factor <= 1:
        return image01, pred, truth
    rows, cols = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.pad(image01, [(0, rows - h), (0, cols - w)] + [(0, 0)] * (image01.ndim - 2), mode="edge")
    small = padded.reshape(rows // factor, factor, cols // factor, factor, *image01.shape[2:]).mean(axis=(1, 3))
    return small, _every(pred, factor), _every(truth, factor)


def _every(mask: np.ndarray | None, factor: int) -> np.ndarray | None:
    """Every ``factor``-th pixel of a mask each way; None and the empty label of an unlabelled record as they are."""
    return mask if mask is None or np.asarray(mask).size == 0 else np.asarray(mask)[::factor, ::factor]


def _mask(mask: np.ndarray, shape: tuple[int, ...], scale: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.size == 0:
        return np.zeros((shape[0] * scale, shape[1] * scale), dtype=bool)
    if mask.shape != tuple(shape):
        raise ShapeError(f"mask of shape {mask.shape} does not fit an image of shape {tuple(shape)}")
    return _upscale((mask > 0) & (mask != IGNORE_LABEL), scale)  # ignored pixels (ignore_void) are no object


def _upscale(array: np.ndarray, scale: int) -> np.ndarray:
    if scale < 1:
        raise SegopsError(f"scale must be a whole number >= 1, got {scale}")
    return array if scale == 1 else array.repeat(scale, axis=0).repeat(scale, axis=1)


# --------------------------------------------------------------------------- re-decoding


def decode_case(
    source_uri: str,
    rel_path: str,
    case_id: str,
    source: DicomSource | ImageSource | VolumeSource,
    frame: int | None = None,
) -> dict[str, Any]:
    """Decode one case again from its file (pictures need pixels that result tables do not keep).

    Args:
        source_uri, rel_path: the file, as the case's record names it.
        case_id: the case to return; when the file holds no such case and ``frame`` is given, the
            row of that frame instead.
        source: the source spec the file is read as (with ``labels``, rows carry their label).

    Returns:
        The record row: ``image`` (C, H, W), ``label`` (or None), ``case_id``, ``frame``…

    Raises:
        DecodeError: the file no longer decodes, or holds no such case.
    """
    rows = decode_file(source_uri, rel_path, source)
    ok = [r for r in rows if r["status"] == STATUS_OK]
    row = next((r for r in ok if r["case_id"] == case_id), None)
    if row is None and frame is not None:
        row = next((r for r in ok if r["frame"] == frame), None)
    if row is None:
        reason = rows[0]["error"] if rows and rows[0]["status"] != STATUS_OK else f"no case {case_id}"
        raise DecodeError(f"cannot show {source_uri}: {reason}")
    return row


def guess_source(path: Path, modality: str = "", case_id: str = "") -> DicomSource | ImageSource | VolumeSource:
    """The source spec a file is read as when the workflow's spec is not at hand: a 2D image or a
    volume (NIfTI, NRRD, MHA) by its suffix (or modality ``XC``), else DICOM. A volume slice's
    ``case_id`` says the plane its case was cut in (:func:`segops.data.slice_planes.case_axes`)."""
    if modality == "XC" or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(kind="images", path=path.parent)
    if volume_extension(path.name, VOLUME_EXTENSIONS) is not None:
        return VolumeSource(kind="volumes", path=path.parent, slice_plane=_cut_plane(path, case_id))
    return DicomSource(kind="dicom", path=path.parent, skip=())  # a case that was segmented: read whatever it is


def _cut_plane(path: Path, case_id: str) -> SlicePlane:
    """The plane whose cut of the volume file ``path`` gives the axes ``case_id`` names."""
    axes = case_axes(case_id)
    if axes == FILE_ORDER or not path.is_file():
        return "file"
    shape, _components, affine, _fmt = file_grid(path)
    return next((p for p in PLANES if plane_axes(affine, p, shape) == axes), "file")  # type: ignore[return-value]


def display_image(source_uri: str, rel_path: str, case_id: str, frame: int = 0, modality: str = "") -> np.ndarray:
    """Re-decode a case's image for display: (H, W) or (H, W, 3) float in [0, 1] (1st–99th percentile).

    Raises:
        FileNotFoundError: the source file is not on this machine.
        DecodeError: it no longer decodes, or holds no such case.
    """
    path = Path(source_uri)
    if not path.is_file():
        raise FileNotFoundError(f"image {source_uri} is not on this machine")
    row = decode_case(str(path), rel_path or path.name, case_id, guess_source(path, modality, case_id), frame)
    return percentile_scale(np.asarray(row["image"], dtype=np.float32))


def percentile_scale(image: np.ndarray) -> np.ndarray:
    """(C, H, W) pixels → (H, W) (one channel) or (H, W, 3) float in [0, 1], 1st–99th percentile stretched."""
    lo, hi = np.percentile(image, [1, 99])
    scaled = np.clip((image - lo) / max(float(hi - lo), 1e-6), 0, 1)
    return scaled[0] if scaled.shape[0] == 1 else np.moveaxis(scaled[:3], 0, -1)

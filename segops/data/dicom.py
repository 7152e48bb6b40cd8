"""Decode DICOM files into :class:`ImageRecord` s (pure: pydicom + numpy only)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from segops.data.records import ImageRecord, path_case_id
from segops.errors import DecodeError, NoPixelDataError

log = logging.getLogger(__name__)


def read_dicom(path: str | Path, rel_path: str) -> list[ImageRecord]:
    """Read one DICOM file into one record per frame.

    Applies the Modality LUT (RescaleSlope/Intercept) so CT values are HU, and inverts
    MONOCHROME1 so that higher always means brighter.

    Raises:
        NoPixelDataError: the object has no Pixel Data (SR, KOS, RT...).
        DecodeError: the file is not DICOM or its pixels cannot be decoded.
    """
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError as exc:
        raise DecodeError(f"not a DICOM file (no DICM preamble/meta): {exc}") from exc
    except Exception as exc:  # pydicom raises many types on truncated/garbled input
        raise DecodeError(f"cannot parse DICOM: {type(exc).__name__}: {exc}") from exc
    if "PixelData" not in ds:
        sop = getattr(ds, "SOPClassUID", None)
        raise NoPixelDataError(f"no pixel data (SOP class {getattr(sop, 'name', sop)})")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DecodeError(f"cannot decode pixel data: {type(exc).__name__}: {exc}") from exc

    photometric = str(getattr(ds, "PhotometricInterpretation", ""))
    frames = _as_frames(pixels, ds)
    spacing = _pixel_spacing(ds)
    sop_uid = str(getattr(ds, "SOPInstanceUID", "") or path_case_id(rel_path))
    series_uid = str(getattr(ds, "SeriesInstanceUID", "") or sop_uid)
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    records = []
    for index, frame in enumerate(frames):
        image = _to_float_image(frame, ds, photometric)
        case_id = sop_uid if len(frames) == 1 else f"{sop_uid}.{index}"
        records.append(
            ImageRecord(
                image=image,
                case_id=case_id,
                group_id=series_uid,
                source_uri=str(Path(path).resolve()),
                rel_path=rel_path,
                modality=str(getattr(ds, "Modality", "OT")),
                frame=index,
                spacing=spacing,
                transfer_syntax=ts,
                photometric=photometric,
            )
        )
    return records


def _as_frames(pixels: np.ndarray, ds: pydicom.Dataset) -> list[np.ndarray]:
    """Split pixel_array into 2D (H, W) or (H, W, 3) frames."""
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if n_frames > 1:
        return [pixels[i] for i in range(pixels.shape[0])]
    if pixels.ndim == 2 or (pixels.ndim == 3 and samples > 1):
        return [pixels]
    raise DecodeError(f"unexpected pixel array shape {pixels.shape} for a single-frame image")


def _to_float_image(frame: np.ndarray, ds: pydicom.Dataset, photometric: str) -> np.ndarray:
    """(H, W) or (H, W, 3) stored values → (C, H, W) float32 after modality LUT."""
    if frame.ndim == 3:  # colour: pydicom already converted YBR to RGB where it can
        return np.ascontiguousarray(np.moveaxis(frame, -1, 0), dtype=np.float32)
    values = apply_modality_lut(frame, ds).astype(np.float32)
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values[None]


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        if value is not None and len(value) == 2:
            try:
                return float(value[0]), float(value[1])
            except (TypeError, ValueError):
                log.debug("unparseable %s %r", keyword, value)
    return 1.0, 1.0

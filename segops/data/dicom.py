"""Decode DICOM files into :class:`ImageRecord` s (pure: pydicom + numpy only).

Pixel data handlers come from pylibjpeg (+libjpeg: JPEG baseline/extended/lossless and
JPEG-LS; +openjpeg: JPEG 2000) and pydicom itself (RLE, deflate, big endian). Measured on
pydicom's bundled test files, python-gdcm decodes nothing more (it also rejects 12-bit JPEG
Extended), so it is not a dependency.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from segops.data.records import ImageRecord, path_case_id
from segops.errors import DecodeError, NoPixelDataError

log = logging.getLogger(__name__)

#: Elements at least one of which a real DICOM object has; a forced read of random bytes has none.
_IDENTITY_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID")


def read_dicom(path: str | Path, rel_path: str) -> list[ImageRecord]:
    """Read one DICOM file into one record per frame.

    Files without the 128-byte preamble and file meta (old "raw" DICOM) are read anyway, with
    the transfer syntax inferred from how they were encoded. Applies the Modality LUT
    (RescaleSlope/Intercept, so CT values are HU), honours BitsStored and signedness (via
    pydicom), converts YBR to RGB, and inverts MONOCHROME1 so higher is always brighter.

    Raises:
        NoPixelDataError: the object has no Pixel Data (SR, KOS, RT structure set...).
        DecodeError: the file is not DICOM or its pixels cannot be decoded.
    """
    ds = _read_dataset(path)
    if "PixelData" not in ds:
        sop = getattr(ds, "SOPClassUID", None)
        sop_name = str(getattr(sop, "name", sop) or "unknown")
        if "Image Storage" in sop_name or "Rows" in ds:
            # an image object without its pixels: a truncated transfer, not an SR or RT object
            raise DecodeError(f"{sop_name} without Pixel Data: file truncated or incomplete")
        raise NoPixelDataError(f"no pixel data (SOP class {sop_name})")
    ts = _ensure_transfer_syntax(ds)
    photometric = str(getattr(ds, "PhotometricInterpretation", ""))
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DecodeError(f"cannot decode pixel data ({_ts_name(ts)}): {type(exc).__name__}: {exc}", ts) from exc

    frames = _as_frames(pixels, ds)
    sop_uid = str(getattr(ds, "SOPInstanceUID", "") or path_case_id(rel_path))
    series_uid = str(getattr(ds, "SeriesInstanceUID", "") or sop_uid)
    positions = _frame_positions(ds, len(frames))
    common = dict(
        group_id=series_uid,
        source_uri=str(Path(path).resolve()),
        rel_path=rel_path,
        modality=str(getattr(ds, "Modality", "") or "OT"),
        spacing=_pixel_spacing(ds),
        transfer_syntax=ts,
        photometric=photometric,
        orientation=_floats(getattr(ds, "ImageOrientationPatient", None), 6) or _shared_orientation(ds),
        instance_number=_int(getattr(ds, "InstanceNumber", None)),
        instance_uid=str(getattr(ds, "SOPInstanceUID", "")),
        n_frames=len(frames),
    )
    return [
        ImageRecord(
            image=_to_float_image(frame, ds, photometric),
            case_id=sop_uid if len(frames) == 1 else f"{sop_uid}.{index}",
            frame=index,
            position=positions[index],
            **common,
        )
        for index, frame in enumerate(frames)
    ]


def _read_dataset(path: str | Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(str(path))
    except InvalidDicomError:
        pass  # no preamble/meta: maybe raw DICOM, try harder below
    except Exception as exc:  # pydicom raises many types on truncated/garbled input
        raise DecodeError(f"cannot parse DICOM: {type(exc).__name__}: {exc}") from exc
    try:
        ds = pydicom.dcmread(str(path), force=True)
        if not any(keyword in ds for keyword in _IDENTITY_KEYWORDS):
            raise DecodeError("not a DICOM file: no DICM preamble and no recognisable DICOM elements")
        return ds
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"not a DICOM file: {type(exc).__name__}: {exc}") from exc


def _ensure_transfer_syntax(ds: pydicom.Dataset) -> str:
    """The transfer syntax UID, inferred from the encoding when the file meta lacks it."""
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts:
        return str(ts)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        raise DecodeError("transfer syntax unknown: no file meta and no encoding information")
    ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    log.debug("inferred transfer syntax %s", ts)
    return str(ts)


def _ts_name(ts: str) -> str:
    return getattr(pydicom.uid.UID(ts), "name", ts) or ts


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
    if frame.ndim == 3:  # colour: pydicom already converted YBR to RGB
        return np.ascontiguousarray(np.moveaxis(frame, -1, 0), dtype=np.float32)
    values = apply_modality_lut(frame, ds).astype(np.float32)
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values[None]


def _frame_positions(ds: pydicom.Dataset, n_frames: int) -> list[tuple[float, ...]]:
    """ImagePositionPatient per frame (enhanced multi-frame keeps one per frame)."""
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per_frame is not None and len(per_frame) == n_frames:
        out = []
        for item in per_frame:
            plane = getattr(item, "PlanePositionSequence", None)
            out.append(_floats(plane[0].ImagePositionPatient, 3) if plane else ())
        return out
    position = _floats(getattr(ds, "ImagePositionPatient", None), 3)
    return [position if n_frames == 1 else () for _ in range(n_frames)]


def _shared_orientation(ds: pydicom.Dataset) -> tuple[float, ...]:
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    try:
        return _floats(shared[0].PlaneOrientationSequence[0].ImageOrientationPatient, 6)
    except (AttributeError, IndexError, TypeError):
        return ()


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _floats(getattr(ds, keyword, None), 2)
        if value:
            return value[0], value[1]
    return 1.0, 1.0


def _floats(value: object, n: int) -> tuple[float, ...]:
    """``n`` floats from a multi-valued DICOM element, or () when absent or malformed."""
    try:
        floats = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return ()
    return floats if len(floats) == n and all(np.isfinite(floats)) else ()


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1

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
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from segops.data.dicom_integrity import pixel_data_problem, stream_problem
from segops.data.dicom_roles import image_role, left_out
from segops.data.records import ImageRecord, path_case_id
from segops.data.sop_classes import is_non_image_class
from segops.errors import DecodeError, LeftOutError, NoPixelDataError

log = logging.getLogger(__name__)

#: Elements at least one of which a real DICOM object has; a forced read of random bytes has none.
_IDENTITY_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID")


def read_dicom(
    path: str | Path, rel_path: str, skip: tuple[str, ...] = (), modalities: tuple[str, ...] = ()
) -> list[ImageRecord]:
    """Read one DICOM file into one record per frame.

    Files without the 128-byte preamble and file meta (old "raw" DICOM) are read anyway, with
    the transfer syntax inferred from how they were encoded. Applies the Modality LUT
    (RescaleSlope/Intercept, so CT values are HU), honours BitsStored and signedness (via
    pydicom), converts YBR to RGB, and inverts MONOCHROME1 so higher is always brighter.

    Raises:
        NoPixelDataError: an intact object of a class that carries no image (SR, KOS, RT plan...,
            see :mod:`segops.data.sop_classes`).
        LeftOutError: a whole image object that ``skip`` (roles) or ``modalities`` leaves out
            (:func:`segops.data.dicom_roles.left_out`).
        DecodeError: the file is not DICOM, is damaged, or is an image object (any class not on
            that list, or of unknown class) without complete Pixel Data, or its pixels cannot be
            decoded.
    """
    ds = _read_dataset(path)
    ts = _complete_image(path, ds)
    why = left_out(ds, skip, modalities)
    if why:
        raise LeftOutError(why, ts)
    photometric = str(getattr(ds, "PhotometricInterpretation", ""))
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DecodeError(f"cannot decode pixel data ({_ts_name(ts)}): {type(exc).__name__}: {exc}", ts) from exc

    frames = _as_frames(pixels, ds)
    sop_uid = str(getattr(ds, "SOPInstanceUID", "") or path_case_id(rel_path))
    series_uid = str(getattr(ds, "SeriesInstanceUID", "") or sop_uid)
    positions = _frame_positions(ds, len(frames))
    spacing = _pixel_spacing(ds)
    common = dict(
        group_id=series_uid,
        source_uri=str(Path(path).resolve()),
        rel_path=rel_path,
        modality=str(getattr(ds, "Modality", "") or "OT"),
        image_role=image_role(ds),
        spacing=spacing or (1.0, 1.0),
        spacing_known=bool(spacing),
        transfer_syntax=ts,
        photometric=photometric,
        orientation=_floats(getattr(ds, "ImageOrientationPatient", None), 6) or _shared_orientation(ds),
        instance_number=_int(getattr(ds, "InstanceNumber", None)),
        patient_id=_text(ds, "PatientID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        instance_uid=_text(ds, "SOPInstanceUID"),
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


def _complete_image(path: str | Path, ds: pydicom.Dataset) -> str:
    """The transfer syntax of ``ds``, once it is known to be an image object with complete Pixel Data.

    Raises:
        NoPixelDataError: an intact object of a non-image class.
        DecodeError: a damaged non-image object, or an image object (or one of unknown class)
            without complete Pixel Data.
    """
    sop_name = sop_class_name(ds)
    if is_non_image_class(sop_class_uid(ds)):
        problem = non_image_problem(path, ds)
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        if problem:
            raise DecodeError(f"{sop_name} object damaged: {problem}", ts)
        raise NoPixelDataError(f"no image: {sop_name} objects carry no pixel data", ts)
    if "PixelData" not in ds:
        raise DecodeError(f"{sop_name} without complete Pixel Data: no Pixel Data element (truncated or damaged?)")
    ts = _ensure_transfer_syntax(ds)
    problem = pixel_data_problem(ds, ts, len(ds.PixelData or b""))
    if problem:
        raise DecodeError(f"{sop_name} without complete Pixel Data: {problem}", ts)
    return ts


def sop_class_uid(ds: pydicom.Dataset) -> str:
    """The SOP Class UID, or "" when absent or unreadable."""
    try:
        return str(ds.get("SOPClassUID", "") or "").strip()
    except Exception:  # a garbled value: pydicom converts lazily and may fail here
        return ""


def sop_class_name(ds: pydicom.Dataset) -> str:
    """The SOP class for messages: its registry name, the bare UID, or "object of unknown SOP class"."""
    uid = sop_class_uid(ds)
    if not uid:
        return "object of unknown SOP class (no readable SOP Class UID)"
    return str(pydicom.uid.UID(uid).name or uid)


def non_image_problem(path: str | Path, ds: pydicom.Dataset) -> str | None:
    """Why the file of a non-image object (read as ``ds``) is damaged, or None when it is whole.

    A whole non-image object is ``skipped``; a damaged one is quarantined like any damaged file.
    """
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or ts == DeflatedExplicitVRLittleEndian:  # deflated: the stream is compressed
        return None
    return stream_problem(Path(path).read_bytes(), implicit, little)


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


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | tuple[()]:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; () when neither is usable."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _floats(getattr(ds, keyword, None), 2)
        if value and all(v > 0 for v in value):
            return value[0], value[1]
    return ()


def _floats(value: object, n: int) -> tuple[float, ...]:
    """``n`` floats from a multi-valued DICOM element, or () when absent or malformed."""
    try:
        floats = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return ()
    return floats if len(floats) == n and all(np.isfinite(floats)) else ()


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    """An element's value as text, "" when absent, empty or unreadable (kept in the record for outputs)."""
    try:
        return str(ds.get(keyword) or "")
    except Exception:  # a garbled value: pydicom converts lazily and may fail here
        return ""


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1

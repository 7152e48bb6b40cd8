"""Header-only census of an archive: what is in it, without decoding a pixel."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pydicom
from PIL import Image, UnidentifiedImageError

from segops.config.schema import DicomSource, ImageSource
from segops.data.records import STATUS_OK, STATUS_QUARANTINED, STATUS_SKIPPED


def header_row(path: str, rel_path: str, source: DicomSource | ImageSource) -> dict[str, Any]:
    """Modality, transfer syntax (file format for images), photometric, shape, frames, status."""
    row: dict[str, Any] = {"rel_path": rel_path, "modality": "", "transfer_syntax": "", "photometric": "",
                           "channels": 0, "height": 0, "width": 0, "frames": 0, "status": STATUS_OK, "error": ""}  # fmt: skip
    try:
        if isinstance(source, DicomSource):
            _dicom_header(path, row)
        else:
            _image_header(path, row)
    except Exception as exc:  # any unreadable header is counted, never raised
        row |= {"status": STATUS_QUARANTINED, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return row


def _dicom_header(path: str, row: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    if not any(k in ds for k in ("SOPClassUID", "SOPInstanceUID", "Modality")):
        raise ValueError("not a DICOM file")
    meta = getattr(ds, "file_meta", None)
    row |= {
        "modality": str(getattr(ds, "Modality", "") or "OT"),
        "transfer_syntax": str(getattr(meta, "TransferSyntaxUID", "") or ""),
        "photometric": str(getattr(ds, "PhotometricInterpretation", "")),
        "channels": int(getattr(ds, "SamplesPerPixel", 1) or 1),
        "height": int(getattr(ds, "Rows", 0) or 0),
        "width": int(getattr(ds, "Columns", 0) or 0),
        "frames": int(getattr(ds, "NumberOfFrames", 1) or 1),
    }
    if not row["height"]:
        row |= {"status": STATUS_SKIPPED, "error": "no pixel data", "frames": 0}


def _image_header(path: str, row: dict[str, Any]) -> None:
    try:
        with Image.open(path) as img:
            row |= {
                "modality": "XC",
                "transfer_syntax": img.format or Path(path).suffix.lstrip(".").upper(),
                "photometric": img.mode,
                "channels": len(img.getbands()),
                "height": img.height,
                "width": img.width,
                "frames": int(getattr(img, "n_frames", 1)),
            }
    except UnidentifiedImageError as exc:
        raise ValueError(f"not an image: {exc}") from exc

"""Header-only census of an archive: what is in it, without decoding a pixel."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from segops.config.schema import DicomSource, ImageSource, VolumeSource
from segops.data.dicom import non_image_problem, sop_class_name, sop_class_uid
from segops.data.dicom_integrity import pixel_bytes_in_file, pixel_data_problem
from segops.data.dicom_roles import left_out
from segops.data.records import STATUS_OK, STATUS_QUARANTINED, STATUS_SKIPPED
from segops.data.sop_classes import is_non_image_class
from segops.data.volumes import volume_header
from segops.errors import DecodeError


def header_row(path: str, rel_path: str, source: DicomSource | ImageSource | VolumeSource) -> dict[str, Any]:
    """Modality, transfer syntax (file format for images and volumes), photometric, shape, frames
    (a volume's slices), status. A volume case is one row (``path``: its first channel file)."""
    row: dict[str, Any] = {
        "rel_path": rel_path,
        "modality": "",
        "transfer_syntax": "",
        "photometric": "",
        "channels": 0,
        "height": 0,
        "width": 0,
        "frames": 0,
        "status": STATUS_OK,
        "error": "",
    }
    try:
        if isinstance(source, DicomSource):
            _dicom_header(path, row, source)
        elif isinstance(source, VolumeSource):
            row |= volume_header(path, rel_path, source)
        else:
            _image_header(path, row)
    except Exception as exc:  # any unreadable header is counted, never raised
        row |= {"status": STATUS_QUARANTINED, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return row


def _dicom_header(path: str, row: dict[str, Any], source: DicomSource) -> None:
    with warnings.catch_warnings(), open(path, "rb") as fp:
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        offset, head = fp.tell(), fp.read(12)  # dcmread stopped at the Pixel Data element, if any
    if not any(k in ds for k in ("SOPClassUID", "SOPInstanceUID", "Modality")):
        raise DecodeError("not a DICOM file")
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
    problem = _dicom_problem(path, ds, row["transfer_syntax"], offset, head)
    if problem is None and (why := left_out(ds, source.skip, source.modalities)):
        problem = STATUS_SKIPPED, why
    if problem is not None:
        row |= {"status": problem[0], "error": problem[1], "frames": 0}


def _dicom_problem(path: str, ds: pydicom.Dataset, ts: str, offset: int, head: bytes) -> tuple[str, str] | None:
    """(status, why) for a DICOM object that yields no image, by the rule of :func:`read_dicom`:
    ``skipped`` only for an intact object of a non-image SOP class, else ``quarantined`` (a whole
    image the source leaves out is ``skipped`` by its caller)."""
    sop_name = sop_class_name(ds)
    if is_non_image_class(sop_class_uid(ds)):
        problem = non_image_problem(path, ds)
        if problem:
            return STATUS_QUARANTINED, f"{sop_name} object damaged: {problem}"
        return STATUS_SKIPPED, f"no image: {sop_name} objects carry no pixel data"
    if ts == DeflatedExplicitVRLittleEndian:  # the pixels are inside the deflated stream: no cheap check
        return None
    implicit, little = getattr(ds, "original_encoding", (True, True))
    present = pixel_bytes_in_file(head, offset, Path(path).stat().st_size, bool(implicit), bool(little))
    encapsulated = present is None and head[:4] in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
    if present is None and not encapsulated:
        return STATUS_QUARANTINED, f"{sop_name} without complete Pixel Data: no Pixel Data element"
    problem = None if present is None else pixel_data_problem(ds, ts or ImplicitVRLittleEndian, present)
    if problem:
        return STATUS_QUARANTINED, f"{sop_name} without complete Pixel Data: {problem}"
    return None


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
        raise DecodeError(f"not an image: {exc}") from exc


SUMMARY_KEYS = ["modality", "transfer_syntax", "photometric", "channels"]


def census_summary(census: pd.DataFrame, weight: str | None = None, top: int = 3) -> pd.DataFrame:
    """One line per modality × transfer syntax × photometric × channels (× status, if a column).

    Shapes are summarised, not listed: a folder of photos of 120 sizes gives a handful of lines.
    The full per-shape table stays where it was (``census.parquet``).

    Args:
        census: columns ``modality, transfer_syntax, photometric, channels, height, width``
            (``status`` and ``frames`` optional); one row per file, or per shape with a count
            column named by ``weight`` (ingest's ``records``).
        weight: the count column; None counts each row once (as ``files``).
        top: how many of the most frequent shapes to name.

    Returns:
        Group keys, the count (``weight`` or ``files``), ``frames`` (summed, when given), and text
        columns ``height`` / ``width`` (``"480"``, or ``"480–1024 (median 600)"`` when they vary)
        and ``shapes`` (``"600×800 (40), 480×640 (30), 1024×768 (20), +117 more"``); the shape
        text only counts rows with a shape (height > 0). Most frequent group first.
    """
    counted = weight or "files"
    keys = (["status"] if "status" in census.columns else []) + SUMMARY_KEYS
    columns = [*keys, counted, *(["frames"] if "frames" in census.columns else []), "height", "width", "shapes"]
    if census.empty:
        return pd.DataFrame(columns=columns)
    table = census.assign(**{counted: census[weight] if weight else 1})
    lines = []
    for group, rows in table.groupby(keys, dropna=False, sort=False):
        line = dict(zip(keys, group)) | {counted: int(rows[counted].sum())}
        if "frames" in rows.columns:
            line["frames"] = int(rows["frames"].sum())
        lines.append(line | _shape_text(rows, counted, top))
    summary = pd.DataFrame(lines, columns=columns)
    return summary.sort_values([counted, *keys], ascending=[False] + [True] * len(keys), kind="stable").reset_index(
        drop=True
    )


def _shape_text(rows: pd.DataFrame, counted: str, top: int) -> dict[str, str]:
    """``height``, ``width`` and ``shapes`` text of one group (rows with a shape only)."""
    shaped = rows[rows["height"] > 0]
    if shaped.empty:
        return {"height": "", "width": "", "shapes": ""}
    shapes = shaped.groupby(["height", "width"])[counted].sum().reset_index()
    shapes = shapes.sort_values([counted, "height", "width"], ascending=[False, True, True], kind="stable")
    named = [f"{h}×{w} ({n})" for h, w, n in shapes.head(top).itertuples(index=False)]
    if len(shapes) > top:
        named.append(f"+{len(shapes) - top} more")
    if len(shapes) == 1:
        named = [f"{shapes['height'].iloc[0]}×{shapes['width'].iloc[0]}"]
    return {
        "height": _range_text(shapes["height"].to_numpy(), shapes[counted].to_numpy()),
        "width": _range_text(shapes["width"].to_numpy(), shapes[counted].to_numpy()),
        "shapes": ", ".join(named),
    }


def _range_text(values: np.ndarray, counts: np.ndarray) -> str:
    """``"480"`` when all equal, else ``"480–1024 (median 600)"`` (median over the counted items)."""
    if values.min() == values.max():
        return str(int(values.min()))
    median = float(np.median(np.repeat(values, counts)))
    return f"{int(values.min())}–{int(values.max())} (median {median:g})"

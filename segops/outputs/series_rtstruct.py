"""``outputs: [rtstruct]``: one RT Structure Set per segmented DICOM series.

A volume record holds its whole series, so its RTSTRUCT is written with its other outputs
(:func:`write_volume_rtstruct`). Slice records of one series reach different actors in different
batches, so each actor keeps its slice's class map (``rtstruct-slices/<series>/<case>.npz``,
exact and small, whatever else ``outputs`` lists) and the step writes each series' RTSTRUCT from
them once every case is done (:func:`write_series_rtstructs`). The class maps stay: a rerun that
segments the rest of a series after a crash needs its earlier slices too.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pydicom
from pydicom.uid import generate_uid
from tqdm import tqdm

from segops import __version__
from segops.errors import SegopsError
from segops.outputs.atomic import atomic_write, safe_join
from segops.outputs.layout import sanitize_component
from segops.outputs.output_config import OutputConfig
from segops.outputs.rtstruct import SliceMask, build_rtstruct, write_rtstruct
from segops.outputs.storage import is_uri, join, open_storage, read_bytes

log = logging.getLogger(__name__)

#: Where actors keep slice class maps for the series' RTSTRUCTs, under the outputs root.
SLICES_DIR = "rtstruct-slices"
#: The tags an image's contours need, read when its record does not carry them.
GEOMETRY_TAGS = ("SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
#: Contours per slice above which a series' masks are called fragmented (a warning says why writing is slow).
FRAGMENTED_CONTOURS = 200
#: The geometry of one image: :class:`~segops.outputs.rtstruct.SliceMask` fields but the class map.
Geometry = dict[str, Any]


def slice_map_path(cfg: OutputConfig, series_uid: str, case_id: str) -> str:
    """Where a slice's class map is kept: ``<root>/rtstruct-slices/<series>/<case>.npz`` (sanitised)."""
    return str(join(cfg.root, SLICES_DIR, sanitize_component(series_uid), f"{sanitize_component(case_id)}.npz"))


def keep_slice_map(cfg: OutputConfig, meta: Mapping[str, Any], class_map: np.ndarray) -> None:
    """Keep a DICOM slice's (H, W) class map for its series' RTSTRUCT (atomically)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, class_map=np.ascontiguousarray(class_map, np.uint8))
    data = buf.getvalue()
    path = slice_map_path(cfg, str(meta["group_id"]), str(meta["case_id"]))
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def rtstruct_path(cfg: OutputConfig, rel_dir: str, header: pydicom.Dataset) -> str:
    """``<root>/rtstruct/<series folder>/<SeriesUID>.dcm``, or with ``layout: dicom-tags``
    ``<root>/rtstruct/<PatientID>/<StudyUID>/<SeriesUID>.dcm``; components from tags sanitised."""
    series = sanitize_component(header.get("SeriesInstanceUID"))
    if cfg.layout == "dicom-tags":
        parts = [sanitize_component(header.get(k)) for k in ("PatientID", "StudyInstanceUID")]
        stem = "/".join([*parts, series])
    else:
        stem = str(PurePosixPath(rel_dir) / series)
    return str(safe_join(join(cfg.root, "rtstruct"), f"{stem}.dcm"))


def header_geometry(source_uri: str) -> Geometry:
    """An image's geometry from its header (no pixels read)."""
    ds = pydicom.dcmread(source_uri, stop_before_pixels=True, specific_tags=list(GEOMETRY_TAGS))
    return {
        "instance_uid": str(ds.get("SOPInstanceUID", "")),
        "position": tuple(float(v) for v in ds.get("ImagePositionPatient", ())),
        "orientation": tuple(float(v) for v in ds.get("ImageOrientationPatient", ())),
        "spacing": tuple(float(v) for v in ds.get("PixelSpacing", (1.0, 1.0))),
    }


def record_geometry(record: Mapping[str, Any]) -> Geometry:
    """An image's geometry from its record's columns (:data:`segops.data.records.RECORD_SCHEMA`)."""
    return {
        "instance_uid": str(record.get("instance_uid") or record["case_id"]),
        "position": tuple(float(v) for v in record["position"]),
        "orientation": tuple(float(v) for v in record["orientation"]),
        "spacing": (float(record["spacing_y"]), float(record["spacing_x"])),
    }


def _description(cfg: OutputConfig) -> str:
    run = f", run {cfg.run_id}" if cfg.run_id else ""
    return f"segops {__version__}, model {cfg.model_digest}{run}"


def _rois(cfg: OutputConfig) -> dict[int, str]:
    """Class → ROI name, as the DICOM SEG names its segments."""
    return {c: cfg.segments.get(c, f"class {c}") for c in range(1, cfg.classes)}


def _write(cfg: OutputConfig, header: pydicom.Dataset, slices: list[SliceMask], path: str) -> str:
    """Build and write a series' RTSTRUCT, with UIDs derived from (series, model) as the SEG's."""
    series = str(header.SeriesInstanceUID)
    ds = build_rtstruct(
        header,
        _in_slice_order(slices),
        _rois(cfg),
        series_uid=generate_uid(entropy_srcs=["segops-rtstruct-series", series, cfg.model_digest]),
        sop_uid=generate_uid(entropy_srcs=["segops-rtstruct", series, cfg.model_digest]),
        description=_description(cfg),
    )
    contours = sum(len(item.get("ContourSequence", [])) for item in ds.ROIContourSequence)
    if contours > FRAGMENTED_CONTOURS * max(len(slices), 1):
        log.warning(
            "series %s: %d contours on %d slices; masks this fragmented (an undertrained model, or noise) make "
            "the RTSTRUCT slow to write and to open. Remove small components (train with validation cases, "
            "so postprocessing is chosen) or train longer",
            series,
            contours,
            len(slices),
        )
    return str(write_rtstruct(path, ds))


def _in_slice_order(slices: list[SliceMask]) -> list[SliceMask]:
    """Slices by position along the normal (the order a viewer lists them)."""
    if not slices or any(len(s.orientation) != 6 or len(s.position) != 3 for s in slices):
        return slices  # build_rtstruct names the slice without geometry
    row, col = np.asarray(slices[0].orientation[:3]), np.asarray(slices[0].orientation[3:])
    normal = np.cross(row, col)
    return sorted(slices, key=lambda s: float(np.dot(normal, s.position)))


def write_volume_rtstruct(cfg: OutputConfig, meta: Mapping[str, Any], mask: np.ndarray) -> str:
    """The RTSTRUCT of a volume record: its (Z, H, W) class map, slices in ``source_uris`` order
    (geometry and SOPInstanceUIDs from the slices' headers). Returns its path, or "" (logged) for
    a series without FrameOfReferenceUID: its other outputs stand."""
    uris = [str(u) for u in meta["source_uris"]]
    header = pydicom.dcmread(uris[0], stop_before_pixels=True)
    slices = [SliceMask(**header_geometry(uri), class_map=mask[z]) for z, uri in enumerate(uris)]
    try:
        return _write(cfg, header, slices, rtstruct_path(cfg, _folder(meta["rel_path"]), header))
    except SegopsError as exc:
        log.warning("no RTSTRUCT for series %s: %s", meta["case_id"], exc)
        return ""


def volume_rtstructs(cfg: OutputConfig, rows: pd.DataFrame) -> int:
    """How many of the series of these ``ok`` DICOM volume result rows have their RTSTRUCT."""
    found = 0
    for row in rows.itertuples():
        header = pydicom.dcmread(str(row.source_uri), stop_before_pixels=True)  # the series' first slice
        found += _exists(rtstruct_path(cfg, _folder(row.rel_path), header))
    return found


def _folder(rel_path: object) -> str:
    """The folder of a record's relative path (a volume record's: its series' folder)."""
    return str(PurePosixPath(str(rel_path)).parent)


def write_series_rtstructs(cfg: OutputConfig, rows: pd.DataFrame, geometry: Mapping[str, Geometry]) -> tuple[int, int]:
    """One RTSTRUCT per series of segmented DICOM slice records, from the slices' kept class maps.

    Args:
        rows: result rows of the ``ok`` DICOM slice records (``case_id``, ``group_id``,
            ``source_uri``, ``rel_path``, ``frame``).
        geometry: case id → its geometry from its record (:func:`record_geometry`); a case not
            there (a folder source has no records) gets :func:`header_geometry`.

    Returns:
        (series written now, series whose RTSTRUCT an earlier run of this step wrote).
        A multi-frame series, one without FrameOfReferenceUID or one missing a slice's class map
        is logged and left out.
    """
    written = existing = 0
    groups = rows.groupby("group_id", sort=True)
    bar = tqdm(groups, total=groups.ngroups, desc="rtstruct", unit="series", dynamic_ncols=True, mininterval=1.0)
    for series_uid, part in bar:
        part = part.sort_values(["rel_path", "case_id"])
        if (part["frame"].astype(int) > 0).any():
            log.warning("no RTSTRUCT for multi-frame series %s: contours reference single-frame images", series_uid)
            continue
        header = pydicom.dcmread(str(part["source_uri"].iloc[0]), stop_before_pixels=True)  # one per series
        path = rtstruct_path(cfg, _folder(part["rel_path"].iloc[0]), header)
        if _exists(path):
            existing += 1
            continue
        try:
            slices = [
                SliceMask(**(geometry.get(cid) or header_geometry(uri)), class_map=_slice_map(cfg, series_uid, cid))
                for cid, uri in zip(part["case_id"], part["source_uri"])
            ]
            _write(cfg, header, slices, path)
        except (SegopsError, FileNotFoundError) as exc:
            log.warning("no RTSTRUCT for series %s: %s", series_uid, exc)
            continue
        written += 1
    return written, existing


def _slice_map(cfg: OutputConfig, series_uid: str, case_id: str) -> np.ndarray:
    with np.load(io.BytesIO(read_bytes(slice_map_path(cfg, series_uid, case_id)))) as data:
        return data["class_map"]


def _exists(location: str) -> bool:
    if not is_uri(location):
        return Path(location).is_file()
    fs, path = open_storage(location)
    return fs.get_file_info(path).type == pafs.FileType.File

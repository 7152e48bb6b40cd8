"""The record: one image with the metadata every later step needs, and its row layouts.

Records travel through Ray Data as Arrow batches (one row per record, pixels in tensor
columns). This module defines each row layout once, so decoders, writers, readers and tests
agree on it: :data:`RECORD_SCHEMA` (a record's columns without pixels; adding a column is one
line there and, where a decoder knows its value, one in :meth:`ImageRecord.to_row`), the
problem row of a file that yields no record (:func:`problem_row`, same layout) and the
quarantine table's columns (:data:`QUARANTINE_COLUMNS`). The per-case result row of inference,
which carries a record's identifying and problem columns over, is an output's layout:
:data:`segops.outputs.reports.RESULT_SCHEMA`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from segops.data.label_census import label_counts

#: Row status values. Only ``ok`` rows carry pixels.
STATUS_OK = "ok"
STATUS_QUARANTINED = "quarantined"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"  # decoded, but segmenting or writing this one case failed
#: Quarantine-table status of a record kept without its label (the label could not be read or does not fit).
STATUS_UNLABELLED = "unlabelled"

#: A record's columns without pixels, in the order they are written, with explicit types so that
#: every block has the same schema (an all-empty list column would otherwise be inferred as
#: list<null> in one block and list<double> in another).
RECORD_SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("group_id", pa.string()),
        ("source_uri", pa.string()),
        ("rel_path", pa.string()),
        ("frame", pa.int64()),
        ("modality", pa.string()),
        ("image_role", pa.string()),  # DICOM: "", "localizer" or "secondary" (segops.data.dicom_roles.image_role)
        ("spacing_y", pa.float64()),
        ("spacing_x", pa.float64()),
        ("spacing_known", pa.bool_()),  # false: the source gave no spacing and spacing_y/x hold (1, 1)
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("channels", pa.int64()),
        ("transfer_syntax", pa.string()),
        ("photometric", pa.string()),
        ("position", pa.list_(pa.float64())),
        ("orientation", pa.list_(pa.float64())),
        ("instance_number", pa.int64()),
        ("patient_id", pa.string()),  # DICOM identifiers as stored ("" if absent or not DICOM) ...
        ("study_uid", pa.string()),
        ("series_uid", pa.string()),
        ("instance_uid", pa.string()),  # ... so outputs named by them need no second read of the file
        ("file_axes", pa.list_(pa.int64())),  # a volume file's axes its slice's columns, rows, index follow
        ("has_label", pa.bool_()),
        ("label_uri", pa.string()),
        ("label_values", pa.list_(pa.int64())),  # distinct label values as stored (after values/threshold), ascending
        ("label_pixels", pa.list_(pa.int64())),  # pixels of each of them: the label census without re-reading labels
        ("status", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("error", pa.string()),
    ]
)
#: Names of :data:`RECORD_SCHEMA`, in order.
META_COLUMNS = tuple(RECORD_SCHEMA.names)
#: Tensor columns after the metadata: ``image`` (C, H, W) or (C, Z, H, W) float32 and ``label``.
PIXEL_COLUMNS = ("image", "label")
#: The DICOM identifiers a record keeps for its outputs. Datasets written by an older segops lack them.
DICOM_ID_COLUMNS = ("patient_id", "study_uid", "series_uid", "instance_uid")
#: A label's census columns, also the rows label checks read from masks without a record.
LABEL_COUNT_COLUMNS = ("label_uri", "label_values", "label_pixels")
#: The quarantine table: one row per file (or frame) that yielded no usable record, and why.
QUARANTINE_COLUMNS = ("source_uri", "rel_path", "case_id", "status", "stage", "error_type", "error", "transfer_syntax")
QUARANTINE_SCHEMA = pa.schema([RECORD_SCHEMA.field(name) for name in QUARANTINE_COLUMNS])

#: The columns that give a record's pixel spacing (:func:`known_spacing`).
SPACING_COLUMNS = ("spacing_y", "spacing_x", "spacing_known")
#: Pixel columns of a row without pixels (problem rows; unlabelled records' label).
EMPTY_IMAGE = np.zeros((0, 0, 0), dtype=np.float32)
EMPTY_LABEL = np.zeros((0, 0), dtype=np.uint8)
#: Longest error message kept in a row.
MAX_ERROR_CHARS = 2000


@dataclass
class ImageRecord:
    """One decoded image (a 2D image, a frame, or a stacked volume).

    Attributes:
        image: (C, H, W) float32, intensities after the modality LUT (HU for CT); (C, Z, H, W)
            for a volume.
        case_id: stable id: SOPInstanceUID (+ frame) for DICOM, relative-path hash for files.
        group_id: cases that must stay on the same side of a train/val split
            (SeriesInstanceUID for DICOM; the file itself for inspection images).
        spacing: (row, column) pixel spacing in mm; (1, 1) when unknown.
        spacing_known: whether ``spacing`` came from the source (DICOM PixelSpacing or
            ImagerPixelSpacing, a volume's affine); photos and DICOM without either have none, and
            nothing is measured in mm for them.
        patient_id, study_uid, series_uid, instance_uid: PatientID, StudyInstanceUID,
            SeriesInstanceUID and SOPInstanceUID as stored in the file ("" when absent; DICOM only).
    """

    image: np.ndarray
    case_id: str
    group_id: str
    source_uri: str
    rel_path: str
    modality: str
    image_role: str = ""  # DICOM: localizer, secondary, or "" for a cross-section (and every other source)
    frame: int = 0
    spacing: tuple[float, float] = (1.0, 1.0)
    spacing_known: bool = False
    transfer_syntax: str = ""
    photometric: str = ""
    label: np.ndarray | None = None
    label_uri: str = ""
    position: tuple[float, ...] = ()  # ImagePositionPatient (x, y, z) in mm, () if unknown
    orientation: tuple[float, ...] = ()  # ImageOrientationPatient (row xyz, column xyz)
    instance_number: int = -1
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    instance_uid: str = ""  # SOPInstanceUID of the file (DICOM only)
    n_frames: int = 1
    file_axes: tuple[int, ...] = ()  # volume files: see segops.data.slice_planes; () for other sources

    def to_row(self) -> dict[str, Any]:
        """An ``ok`` row in the layout of :data:`RECORD_SCHEMA`, plus its :data:`PIXEL_COLUMNS`."""
        c, h, w = self.image.shape[0], self.image.shape[-2], self.image.shape[-1]
        label_values, label_pixels = label_counts(self.label) if self.label is not None else ([], [])
        return {
            "case_id": self.case_id,
            "group_id": self.group_id,
            "source_uri": self.source_uri,
            "rel_path": self.rel_path,
            "frame": self.frame,
            "modality": self.modality,
            "image_role": self.image_role,
            "spacing_y": float(self.spacing[0]),
            "spacing_x": float(self.spacing[1]),
            "spacing_known": bool(self.spacing_known),
            "height": h,
            "width": w,
            "channels": c,
            "transfer_syntax": self.transfer_syntax,
            "photometric": self.photometric,
            "position": [float(v) for v in self.position],
            "orientation": [float(v) for v in self.orientation],
            "instance_number": int(self.instance_number),
            "patient_id": self.patient_id,
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "instance_uid": self.instance_uid,
            "file_axes": [int(a) for a in self.file_axes],
            "has_label": self.label is not None,
            "label_uri": self.label_uri,
            "label_values": label_values,
            "label_pixels": label_pixels,
            "status": STATUS_OK,
            "stage": "",
            "error_type": "",
            "error": "",
            "image": self.image.astype(np.float32, copy=False),
            "label": self.label if self.label is not None else EMPTY_LABEL,
        }


def known_spacing(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """A row's (row, column) pixel spacing in mm; None when its source gave none (photos) or the
    row does not carry :data:`SPACING_COLUMNS`."""
    if not bool(row.get("spacing_known", False)):
        return None
    return float(row["spacing_y"]), float(row["spacing_x"])


def series_label_uri(paths: tuple[str, ...] | list[str], series_uid: str) -> str:
    """The ``label_uri`` of a series labelled by label files that name it (RTSTRUCT, LIDC XML):
    the files joined by ``|``, then ``#series=<uid>``."""
    return f"{'|'.join(paths)}#series={series_uid}"


def failure_fields(status: str, stage: str, exc: BaseException) -> dict[str, str]:
    """The columns that say why a row has no usable record (or result): status, stage, error."""
    return {"status": status, "stage": stage, "error_type": type(exc).__name__, "error": str(exc)[:MAX_ERROR_CHARS]}


def problem_row(
    path: str, rel_path: str, status: str, stage: str, exc: BaseException, case_id: str | None = None
) -> dict[str, Any]:
    """The row of a file (or frame) that yields no record, in the layout of :data:`RECORD_SCHEMA`.

    Args:
        status: :data:`STATUS_QUARANTINED` or :data:`STATUS_SKIPPED`.
        stage: where it failed (``read``, ``label``), or ``select`` (an image the source leaves out).
        exc: why; its ``transfer_syntax`` attribute, if any, is kept.
        case_id: the record's id when known (a label problem); else the path's hash.
    """
    empty = {name: _empty_value(RECORD_SCHEMA.field(name).type) for name in META_COLUMNS}
    return (
        empty
        | {
            "case_id": case_id or path_case_id(rel_path),
            "source_uri": str(Path(path).resolve()),
            "rel_path": rel_path,
            "transfer_syntax": getattr(exc, "transfer_syntax", ""),
            "instance_number": -1,
            "image": EMPTY_IMAGE,
            "label": EMPTY_LABEL,
        }
        | failure_fields(status, stage, exc)
    )


def _empty_value(kind: pa.DataType) -> Any:
    if pa.types.is_list(kind):
        return []
    if pa.types.is_boolean(kind):
        return False
    if pa.types.is_integer(kind):
        return 0
    if pa.types.is_floating(kind):
        return 0.0
    return ""


def records_table(rows: list[dict[str, Any]]) -> pa.Table:
    """The :data:`RECORD_SCHEMA` columns of rows (pixel columns and any others left out)."""
    return pa.table({name: [row[name] for row in rows] for name in META_COLUMNS}, schema=RECORD_SCHEMA)


def label_problems(rows: pd.DataFrame) -> pd.Series:
    """Which ``ok`` rows are records whose label could not be read (kept unlabelled, stage ``label``)."""
    return (rows["status"] == STATUS_OK) & (rows["stage"] == "label")


def quarantine_table(rows: pd.DataFrame, with_label_problems: bool = True) -> pd.DataFrame:
    """The quarantine table (:data:`QUARANTINE_COLUMNS`) of rows that are not ``ok``, and (unless
    ``with_label_problems`` is False) of records whose label could not be read (status
    :data:`STATUS_UNLABELLED`: the image is segmented, not scored)."""
    listed = rows["status"] != STATUS_OK
    if with_label_problems:
        listed |= label_problems(rows)
    table = rows[listed][list(QUARANTINE_COLUMNS)].copy()
    table.loc[table["status"] == STATUS_OK, "status"] = STATUS_UNLABELLED
    return table.reset_index(drop=True)


def dataset_meta(dataset_dir: str | Path) -> pd.DataFrame:
    """All rows of a written dataset without pixel columns (cheap: a column projection).

    A dataset written by an older segops lacks the newer columns (``label_values``,
    :data:`DICOM_ID_COLUMNS`, …): they are left out, not an error.
    """
    dataset = pads.dataset(str(dataset_dir), format="parquet")
    columns = [c for c in META_COLUMNS if c in dataset.schema.names]
    return dataset.to_table(columns=columns).to_pandas()


def group_cases(dataset_dir: str | Path, groups: list[str], labelled_only: bool = False) -> list[str]:
    """The ``ok`` case ids of ``groups`` in a written dataset (only labelled ones with
    ``labelled_only``), sorted."""
    meta = dataset_meta(dataset_dir)
    chosen = (meta["status"] == STATUS_OK) & meta["group_id"].isin(groups)
    if labelled_only:
        chosen &= meta["has_label"]
    return sorted(meta.loc[chosen, "case_id"])


def seeded_sample(ids: list[str], n: int, seed: int) -> list[str]:
    """At most ``n`` of ``ids``, drawn with ``seed`` and kept in their order."""
    return [ids[i] for i in sorted(np.random.default_rng(seed).choice(len(ids), min(n, len(ids)), replace=False))]


def path_case_id(rel_path: str) -> str:
    """Stable id for a file without intrinsic identity: sha1 of its relative path (16 hex)."""
    return hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:16]

"""The record: one 2D image with the metadata every later step needs.

Records travel through Ray Data as Arrow batches (one row per record, pixels in tensor
columns); this module defines the row layout so readers, writers and tests agree on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

#: Row status values. Only ``ok`` rows carry pixels.
STATUS_OK = "ok"
STATUS_QUARANTINED = "quarantined"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"  # decoded, but segmenting or writing this one case failed

#: Columns without pixels, in the order they are written.
META_COLUMNS = (
    "case_id",
    "group_id",
    "source_uri",
    "rel_path",
    "frame",
    "modality",
    "spacing_y",
    "spacing_x",
    "height",
    "width",
    "channels",
    "transfer_syntax",
    "photometric",
    "position",
    "orientation",
    "instance_number",
    "has_label",
    "label_uri",
    "label_values",  # distinct values of the label as stored (after values/threshold), ascending
    "label_pixels",  # pixels of each of them: the label census without re-reading labels
    "status",
    "stage",
    "error_type",
    "error",
)


@dataclass
class ImageRecord:
    """One decoded 2D image.

    Attributes:
        image: (C, H, W) float32, intensities after the modality LUT (HU for CT).
        case_id: stable id: SOPInstanceUID (+ frame) for DICOM, relative-path hash for files.
        group_id: cases that must stay on the same side of a train/val split
            (SeriesInstanceUID for DICOM; the file itself for inspection images).
        spacing: (row, column) pixel spacing in mm; (1, 1) when unknown.
    """

    image: np.ndarray
    case_id: str
    group_id: str
    source_uri: str
    rel_path: str
    modality: str
    frame: int = 0
    spacing: tuple[float, float] = (1.0, 1.0)
    transfer_syntax: str = ""
    photometric: str = ""
    label: np.ndarray | None = None
    label_uri: str = ""
    position: tuple[float, ...] = ()  # ImagePositionPatient (x, y, z) in mm, () if unknown
    orientation: tuple[float, ...] = ()  # ImageOrientationPatient (row xyz, column xyz)
    instance_number: int = -1
    instance_uid: str = ""  # SOPInstanceUID of the file (DICOM only)
    n_frames: int = 1


def path_case_id(rel_path: str) -> str:
    """Stable id for a file without intrinsic identity: sha1 of its relative path (16 hex)."""
    return hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:16]

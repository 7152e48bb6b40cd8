"""DICOM series → ordered volumes, with geometry checks (pure: numpy + pandas).

Slices are ordered by their position along the slice normal (the cross product of the row
and column direction cosines), never by InstanceNumber or file name, which PACS exports do
not keep reliable. Problems are reported, not raised: a series with a gap is still usable
as 2D slices, and the report says why it should not be used as a volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: Patient coordinates LPS (DICOM) ↔ RAS (NIfTI): the first two axes negated (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Relative deviation from the median slice spacing that counts as inconsistent.
SPACING_TOLERANCE = 0.05


@dataclass
class SeriesGeometry:
    """One series: its slices in order and what is wrong with it, if anything."""

    series_uid: str
    case_ids: list[str]
    slice_positions: list[float]  # along the normal, mm, ascending
    spacing: float  # median distance between neighbouring slices, mm (nan for 1 slice)
    gaps: int = 0  # neighbours further apart than 1.5 × spacing (missing slices)
    problems: list[str] = field(default_factory=list)

    @property
    def is_volume(self) -> bool:
        """Usable as a regular 3D volume: ordered by position, no gaps or irregular spacing."""
        return not self.problems


def slice_normal(orientation: tuple[float, ...] | list[float]) -> np.ndarray:
    """Unit normal of the image plane from ImageOrientationPatient (row xyz, column xyz)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def assemble_series(rows: pd.DataFrame) -> list[SeriesGeometry]:
    """Group 2D records by series and order each by position along its normal.

    Args:
        rows: one row per 2D record with ``case_id``, ``group_id`` (SeriesInstanceUID),
            ``position`` (3 floats or empty), ``orientation`` (6 floats or empty),
            ``instance_number``, ``height``, ``width``.
    """
    return [_one_series(uid, part) for uid, part in rows.groupby("group_id", sort=True)]


def _one_series(uid: str, part: pd.DataFrame) -> SeriesGeometry:
    problems: list[str] = []
    orientations = {tuple(np.round(o, 4)) for o in part["orientation"] if len(o) == 6}
    has_position = part["position"].map(len).eq(3)
    if len(orientations) > 1:
        problems.append(f"{len(orientations)} different orientations")
    if len({(h, w) for h, w in zip(part["height"], part["width"])}) > 1:
        problems.append("slices of different sizes")
    if not has_position.all() or not orientations:
        problems.append(
            f"{int((~has_position).sum())} slice(s) without position/orientation: ordered by InstanceNumber"
        )
        ordered = part.sort_values(["instance_number", "case_id"])
        return SeriesGeometry(uid, list(ordered["case_id"]), [float("nan")] * len(ordered), float("nan"), 0, problems)

    normal = slice_normal(next(iter(orientations)))
    along = np.array([float(np.dot(normal, p)) for p in part["position"]])
    order = np.argsort(along, kind="stable")
    along = along[order]
    case_ids = list(part["case_id"].to_numpy()[order])
    steps = np.diff(along)
    spacing = float(np.median(steps)) if len(steps) else float("nan")
    gaps = 0
    if len(steps):
        if np.any(steps < 1e-3):
            problems.append(f"{int(np.sum(steps < 1e-3))} duplicate slice position(s)")
        gaps = int(np.sum(steps > 1.5 * spacing)) if spacing > 0 else 0
        if gaps:
            problems.append(f"{gaps} gap(s): missing slice(s) between positions")
        irregular = np.abs(steps - spacing) > SPACING_TOLERANCE * max(spacing, 1e-6)
        if np.any(irregular) and not gaps:
            problems.append(f"inconsistent slice spacing ({steps.min():.3g}–{steps.max():.3g} mm)")
    return SeriesGeometry(uid, case_ids, along.tolist(), spacing, gaps, problems)


def series_table(series: list[SeriesGeometry]) -> pd.DataFrame:
    """One row per series for the run's ``series`` report."""
    return pd.DataFrame(
        {
            "series_uid": [s.series_uid for s in series],
            "slices": [len(s.case_ids) for s in series],
            "spacing_mm": [s.spacing for s in series],
            "gaps": [s.gaps for s in series],
            "is_volume": [s.is_volume for s in series],
            "problems": ["; ".join(s.problems) for s in series],
        }
    )


def stack_volume(series: SeriesGeometry, slices: dict[str, np.ndarray]) -> np.ndarray:
    """Stack (C, H, W) slices in series order into a (C, Z, H, W) volume."""
    return np.stack([slices[cid] for cid in series.case_ids], axis=1)


def volume_affine(
    orientation: tuple[float, ...] | list[float],
    first_position: tuple[float, ...] | list[float],
    pixel_spacing: tuple[float, float],
    slice_spacing: float,
) -> np.ndarray:
    """4x4 voxel → RAS affine (NIfTI convention) for a volume indexed (column, row, slice).

    DICOM positions are in LPS; the first two axes are negated to give RAS.
    """
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel_spacing[1]  # moving along a row = next column
    lps[:3, 1] = col_dir * pixel_spacing[0]
    lps[:3, 2] = slice_normal(orientation) * slice_spacing
    lps[:3, 3] = np.asarray(first_position, float)
    return RAS_TO_LPS @ lps


def pixel_to_patient(
    rows_cols: np.ndarray,
    position: tuple[float, ...] | list[float],
    orientation: tuple[float, ...] | list[float],
    pixel_spacing: tuple[float, float],
) -> np.ndarray:
    """(N, 2) pixel coordinates (row, column; pixel centres at integers) of one slice → (N, 3)
    DICOM patient coordinates (LPS, mm), from its ImagePositionPatient (the centre of pixel
    (0, 0)), ImageOrientationPatient and PixelSpacing (row spacing, column spacing)."""
    rc = np.asarray(rows_cols, float).reshape(-1, 2)
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    # moving along a row (next column) follows row_dir; moving down a column (next row) follows col_dir
    return (
        np.asarray(position, float)
        + rc[:, 1:2] * pixel_spacing[1] * row_dir[None, :]
        + rc[:, 0:1] * pixel_spacing[0] * col_dir[None, :]
    )


def patient_to_pixel(
    points: np.ndarray,
    position: tuple[float, ...] | list[float],
    orientation: tuple[float, ...] | list[float],
    pixel_spacing: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) patient coordinates (LPS, mm) → ((N, 2) fractional (row, column) on the slice, (N,)
    signed distance in mm from the slice plane along its normal). The inverse of
    :func:`pixel_to_patient` for points on the plane."""
    offset = np.asarray(points, float).reshape(-1, 3) - np.asarray(position, float)[None, :]
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    cols = offset @ row_dir / pixel_spacing[1]
    rows = offset @ col_dir / pixel_spacing[0]
    return np.stack([rows, cols], axis=1), offset @ slice_normal(orientation)

"""Which plane a volume file is cut into 2D slices along (``VolumeSource.slice_plane``).

A volume file's third voxel axis is its slice axis by default (``file``). Files are not always
stored that way: KiTS' ``imaging.nii.gz`` is stored (slices, rows, columns), its first axis
running head to foot, so cut along the third axis a CT becomes sagittal planes of 5 mm rows. A
named plane (``axial``, ``coronal``, ``sagittal``) cuts every case along the voxel axis closest to
that plane's normal in patient coordinates (axial: foot-head; coronal: back-front; sagittal:
left-right), whichever order its file keeps. Of the other two axes, the one closer to the
picture's horizontal (left-right for axial and coronal, back-front for sagittal) gives the columns,
so slices look as a viewer shows them, up to a flip: axes are permuted, never reversed.

The permutation (``file_axes``: the file axes that a slice's columns, rows and slice index follow)
is kept with each record, so a mask volume is written back in the file's own voxel order and
affine (:func:`to_file_order`). ``segops plan`` chooses a plane as nnU-Net chooses the axis its 2D
configuration slices along: the patient axis with the largest median spacing over the archive is
the normal (:func:`plan_slice_plane`); where every file already has that axis third, it writes
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from segops.config.sources import SlicePlane
from segops.data.series import RAS_TO_LPS, SeriesGeometry, slice_normal

#: Plane → (patient axis of its normal, patient axis of its picture's horizontal); LPS indices x=0, y=1, z=2.
PLANES = {"sagittal": (0, 1), "coronal": (1, 0), "axial": (2, 0)}
#: The identity permutation: a file cut along its third axis.
FILE_ORDER = (0, 1, 2)
#: Largest angle (degrees) between a slice's normal and a patient axis for it to lie in that axis's plane.
OBLIQUE_DEGREES = 30.0
#: Least share of a model's training slices in one plane for a volume source that names none to be cut in it.
MODEL_PLANE_SHARE = 0.95
#: Smallest ratio of the largest to the next median spacing for which the plan cuts across the
#: coarse axis; below it (near-isotropic voxels) an archive stored in mixed orders is cut axially.
ANISOTROPY = 1.2


def plane_axes(affine: np.ndarray, plane: SlicePlane, shape: tuple[int, ...] = ()) -> tuple[int, int, int]:
    """(column axis, row axis, slice axis): the file axes a slice of ``plane`` follows, for a grid
    whose voxel → patient affine is ``affine`` (4x4 or 3x3; only directions are read). A file of one
    slice (an axis of ``shape`` of size 1) is one picture: cut as stored."""
    if plane == "file" or 1 in tuple(shape)[:3]:
        return FILE_ORDER
    normal, horizontal = PLANES[plane]
    directions = np.abs(_unit_columns(affine))  # |cosine| of each file axis with each patient axis
    slice_axis = int(np.argmax(directions[normal]))
    rest = [a for a in FILE_ORDER if a != slice_axis]
    column = max(rest, key=lambda a: (directions[horizontal, a], -a))
    row = next(a for a in rest if a != column)
    return column, row, slice_axis


def cut_suffix(axes: tuple[int, ...]) -> str:
    """What a slice's case id adds to ``<file hash>.<k>`` for a case cut in another order than
    the file's: ``.`` and the axes (``.210``), so slice ``k`` of each cut has an id of its own."""
    return "" if tuple(axes) == FILE_ORDER else "." + "".join(str(a) for a in axes)


def case_axes(case_id: str) -> tuple[int, int, int]:
    """The axes a volume slice's case id says its case was cut with (:func:`cut_suffix`)."""
    parts = case_id.split(".")
    tail = parts[-1] if len(parts) >= 3 else ""
    return tuple(int(c) for c in tail) if sorted(tail) == ["0", "1", "2"] else FILE_ORDER  # type: ignore[return-value]


def plane_of(orientation: tuple[float, ...] | list[float] | np.ndarray | None) -> str:
    """The plane a slice lies in, from its ImageOrientationPatient: ``axial``, ``coronal`` or
    ``sagittal`` where its normal is within :data:`OBLIQUE_DEGREES` of that plane's patient axis,
    ``oblique`` otherwise, and ``""`` without one (photos): the fingerprint's census of planes."""
    if orientation is None or len(orientation) != 6:
        return ""
    normal = np.abs(slice_normal(list(orientation)))
    axis = int(np.argmax(normal))
    if normal[axis] < np.cos(np.radians(OBLIQUE_DEGREES)):
        return "oblique"
    return next(name for name, (across, _) in PLANES.items() if across == axis)


def trained_plane(planes: Mapping[str, int]) -> SlicePlane | None:
    """The plane a model's training slices lay in (its fingerprint's ``planes``) where at least
    :data:`MODEL_PLANE_SHARE` of them lay in one named plane; else None (photos, mixed planes)."""
    total = sum(planes.values())
    named = [(n, plane) for plane, n in planes.items() if plane in PLANES]
    if not total or not named:
        return None
    n, plane = max(named)
    return plane if n >= MODEL_PLANE_SHARE * total else None  # type: ignore[return-value]


def patient_axis(affine: np.ndarray) -> list[int]:
    """The patient axis (x=0, y=1, z=2) each file axis runs closest to."""
    return [int(a) for a in np.argmax(np.abs(_unit_columns(affine)), axis=0)]


def _unit_columns(affine: np.ndarray) -> np.ndarray:
    axes = np.asarray(affine, float)[:3, :3]
    return axes / np.maximum(np.linalg.norm(axes, axis=0), 1e-12)


def permute_affine(affine: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The affine of ``array.transpose(axes)`` (first three axes) for an array with ``affine``:
    voxel (0, 0, 0) is the same voxel, so only the axis columns move."""
    out = np.array(affine, float)
    out[:3, :3] = np.asarray(affine, float)[:3, list(axes)]
    return out


def to_file_order(volume: np.ndarray, affine: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A (column, row, slice)-indexed array of a case cut with ``axes`` and its affine → the same
    voxels in the file's own order with the file's affine (``axes`` empty: as given)."""
    if not axes or tuple(axes) == FILE_ORDER:
        return volume, affine
    back = tuple(int(a) for a in np.argsort(axes))
    return np.transpose(volume, back), permute_affine(affine, back)


def plan_slice_plane(grids: list[tuple[tuple[float, float, float], np.ndarray]]) -> tuple[SlicePlane, str] | None:
    """The plane ``segops plan`` writes for an archive of volume files, and why; None where cutting
    each file along its third axis already gives one plane across the archive's coarsest patient
    axis (or, voxels near-isotropic, one plane at all).

    Args:
        grids: per case (a sample), its voxel spacing per file axis and its affine.
    """
    if not grids:
        return None
    spacing: list[list[float]] = [[], [], []]  # per patient axis, the spacing of the file axes along it
    thirds = []
    for steps, affine in grids:
        owners = patient_axis(affine)
        thirds.append(owners[2])
        for axis, step in zip(owners, steps, strict=True):
            spacing[axis].append(step)
    median = np.array([float(np.median(s)) if s else 0.0 for s in spacing])
    coarse, second = (int(a) for a in np.argsort(-median, kind="stable")[:2])
    anisotropic = median[coarse] >= ANISOTROPY * median[second]
    if not anisotropic:
        if len(set(thirds)) == 1:
            return None
        coarse = 2
    if all(t == coarse for t in thirds):
        return None
    plane = next(name for name, (normal, _) in PLANES.items() if normal == coarse)
    names = "left-right", "back-front", "foot-head"
    off = sum(t != coarse for t in thirds)
    why = (
        f"{off} of {len(grids)} sampled case(s) are not stored with their {names[coarse]} axis third; "
        + (
            f"median spacing {median[coarse]:.3g} mm {names[coarse]} against {median[second]:.3g} mm"
            if anisotropic
            else "voxels near-isotropic, files stored in mixed orders"
        )
        + f": every case is cut into {plane} slices, and its masks written back in its file's voxel order"
    )
    return plane, why


# --------------------------------------------------------------------------- volume records


def file_order_geometry(
    ok: pd.DataFrame, series: list[SeriesGeometry]
) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Slice order and geometry of volume-file cases for :func:`segops.cluster.datasets.write_volumes`.

    Slices stay in the file's order (``frame``), whatever the handedness of its affine (DICOM
    series are ordered along the slice normal instead), and the volume's affine (RAS, indexed
    (column, row, slice) like :func:`segops.data.series.volume_affine`) is the file's, permuted
    as the case was cut (:func:`to_file_order` undoes that), its slice axis the step between
    consecutive slice positions: a mask written as NIfTI then has the input's shape and affine.

    Args:
        ok: the slice records' metadata (``case_id``, ``frame``, ``position``, ``orientation``,
            ``spacing_y``, ``spacing_x``).
        series: the regular cases from :func:`segops.data.series.assemble_series`.
    """
    by_case = ok.set_index("case_id")
    order, geometry = {}, {}
    for s in series:
        rows = by_case.loc[s.case_ids].sort_values("frame")
        first, last = rows.iloc[0], rows.iloc[-1]
        orientation = np.asarray(first["orientation"], float)
        lps = np.eye(4)
        lps[:3, 0] = orientation[:3] * first["spacing_x"]  # next column
        lps[:3, 1] = orientation[3:6] * first["spacing_y"]  # next row
        lps[:3, 2] = slice_normal(orientation)  # 1 mm for a single slice
        if len(rows) > 1:
            lps[:3, 2] = (np.asarray(last["position"], float) - np.asarray(first["position"], float)) / (len(rows) - 1)
        lps[:3, 3] = first["position"]
        order[s.series_uid] = [str(c) for c in rows.index]
        geometry[s.series_uid] = {
            "spacing_z": float(abs(lps[:3, 2] @ slice_normal(orientation))),
            "affine": (RAS_TO_LPS @ lps).ravel().tolist(),  # the same flip turns LPS into RAS
        }
    return order, geometry

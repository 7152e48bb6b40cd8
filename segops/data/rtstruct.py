"""DICOM RTSTRUCT: structure sets read, and their contours rasterised onto image slices.

A structure set holds, per ROI (``StructureSetROISequence``: number → name), contours
(``ROIContourSequence`` → ``ContourSequence``): ``ContourData`` as x, y, z triplets in patient
coordinates (LPS, mm), a ``ContourGeometricType`` and, usually, the image each contour lies on
(``ContourImageSequence`` → ``ReferencedSOPInstanceUID``).

Rasterising one slice (:func:`rasterise_slice`):

- **Join.** A contour that references SOP instances is drawn on those slices only. A contour
  without a reference is drawn on a slice when every point lies within ``tolerance_mm`` of the
  slice plane. The default, :data:`DEFAULT_TOLERANCE_MM` (0.2 mm), absorbs the rounding of
  coordinates written with one or two decimals and stays under half of any clinical slice
  spacing (>= 0.5 mm), so a contour never lands on two slices, and one drawn between two
  slices lands on none (it is reported).
- **Polygons.** Points are mapped to fractional (row, column) with
  :func:`segops.data.series.patient_to_pixel` and filled with :func:`skimage.draw.polygon`
  (pixels whose centres lie inside). The contours of one ROI on one slice are combined by the
  even-odd rule (XOR of their fills): a contour inside another makes a hole.
- **Names and priority.** A ROI takes the class of the first rule (``rois`` glob, or one of its
  ``synonyms``) its name matches, case-insensitively (:func:`fnmatch.fnmatchcase`). Where ROIs of
  different rules overlap, the rule listed first wins.
- **Never silent.** Open contours (``OPEN_PLANAR``, ``OPEN_NONPLANAR``, ``POINT``) are not areas
  and are not drawn; they, contours off every slice (between slices, or referencing an image the
  series does not hold), closed contours of fewer than three points and ROIs that match no rule
  are listed by :func:`contour_report` with their ROI name and the reason.

Pure: numpy, pydicom and scikit-image.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from skimage.draw import polygon

from segops.data.series import patient_to_pixel
from segops.errors import LabelError

log = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: Largest distance (mm) of a contour point from a slice plane for a contour without a
#: reference to be drawn on that slice. See the module docstring.
DEFAULT_TOLERANCE_MM = 0.2
CLOSED = "CLOSED_PLANAR"

#: Reasons a contour (or a whole ROI, ``contour == -1``) is not drawn, as :class:`ContourIssue` gives them.
NO_RULE = "no-rule"
OPEN = "open"
OFF_SLICES = "off-slices"
UNKNOWN_REFERENCE = "unknown-reference"
DEGENERATE = "degenerate"
NO_SLICES = "no-slices"


@dataclass(frozen=True)
class SliceGeometry:
    """Where one image slice lies in patient space.

    Attributes:
        instance_uid: SOPInstanceUID of the image ("" when unknown).
        position: ImagePositionPatient, the centre of pixel (0, 0), LPS mm.
        orientation: ImageOrientationPatient (row direction xyz, column direction xyz).
        spacing: PixelSpacing (row spacing, column spacing), mm.
        shape: (rows, columns).
        frame: 1-based frame of a multi-frame image (None for a single-frame image): a contour
            references a frame by ``ReferencedFrameNumber``; one that names no frame joins a
            frame by position.
    """

    instance_uid: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    spacing: tuple[float, float]
    shape: tuple[int, int]
    frame: int | None = None


@dataclass(frozen=True)
class Contour:
    """One contour: (N, 3) float64 points (LPS mm), its geometric type and the images it lies on
    as (SOPInstanceUID, ReferencedFrameNumber or None)."""

    points: np.ndarray
    geometric_type: str
    references: tuple[tuple[str, int | None], ...] = ()


@dataclass(frozen=True)
class Roi:
    """A ROI: its number, name and contours, and its RTROIInterpretedType (``EXTERNAL`` for the body
    outline, ``ORGAN``, ``GTV``, ``PTV``, …; "" where the structure set gives none)."""

    number: int
    name: str
    contours: tuple[Contour, ...]
    interpreted_type: str = ""


@dataclass(frozen=True)
class StructureSet:
    """A parsed RTSTRUCT (picklable: plain numpy arrays and strings).

    Attributes:
        path: the file ("" when read from a dataset in memory).
        series_uids: SeriesInstanceUIDs it references (ReferencedFrameOfReferenceSequence).
        sop_uids: SOPInstanceUIDs it references (referenced series and contours).
    """

    path: str
    rois: tuple[Roi, ...]
    series_uids: tuple[str, ...]
    sop_uids: frozenset[str]


@dataclass(frozen=True)
class ContourIssue:
    """A contour (``contour`` = its index in the ROI's ContourSequence) or a whole ROI
    (``contour == -1``) that is not drawn, and why (one of the reason constants)."""

    roi_number: int
    roi_name: str
    contour: int
    reason: str
    detail: str


@dataclass(frozen=True)
class SliceLabel:
    """What :func:`rasterise_slice` made of one slice.

    Attributes:
        label: (H, W) uint8 class map, 0 = background.
        drawn: (ROI name, contour index) of every contour filled on the slice.
        skipped: contours joined to this slice but not drawn (open, no rule, degenerate).
    """

    label: np.ndarray
    drawn: tuple[tuple[str, int], ...]
    skipped: tuple[ContourIssue, ...]


# --------------------------------------------------------------------------- reading


def read_structure_set(source: str | Path | pydicom.Dataset) -> StructureSet:
    """Parse an RTSTRUCT file or dataset.

    Raises:
        LabelError: not readable, not an RTSTRUCT, or with malformed contour data.
    """
    path = "" if isinstance(source, pydicom.Dataset) else str(source)
    where = f"RTSTRUCT {path}" if path else "RTSTRUCT dataset"
    try:
        ds = source if isinstance(source, pydicom.Dataset) else pydicom.dcmread(source)
    except Exception as exc:
        raise LabelError(f"cannot read {where}: {type(exc).__name__}: {exc}") from exc
    if not is_rtstruct(ds):
        raise LabelError(
            f"{where} is not an RTSTRUCT (Modality {ds.get('Modality', '')!r}, SOP class "
            f"{ds.get('SOPClassUID', '')!r}); keep only RTSTRUCT files in the labels folder"
        )
    names = {int(r.ROINumber): str(getattr(r, "ROIName", "")).strip() for r in ds.get("StructureSetROISequence", [])}
    kinds = interpreted_types(ds)
    rois = []
    for item in ds.get("ROIContourSequence", []):
        number = int(item.ReferencedROINumber)
        contours = tuple(_contour(c, where, number) for c in item.get("ContourSequence", []))
        rois.append(Roi(number, names.get(number, f"ROI {number}"), contours, kinds.get(number, "")))
    listed = {r.number for r in rois}
    rois += [Roi(n, name, (), kinds.get(n, "")) for n, name in names.items() if n not in listed]
    series, sops = referenced_images(ds)
    sops |= {sop for r in rois for c in r.contours for sop, _ in c.references}
    return StructureSet(path, tuple(rois), tuple(series), frozenset(sops))


def interpreted_types(ds: pydicom.Dataset) -> dict[int, str]:
    """ROI number → its RTROIInterpretedType, upper case (``EXTERNAL``, ``ORGAN``, …), from the
    RTROIObservationsSequence (works on a header read of that sequence)."""
    return {
        int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "")).strip().upper()
        for o in ds.get("RTROIObservationsSequence", [])
        if "ReferencedROINumber" in o
    }


def is_rtstruct(ds: pydicom.Dataset) -> bool:
    """Whether a dataset (or a header read of one) is an RT Structure Set."""
    return str(ds.get("SOPClassUID", "")) == RTSTRUCT_SOP_CLASS or ds.get("Modality", "") == "RTSTRUCT"


def referenced_images(ds: pydicom.Dataset) -> tuple[list[str], set[str]]:
    """(SeriesInstanceUIDs, SOPInstanceUIDs) a structure set names in its
    ReferencedFrameOfReferenceSequence (works on a header read without contours)."""
    series: list[str] = []
    sops: set[str] = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                uid = str(item.get("SeriesInstanceUID", ""))
                if uid and uid not in series:
                    series.append(uid)
                sops |= {str(i.ReferencedSOPInstanceUID) for i in item.get("ContourImageSequence", [])}
    return series, sops


def _contour(item: pydicom.Dataset, where: str, roi: int) -> Contour:
    data = np.asarray([float(v) for v in item.get("ContourData", [])], dtype=np.float64)
    if data.size % 3:
        raise LabelError(f"{where}: a contour of ROI {roi} has {data.size} ContourData values, not x, y, z triplets")
    refs = tuple(
        (str(i.ReferencedSOPInstanceUID), int(i.ReferencedFrameNumber) if "ReferencedFrameNumber" in i else None)
        for i in item.get("ContourImageSequence", [])
    )
    return Contour(data.reshape(-1, 3), str(item.get("ContourGeometricType", CLOSED)).strip().upper(), refs)


# --------------------------------------------------------------------------- rules


def roi_class(name: str, rules: dict[str, int], synonyms: dict[str, tuple[str, ...]] | None = None) -> tuple[int, int]:
    """(class, rule rank) of the first rule whose glob or synonym globs match ``name``
    (case-insensitive); (0, -1) when none does. A lower rank wins where ROIs overlap."""
    lowered = name.strip().lower()
    for rank, (glob, cls) in enumerate(rules.items()):
        globs = (glob, *((synonyms or {}).get(glob, ())))
        if any(fnmatch.fnmatchcase(lowered, g.lower()) for g in globs):
            return cls, rank
    return 0, -1


# --------------------------------------------------------------------------- joining and drawing


def _joins(contour: Contour, geometry: SliceGeometry, tolerance_mm: float) -> bool:
    """Whether ``contour`` lies on the slice: by reference when it has one, else by plane distance.

    A reference to a multi-frame image that names no frame joins its frames by plane distance.
    """
    by_position = not contour.references
    for sop, frame in contour.references:
        if sop == geometry.instance_uid:
            if geometry.frame is None or frame == geometry.frame:
                return True
            by_position |= frame is None
    if not by_position or not len(contour.points):
        return False
    return bool(np.abs(_plane_distance(contour, geometry)).max() <= tolerance_mm)


def _plane_distance(contour: Contour, geometry: SliceGeometry) -> np.ndarray:
    return patient_to_pixel(contour.points, geometry.position, geometry.orientation, geometry.spacing)[1]


def _fill(contour: Contour, geometry: SliceGeometry) -> np.ndarray:
    rc, _ = patient_to_pixel(contour.points, geometry.position, geometry.orientation, geometry.spacing)
    mask = np.zeros(geometry.shape, dtype=bool)
    rr, cc = polygon(rc[:, 0], rc[:, 1], shape=geometry.shape)
    mask[rr, cc] = True
    return mask


def rasterise_slice(
    structure: StructureSet,
    geometry: SliceGeometry,
    rules: dict[str, int],
    synonyms: dict[str, tuple[str, ...]] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> SliceLabel:
    """The class map of one slice from the closed contours joined to it (see the module docstring).

    Args:
        rules: ROI-name glob → class (1..255), in priority order.
        synonyms: rule glob → further globs for that rule.
        tolerance_mm: largest point-to-plane distance for a contour without a reference.
    """
    label = np.zeros(geometry.shape, dtype=np.uint8)
    drawn: list[tuple[str, int]] = []
    skipped: list[ContourIssue] = []
    fills: dict[int, np.ndarray] = {}  # rule rank → union over its ROIs of each ROI's even-odd fill
    classes: dict[int, int] = {}
    for roi in structure.rois:
        cls, rank = roi_class(roi.name, rules, synonyms)
        region = None
        for index, contour in enumerate(roi.contours):
            if not _joins(contour, geometry, tolerance_mm):
                continue
            issue = _issue(roi, index, contour, cls)
            if issue is not None:
                skipped.append(issue)
                continue
            region = _fill(contour, geometry) if region is None else region ^ _fill(contour, geometry)
            drawn.append((roi.name, index))
        if region is not None:
            fills[rank] = fills[rank] | region if rank in fills else region
            classes[rank] = cls
    for rank in sorted(fills, reverse=True):  # the first rule is painted last: it wins overlaps
        label[fills[rank]] = classes[rank]
    return SliceLabel(label, tuple(drawn), tuple(skipped))


def _issue(roi: Roi, index: int, contour: Contour, cls: int) -> ContourIssue | None:
    """Why a contour joined to a slice is not drawn, or None when it is drawn."""
    if cls == 0:
        return ContourIssue(roi.number, roi.name, index, NO_RULE, f"ROI {roi.name!r} matches no rule of rois")
    if contour.geometric_type != CLOSED:
        return ContourIssue(roi.number, roi.name, index, OPEN, f"{contour.geometric_type} is not an area")
    if len(contour.points) < 3:
        return ContourIssue(
            roi.number, roi.name, index, DEGENERATE, f"closed contour of {len(contour.points)} point(s)"
        )
    return None


# --------------------------------------------------------------------------- census


def contour_report(
    structure: StructureSet,
    slices: Sequence[SliceGeometry],
    rules: dict[str, int],
    synonyms: dict[str, tuple[str, ...]] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> list[ContourIssue]:
    """Every contour of ``structure`` that no slice of ``slices`` (the referenced series) gets drawn,
    and every ROI that matches no rule (one issue each, ``contour == -1``).

    Reasons: ``no-rule`` (a ROI), ``open``, ``degenerate``, ``unknown-reference`` (references
    only images not among ``slices``), ``off-slices`` (no reference, and farther than
    ``tolerance_mm`` from every slice plane: between slices or outside the series).
    """
    if not slices:
        return [ContourIssue(-1, "", -1, NO_SLICES, "no image of the referenced series was read")]
    issues: list[ContourIssue] = []
    known = {s.instance_uid for s in slices}
    for roi in structure.rois:
        cls, _ = roi_class(roi.name, rules, synonyms)
        if cls == 0:
            detail = f"ROI {roi.name!r} ({len(roi.contours)} contour(s)) matches no rule of rois"
            issues.append(ContourIssue(roi.number, roi.name, -1, NO_RULE, detail))
            continue
        for index, contour in enumerate(roi.contours):
            issue = _issue(roi, index, contour, cls)
            if issue is None and not any(_joins(contour, s, tolerance_mm) for s in slices):
                issue = _off_slices(roi, index, contour, slices, known)
            if issue is not None:
                issues.append(issue)
    return issues


def _off_slices(
    roi: Roi, index: int, contour: Contour, slices: Sequence[SliceGeometry], known: set[str]
) -> ContourIssue:
    unknown = sorted({sop for sop, _ in contour.references} - known)
    if contour.references and unknown:
        return ContourIssue(roi.number, roi.name, index, UNKNOWN_REFERENCE, f"references image {unknown[0]}")
    nearest = min(float(np.abs(_plane_distance(contour, s)).max()) for s in slices)
    z = float(contour.points[:, 2].mean()) if len(contour.points) else float("nan")
    detail = f"at z={z:.2f} mm, {nearest:.2f} mm from the nearest slice plane"
    return ContourIssue(roi.number, roi.name, index, OFF_SLICES, detail)

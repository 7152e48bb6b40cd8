"""A synthetic oblique CT series and an RTSTRUCT on it, written with pydicom, with analytic masks.

The geometry is deliberately awkward: an oblique ImageOrientationPatient (rotated in-plane and
tilted out of the axial plane), a non-zero ImagePositionPatient and anisotropic PixelSpacing
(row spacing 0.8 mm, column spacing 1.1 mm). Shapes are defined in patient space (centre,
semi-axes along the row and column directions in mm); the analytic masks come from the DICOM
pixel → patient formula written out here, independently of the code under test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from segops.data.rtstruct import SliceGeometry

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
ALPHA, BETA = np.deg2rad(30.0), np.deg2rad(20.0)
ROW_DIR = np.array([np.cos(ALPHA), np.sin(ALPHA), 0.0])
COL_DIR = np.array([-np.sin(ALPHA) * np.cos(BETA), np.cos(ALPHA) * np.cos(BETA), np.sin(BETA)])
NORMAL = np.cross(ROW_DIR, COL_DIR)
ORIGIN = np.array([-40.5, 12.25, 100.0])
SPACING = (0.8, 1.1)  # (row spacing, column spacing) mm
SLICE_MM = 2.5
SHAPE = (64, 64)
N_SLICES = 6
UNKNOWN_SOP = "1.2.826.0.1.3680043.8.498.999"


def ipp(k: float) -> np.ndarray:
    """ImagePositionPatient of slice ``k`` (fractional k: a plane between slices)."""
    return ORIGIN + k * SLICE_MM * NORMAL


def point(k: float, row: float, col: float) -> np.ndarray:
    """Patient point (LPS mm) of pixel (row, col) of slice k: IPP + col·Δc·row_dir + row·Δr·col_dir."""
    return ipp(k) + col * SPACING[1] * ROW_DIR + row * SPACING[0] * COL_DIR


@dataclass(frozen=True)
class Ellipse:
    """An ellipse on slice ``k``, centred on pixel (row, col), semi-axes in mm along the row
    direction (``a``, across columns) and the column direction (``b``, across rows)."""

    k: float
    row: float
    col: float
    a: float
    b: float

    def points(self, n: int = 180) -> np.ndarray:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        centre = point(self.k, self.row, self.col)
        return centre + np.outer(self.a * np.cos(t), ROW_DIR) + np.outer(self.b * np.sin(t), COL_DIR)

    def mask(self) -> np.ndarray:
        """(H, W) bool: pixel centres inside the ellipse."""
        rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
        centres = point(self.k, rows.ravel()[:, None], cols.ravel()[:, None])  # (H*W, 3) pixel centres
        offset = centres - point(self.k, self.row, self.col)
        u, v = offset @ ROW_DIR, offset @ COL_DIR
        return ((u / self.a) ** 2 + (v / self.b) ** 2 <= 1).reshape(SHAPE)


GTV = {k: Ellipse(k, 30, 28, 11.0, 11.2) for k in (1, 2, 3)}
CORD = {k: Ellipse(k, 30, 40, 8.8, 6.4) for k in (2, 3)}
RING_OUTER, RING_INNER = Ellipse(4, 32, 32, 12.0, 12.0), Ellipse(4, 32, 32, 6.0, 6.0)
BETWEEN = Ellipse(2.5, 30, 28, 9.0, 9.0)  # halfway between slices 2 and 3
RULES = {"GTV*": 1, "spinal_cord": 2, "ring": 3}
SYNONYMS = {"spinal_cord": ("spinal*",)}


def _ds_str(values: np.ndarray | list[float]) -> list[str]:
    return [f"{float(v):.6f}"[:16] for v in np.ravel(values)]


def _meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def write_ct_series(
    folder: Path, n: int, study_uid: str, frame_uid: str, pixels: Callable[[int], np.ndarray] | None = None
) -> list[FileDataset]:
    """``n`` oblique CT slices (int16, 64x64) in ``folder``; returns their datasets.

    Args:
        pixels: slice ``k`` → its (64, 64) stored values; default a constant ``1000 + k``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    out = []
    for k in range(n):
        sop = generate_uid()
        ds = FileDataset("", {}, file_meta=_meta(CTImageStorage, sop), preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientID, ds.Modality, ds.InstanceNumber = "RT01", "CT", k + 1
        ds.ImagePositionPatient = _ds_str(ipp(k))
        ds.ImageOrientationPatient = _ds_str([*ROW_DIR, *COL_DIR])
        ds.PixelSpacing = _ds_str(SPACING)
        ds.SliceThickness = SLICE_MM
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = SHAPE
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        stored = np.full(SHAPE, 1000 + k) if pixels is None else pixels(k)
        ds.PixelData = np.asarray(stored, np.int16).tobytes()
        ds.save_as(folder / f"ct{k}.dcm", enforce_file_format=True)
        out.append(ds)
    return out


def _contour(points: np.ndarray, kind: str = "CLOSED_PLANAR", refs: tuple[str, ...] = ()) -> Dataset:
    item = Dataset()
    if refs:
        item.ContourImageSequence = Sequence()
        for uid in refs:
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CTImageStorage, uid
            item.ContourImageSequence.append(ref)
    item.ContourGeometricType = kind
    item.NumberOfContourPoints = len(points)
    item.ContourData = _ds_str(points)
    return item


def build_rtstruct(cts: list[FileDataset], rois: list[tuple[str, list[Dataset]]]) -> FileDataset:
    """An RTSTRUCT on the series of ``cts`` with ``rois``: (name, contour items), numbered from 1."""
    sop = generate_uid()
    ds = FileDataset("", {}, file_meta=_meta(RTSTRUCT_SOP_CLASS, sop), preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTSTRUCT_SOP_CLASS, sop, "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = cts[0].StudyInstanceUID, generate_uid(), "RT01"
    ds.StructureSetLabel = "synthetic"
    images = Sequence()
    for ct in cts:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CTImageStorage, ct.SOPInstanceUID
        images.append(ref)
    series, study, frame = Dataset(), Dataset(), Dataset()
    series.SeriesInstanceUID, series.ContourImageSequence = cts[0].SeriesInstanceUID, images
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", cts[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame.FrameOfReferenceUID, frame.RTReferencedStudySequence = cts[0].FrameOfReferenceUID, Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for number, (name, contours) in enumerate(rois, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ROIGenerationAlgorithm = number, name, "MANUAL"
        roi.ReferencedFrameOfReferenceUID = cts[0].FrameOfReferenceUID
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber, item.ROIDisplayColor = number, [255, 0, 0]
        item.ContourSequence = Sequence(contours)
        ds.ROIContourSequence.append(item)
    return ds


def scenario_rois(cts: list[FileDataset]) -> list[tuple[str, list[Dataset]]]:
    """The test's ROIs (contour indices matter: the report names them).

    - GTV_primary: ellipses on slices 1-3 by reference (contours 0-2), one between slices 2 and 3
      without reference (3), one referencing an image the series does not hold (4).
    - SpinalCord: ellipses on slices 2-3 by reference (0-1), overlapping the GTV; an OPEN_PLANAR
      line on slice 0 (2).
    - Ring: outer and inner circle on slice 4, no references (joined by position): a hole.
    - Couch: a closed square on slice 5: matches no rule.
    """
    uid = [ct.SOPInstanceUID for ct in cts]
    gtv = [_contour(GTV[k].points(), refs=(uid[k],)) for k in (1, 2, 3)]
    gtv += [_contour(BETWEEN.points()), _contour(GTV[1].points(), refs=(UNKNOWN_SOP,))]
    cord = [_contour(CORD[k].points(), refs=(uid[k],)) for k in (2, 3)]
    cord.append(_contour(np.stack([point(0, 5, c) for c in range(5, 30, 5)]), "OPEN_PLANAR", (uid[0],)))
    ring = [_contour(RING_OUTER.points()), _contour(RING_INNER.points())]
    couch = [_contour(np.stack([point(5, r, c) for r, c in ((50, 5), (50, 60), (60, 60), (60, 5))]), refs=(uid[5],))]
    return [("GTV_primary", gtv), ("SpinalCord", cord), ("Ring", ring), ("Couch", couch)]


def make_rtstruct_archive(root: Path) -> tuple[list[FileDataset], list[FileDataset], Path]:
    """``root/ct/a`` (the labelled 6-slice series), ``root/ct/b`` (2 slices, no RTSTRUCT) and
    ``root/rtstruct/rs.dcm``; returns (series a, series b, RTSTRUCT path)."""
    study, frame = generate_uid(), generate_uid()
    a = write_ct_series(root / "ct" / "a", N_SLICES, study, frame)
    b = write_ct_series(root / "ct" / "b", 2, study, frame)
    path = root / "rtstruct" / "RS.synthetic.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    build_rtstruct(a, scenario_rois(a)).save_as(path, enforce_file_format=True)
    return a, b, path


def header_geometry(h: Dataset) -> SliceGeometry:
    """The :class:`~segops.data.rtstruct.SliceGeometry` of a CT slice's header."""
    return SliceGeometry(
        str(h.SOPInstanceUID),
        tuple(map(float, h.ImagePositionPatient)),
        tuple(map(float, h.ImageOrientationPatient)),
        tuple(map(float, h.PixelSpacing)),
        (int(h.Rows), int(h.Columns)),
    )

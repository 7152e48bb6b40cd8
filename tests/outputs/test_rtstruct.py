"""RTSTRUCT outputs: a synthetic oblique, anisotropic series with a ring (hole, and an island in
the hole) and a two-component class, written, re-read with pydicom and rasterised back with
segops' RTSTRUCT reader."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RTStructureSetStorage

from segops.data.rtstruct import SliceGeometry, rasterise_slice, read_structure_set
from segops.data.series import patient_to_pixel, slice_normal
from segops.errors import SegopsError
from segops.outputs.case_outputs import OutputConfig
from segops.outputs.rtstruct import SliceMask, build_rtstruct, trace_contours, write_rtstruct
from segops.outputs.series_rtstruct import keep_slice_map, write_series_rtstructs, write_volume_rtstruct

SHAPE = (40, 56)
SPACING = (0.7, 1.3)  # (row, column) mm
SLICE_MM = 2.5
ORIGIN = (-120.5, 33.25, 71.0)
SEGMENTS = {1: "liver", 2: "lesion"}


def _orientation() -> tuple[float, ...]:
    """Row and column directions of a plane tilted about two axes (not axial, not sagittal)."""
    a, b = np.deg2rad(25.0), np.deg2rad(-15.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    r = rx @ rz
    return tuple(float(v) for v in (*r[:, 0], *r[:, 1]))


def _disc(center: tuple[float, float], radius: float) -> np.ndarray:
    rr, cc = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius**2


def _class_maps() -> list[np.ndarray]:
    """Five slices: a ring (class 1) on 0-2, with an island in its hole on 2; class 2 as an ellipse
    plus a block at the image corner on 1-3; slice 4 empty."""
    rr, cc = np.mgrid[: SHAPE[0], : SHAPE[1]]
    maps = []
    for z in range(5):
        m = np.zeros(SHAPE, np.uint8)
        if z <= 2:
            m[_disc((20, 20), 12 - z) & ~_disc((20, 20), 5)] = 1
        if z == 2:
            m[_disc((20, 20), 1.5)] = 1
        if 1 <= z <= 3:
            m[((rr - 12) / 5.0) ** 2 + ((cc - 44) / 8.0) ** 2 <= 1] = 2
            m[32:, 48:] = 2
        maps.append(m)
    return maps


def _slices(maps: list[np.ndarray]) -> list[SliceMask]:
    orientation = _orientation()
    normal = slice_normal(orientation)
    return [
        SliceMask(
            f"1.2.826.0.1.3680043.8.498.77.{z + 1}",
            tuple(float(v) for v in np.asarray(ORIGIN) + z * SLICE_MM * normal),
            orientation,
            SPACING,
            m,
        )
        for z, m in enumerate(maps)
    ]


def _header() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "P-7", "19700101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.70", "1.2.826.0.1.3680043.8.498.71"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.72"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "101500", "A1", "S1"
    return ds


def _build(
    maps: list[np.ndarray] | None = None,
    header: Dataset | None = None,
    description: str = "segops 1.0, model abc123, run r-1",
) -> Dataset:
    return build_rtstruct(
        header or _header(),
        _slices(maps or _class_maps()),
        SEGMENTS,
        series_uid="1.2.826.0.1.3680043.8.498.80",
        sop_uid="1.2.826.0.1.3680043.8.498.81",
        description=description,
    )


def _geometry(s: SliceMask) -> SliceGeometry:
    return SliceGeometry(s.instance_uid, s.position, s.orientation, s.spacing, SHAPE)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else 2.0 * np.logical_and(a, b).sum() / denom


def _read_back(path: Path, slices: list[SliceMask]) -> list[np.ndarray]:
    structure = read_structure_set(path)
    return [rasterise_slice(structure, _geometry(s), {"liver": 1, "lesion": 2}).label for s in slices]


def test_trace_contours_gives_outer_boundaries_and_holes_as_closed_polygons() -> None:
    maps = _class_maps()
    ring = trace_contours(maps[0] == 1)
    assert len(ring) == 2  # outer boundary + hole
    assert len(trace_contours(maps[2] == 1)) == 3  # + the island in the hole
    assert len(trace_contours(maps[1] == 2)) == 2  # ellipse + corner block
    assert all(len(p) >= 3 and not np.allclose(p[0], p[-1]) for p in ring)
    block = next(p for p in trace_contours(maps[1] == 2) if p[:, 0].max() > 35)
    # a region touching the image edge closes half a pixel outside it
    assert block[:, 0].max() == pytest.approx(SHAPE[0] - 0.5) and block[:, 1].max() == pytest.approx(SHAPE[1] - 0.5)
    assert trace_contours(np.zeros(SHAPE, bool)) == []
    # only the turning points are kept: a rectangle is its 4 sides with the corners cut at 45°, a
    # one-pixel hole is a diamond; points along the sides (the first one included) are dropped
    rect = np.zeros((10, 10), bool)
    rect[2:7, 3:8] = True
    rect[4, 5] = False
    outer, hole = sorted(trace_contours(rect), key=len, reverse=True)
    assert {tuple(p) for p in outer} == {(6.5, 7), (6.5, 3), (6, 2.5), (2, 2.5), (1.5, 3), (1.5, 7), (2, 7.5), (6, 7.5)}
    assert {tuple(p) for p in hole} == {(4, 5.5), (3.5, 5), (4, 4.5), (4.5, 5)}


def test_rtstruct_references_every_slice_and_names_rois_from_segments(tmp_path: Path) -> None:
    slices = _slices(_class_maps())
    path = write_rtstruct(tmp_path / "rt.dcm", _build())
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == RTStructureSetStorage and ds.file_meta.MediaStorageSOPClassUID == RTStructureSetStorage
    assert ds.Modality == "RTSTRUCT" and ds.SOPInstanceUID == "1.2.826.0.1.3680043.8.498.81"
    assert ds.SeriesInstanceUID == "1.2.826.0.1.3680043.8.498.80"
    assert (ds.PatientID, ds.PatientName, ds.StudyInstanceUID, ds.AccessionNumber) == (
        "P-7",
        "Doe^Jane",
        "1.2.826.0.1.3680043.8.498.70",
        "A1",
    )
    assert ds.Manufacturer == "segops" and "model abc123, run r-1" in ds.SeriesDescription
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == "1.2.826.0.1.3680043.8.498.72"
    (series,) = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == "1.2.826.0.1.3680043.8.498.71"
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == [s.instance_uid for s in slices]
    assert {i.ReferencedSOPClassUID for i in series.ContourImageSequence} == {CTImageStorage}
    assert [(r.ROINumber, r.ROIName) for r in ds.StructureSetROISequence] == [(1, "liver"), (2, "lesion")]
    assert [r.ReferencedFrameOfReferenceUID for r in ds.StructureSetROISequence] == [frame.FrameOfReferenceUID] * 2
    assert [o.ReferencedROINumber for o in ds.RTROIObservationsSequence] == [1, 2]
    per_roi = {}
    for item in ds.ROIContourSequence:
        assert len(item.ROIDisplayColor) == 3
        refs = []
        for contour in item.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            assert len(contour.ContourData) == 3 * contour.NumberOfContourPoints
            (ref,) = contour.ContourImageSequence
            refs.append(ref.ReferencedSOPInstanceUID)
        per_roi[item.ReferencedROINumber] = refs
    uid = [s.instance_uid for s in slices]
    # liver: ring (2 contours) on slices 0, 1 and 2, + the island on 2; lesion: 2 components on 1-3
    assert sorted(per_roi[1]) == sorted([uid[0]] * 2 + [uid[1]] * 2 + [uid[2]] * 3)
    assert sorted(per_roi[2]) == sorted([uid[1]] * 2 + [uid[2]] * 2 + [uid[3]] * 2)


def test_contour_points_lie_in_their_slice_plane(tmp_path: Path) -> None:
    slices = _slices(_class_maps())
    ds = pydicom.dcmread(write_rtstruct(tmp_path / "rt.dcm", _build()))
    by_uid = {s.instance_uid: s for s in slices}
    for item in ds.ROIContourSequence:
        for contour in item.ContourSequence:
            s = by_uid[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            rc, distance = patient_to_pixel(points, s.position, s.orientation, s.spacing)
            assert np.abs(distance).max() < 1e-3
            # marching squares on the padded mask: vertices sit on pixel centres or half-way between them
            assert np.allclose(np.round(rc * 2), rc * 2, atol=1e-3)


def test_written_file_passes_pydicom_validation_and_round_trips(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.RAISE)
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
    # a real run's provenance is longer than a LO value (64 characters) may be
    provenance = "segops 0.1.0, model b4c8e78696687482, run rtstruct-e2e-e4ca399adf0e"
    path = write_rtstruct(tmp_path / "rt.dcm", _build(description=provenance))  # values checked against VRs
    ds = pydicom.dcmread(path)  # a Part 10 file: preamble and meta, no force needed
    for element in ds.iterall():
        element.value  # noqa: B018 - reading validates each value against its VR
    # the Type 1 and Type 2 attributes of the RT Structure Set IOD's modules are there
    required = (
        "PatientName PatientID PatientBirthDate PatientSex StudyInstanceUID StudyDate StudyTime "
        "ReferringPhysicianName StudyID AccessionNumber Modality SeriesInstanceUID SeriesNumber OperatorsName "
        "Manufacturer StructureSetLabel StructureSetDate StructureSetTime StructureSetROISequence "
        "ROIContourSequence RTROIObservationsSequence SOPClassUID SOPInstanceUID"
    ).split()
    assert [k for k in required if k not in ds] == []
    for roi in ds.StructureSetROISequence:
        assert all(
            k in roi for k in ("ROINumber", "ReferencedFrameOfReferenceUID", "ROIName", "ROIGenerationAlgorithm")
        )
    for obs in ds.RTROIObservationsSequence:
        assert all(
            k in obs for k in ("ObservationNumber", "ReferencedROINumber", "RTROIInterpretedType", "ROIInterpreter")
        )
    again = tmp_path / "again.dcm"
    ds.save_as(again, enforce_file_format=True)
    assert pydicom.dcmread(again) == ds


def test_reader_restores_every_roi_with_its_hole(tmp_path: Path) -> None:
    maps = _class_maps()
    slices = _slices(maps)
    labels = _read_back(write_rtstruct(tmp_path / "rt.dcm", _build(maps)), slices)
    for z, (truth, label) in enumerate(zip(maps, labels)):
        for cls in SEGMENTS:
            assert _dice(label == cls, truth == cls) >= 0.98, (z, cls)
    assert labels[0][20, 20] == 0 and labels[0][20, 20 + 8] == 1  # the hole, and the ring around it
    assert labels[2][20, 20] == 1 and labels[2][20, 23] == 0  # the island in the hole, the hole around it
    assert not labels[4].any()


def _write_series(tmp_path: Path, maps: list[np.ndarray], patient_id: str = "P-7") -> pd.DataFrame:
    """Header-only DICOM files of the series (as a source folder holds them) and its result rows."""
    header = _header()
    rows = []
    for z, s in enumerate(_slices(maps)):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, s.instance_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        for element in header:
            ds.add(element)
        ds.PatientID = patient_id
        ds.SOPInstanceUID, ds.Modality = s.instance_uid, "CT"
        ds.ImagePositionPatient, ds.ImageOrientationPatient = list(s.position), list(s.orientation)
        ds.PixelSpacing, ds.Rows, ds.Columns = list(SPACING), *SHAPE
        path = tmp_path / "in" / "ct" / f"slice-{z}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        rows.append(
            {
                "case_id": s.instance_uid,
                "group_id": header.SeriesInstanceUID,
                "source_uri": str(path),
                "rel_path": f"ct/slice-{z}.dcm",
                "frame": 0,
            }
        )
    return pd.DataFrame(rows)


def _config(tmp_path: Path, layout: str = "mirror") -> OutputConfig:
    return OutputConfig(str(tmp_path / "out"), ("rtstruct",), layout, {1: "liver", 2: "lesion"}, 3, "d1g", "run-9")


def test_series_rtstruct_from_kept_slice_maps_is_written_once(tmp_path: Path) -> None:
    maps = _class_maps()
    rows = _write_series(tmp_path, maps)
    cfg = _config(tmp_path)
    for row, m in zip(rows.to_dict("records"), maps):
        keep_slice_map(cfg, row, m)
    shuffled = rows.sample(frac=1.0, random_state=0)  # result rows come in batch order
    assert write_series_rtstructs(cfg, shuffled, {}) == (1, 0)  # geometry from the headers
    (path,) = (tmp_path / "out" / "rtstruct").rglob("*.dcm")
    assert path == tmp_path / "out" / "rtstruct" / "ct" / f"{_header().SeriesInstanceUID}.dcm"
    ds = pydicom.dcmread(path)
    assert "model d1g, run run-9" in ds.SeriesDescription
    assert ds.SeriesInstanceUID != _header().SeriesInstanceUID
    labels = _read_back(path, _slices(maps))
    for truth, label in zip(maps, labels):
        assert all(_dice(label == c, truth == c) >= 0.98 for c in SEGMENTS)
    before = path.stat().st_mtime_ns
    assert write_series_rtstructs(cfg, rows, {}) == (0, 1)  # a rerun writes nothing twice
    assert path.stat().st_mtime_ns == before


def test_tag_layout_sanitises_the_patient_id(tmp_path: Path) -> None:
    maps = _class_maps()
    rows = _write_series(tmp_path, maps, patient_id="../../evil")
    cfg = _config(tmp_path, "dicom-tags")
    for row, m in zip(rows.to_dict("records"), maps):
        keep_slice_map(cfg, row, m)
    assert write_series_rtstructs(cfg, rows, {}) == (1, 0)
    (path,) = (tmp_path / "out" / "rtstruct").rglob("*.dcm")
    h = _header()
    assert path.relative_to(tmp_path / "out" / "rtstruct").as_posix() == (
        f"____evil/{h.StudyInstanceUID}/{h.SeriesInstanceUID}.dcm"
    )


def test_volume_rtstruct_equals_the_slices_one(tmp_path: Path) -> None:
    maps = _class_maps()
    rows = _write_series(tmp_path, maps)
    cfg = _config(tmp_path)
    meta = {
        "case_id": _header().SeriesInstanceUID,
        "rel_path": f"ct/{_header().SeriesInstanceUID}",
        "source_uris": list(rows["source_uri"]),
    }
    path = Path(write_volume_rtstruct(cfg, meta, np.stack(maps)))
    assert path == tmp_path / "out" / "rtstruct" / "ct" / f"{_header().SeriesInstanceUID}.dcm"
    for truth, label in zip(maps, _read_back(path, _slices(maps))):
        assert all(_dice(label == c, truth == c) >= 0.98 for c in SEGMENTS)


def test_a_series_without_frame_of_reference_gets_no_rtstruct_and_says_why(tmp_path: Path, caplog) -> None:
    header = _header()
    del header.FrameOfReferenceUID
    with pytest.raises(SegopsError, match="no FrameOfReferenceUID.*dicom-seg"):
        _build(header=header)
    maps = _class_maps()
    rows = _write_series(tmp_path, maps)
    for path in rows["source_uri"]:
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(path)
    cfg = _config(tmp_path)
    for row, m in zip(rows.to_dict("records"), maps):
        keep_slice_map(cfg, row, m)
    with caplog.at_level(logging.WARNING):
        assert write_series_rtstructs(cfg, rows, {}) == (0, 0)
    assert "no FrameOfReferenceUID" in caplog.text and not (tmp_path / "out" / "rtstruct").exists()


def test_empty_class_gets_a_roi_without_contours(tmp_path: Path) -> None:
    maps = [np.where(m == 2, 0, m).astype(np.uint8) for m in _class_maps()]
    ds = pydicom.dcmread(write_rtstruct(tmp_path / "rt.dcm", _build(maps)))
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["liver", "lesion"]
    assert "ContourSequence" in ds.ROIContourSequence[0] and "ContourSequence" not in ds.ROIContourSequence[1]


def test_a_series_of_speckled_masks_is_written_and_warned_of(tmp_path: Path, caplog) -> None:
    """An undertrained model's speckle (a lone pixel every few pixels) makes thousands of contours per
    slice: the RTSTRUCT is still exact, and the log says why it was slow to write."""
    speckle = np.zeros(SHAPE, np.uint8)
    speckle[::3, ::3] = 1  # 14 x 19 lone pixels per slice
    maps = [speckle.copy() for _ in _class_maps()]
    rows = _write_series(tmp_path, maps)
    cfg = _config(tmp_path)
    for row, m in zip(rows.to_dict("records"), maps):
        keep_slice_map(cfg, row, m)
    with caplog.at_level(logging.WARNING, logger="segops.outputs.series_rtstruct"):
        assert write_series_rtstructs(cfg, rows, {}) == (1, 0)
    assert f"{len(maps) * 14 * 19} contours on {len(maps)} slices; masks this fragmented" in caplog.text
    caplog.clear()
    smooth, cfg = _class_maps(), _config(tmp_path / "smooth")
    rows = _write_series(tmp_path / "smooth", smooth)
    for row, m in zip(rows.to_dict("records"), smooth):
        keep_slice_map(cfg, row, m)
    with caplog.at_level(logging.WARNING, logger="segops.outputs.series_rtstruct"):
        assert write_series_rtstructs(cfg, rows, {}) == (1, 0)
    assert "fragmented" not in caplog.text

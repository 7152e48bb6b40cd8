"""What a DICOM archive holds beside its cross-sections: localizers, secondary captures, other
modalities. Read, counted and planned on files written here with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import FileDataset
from pydicom.uid import PositronEmissionTomographyImageStorage, SecondaryCaptureImageStorage, generate_uid

from segops.config.schema import DicomSource
from segops.data.archive_objects import select_images
from segops.data.census import header_row
from segops.data.decode import decode_file
from segops.data.detection import Detection
from segops.data.dicom import read_dicom
from segops.data.pairing import detect
from segops.data.records import STATUS_OK, STATUS_SKIPPED
from segops.data.series import assemble_series
from segops.errors import LeftOutError
from segops.steps.ingest import ingest_metrics

from .rtstruct_archive import _meta, make_rtstruct_archive, write_ct_series


def _localizer(folder: Path, like: FileDataset, same_series: bool = True) -> Path:
    """A coronal scout view (96 x 64) in ``like``'s study, in its series or a new one."""
    ds = like.copy()
    ds.file_meta = _meta(like.SOPClassUID, generate_uid())
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = like.SeriesInstanceUID if same_series else generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.ImagePositionPatient = ["-100", "0", "150"]
    ds.Rows, ds.Columns = 96, 64
    ds.PixelData = np.full((96, 64), 900, np.int16).tobytes()
    path = folder / "scout.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _secondary_capture(folder: Path, like: FileDataset, name: str = "dose.dcm") -> Path:
    """An RGB dose-report screenshot (Secondary Capture) in ``like``'s study."""
    sop = generate_uid()
    ds = FileDataset("", {}, file_meta=_meta(SecondaryCaptureImageStorage, sop), preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SecondaryCaptureImageStorage, sop, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = like.StudyInstanceUID, generate_uid(), like.PatientID
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = 20, 30
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((20, 30, 3), np.uint8).tobytes()
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name, enforce_file_format=True)
    return folder / name


def _pet_series(folder: Path, like: FileDataset, n: int = 3) -> list[Path]:
    """``n`` PET slices in ``like``'s study and frame of reference (a PET/CT)."""
    folder.mkdir(parents=True, exist_ok=True)
    series, paths = generate_uid(), []
    for k in range(n):
        sop = generate_uid()
        ds = FileDataset("", {}, file_meta=_meta(PositronEmissionTomographyImageStorage, sop), preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = PositronEmissionTomographyImageStorage, sop, "PT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = like.StudyInstanceUID, series
        ds.FrameOfReferenceUID, ds.PatientID, ds.InstanceNumber = like.FrameOfReferenceUID, like.PatientID, k + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = ["0", "0", str(4 * k)], ["1", "0", "0", "0", "1", "0"]
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 16, 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.full((16, 16), 50 * k, np.uint16).tobytes()
        paths.append(folder / f"pt{k}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _source(root: Path, **fields: object) -> DicomSource:
    return DicomSource(kind="dicom", path=root, **fields)


def test_a_localizer_is_skipped_by_default_and_read_when_skip_leaves_it_out(tmp_path: Path) -> None:
    cts = write_ct_series(tmp_path / "ct", 2, generate_uid(), generate_uid())
    scout = _localizer(tmp_path / "ct", cts[0])
    with pytest.raises(LeftOutError, match=r"a localizer \(ImageType ORIGINAL\\PRIMARY\\LOCALIZER\)"):
        read_dicom(scout, "ct/scout.dcm", skip=("localizer",))
    assert read_dicom(scout, "ct/scout.dcm")[0].image.shape == (1, 96, 64)

    [row] = decode_file(str(scout), "ct/scout.dcm", _source(tmp_path))
    assert (row["status"], row["stage"]) == (STATUS_SKIPPED, "select")
    assert "source.skip lists 'localizer'" in row["error"]
    [kept] = decode_file(str(scout), "ct/scout.dcm", _source(tmp_path, skip=[]))
    assert kept["status"] == STATUS_OK and (kept["height"], kept["width"]) == (96, 64)


def test_a_series_holding_its_scout_view_is_a_volume_once_the_scout_is_skipped(tmp_path: Path) -> None:
    cts = write_ct_series(tmp_path / "ct", 4, generate_uid(), generate_uid())
    _localizer(tmp_path / "ct", cts[0], same_series=True)
    files = sorted((tmp_path / "ct").iterdir())

    def series(source: DicomSource):
        rows = pd.DataFrame([r for f in files for r in decode_file(str(f), f"ct/{f.name}", source)])
        [one] = assemble_series(rows[rows["status"] == STATUS_OK])
        return one

    assert not series(_source(tmp_path, skip=[])).is_volume  # two orientations, two sizes
    kept = series(_source(tmp_path))
    assert kept.is_volume and len(kept.case_ids) == 4


def test_secondary_captures_and_other_modalities_are_left_out_only_when_the_source_says_so(tmp_path: Path) -> None:
    cts = write_ct_series(tmp_path / "ct", 1, generate_uid(), generate_uid())
    dose = _secondary_capture(tmp_path / "dose", cts[0])
    [pet] = _pet_series(tmp_path / "pt", cts[0], n=1)
    [read] = decode_file(str(dose), "dose/dose.dcm", _source(tmp_path))
    assert read["status"] == STATUS_OK and read["image_role"] == "secondary"  # the fingerprint counts roles
    [row] = decode_file(str(dose), "dose/dose.dcm", _source(tmp_path, skip=["localizer", "secondary"]))
    assert row["status"] == STATUS_SKIPPED and row["error"].startswith("a secondary capture")
    [row] = decode_file(str(pet), "pt/pt0.dcm", _source(tmp_path, modalities=["ct"]))  # spelt in any case
    assert row["status"] == STATUS_SKIPPED and row["error"] == "modality PT: source.modalities reads CT only"
    ct = str(tmp_path / "ct" / "ct0.dcm")
    [read] = decode_file(ct, "ct/ct0.dcm", _source(tmp_path, modalities=["CT"]))
    assert read["status"] == STATUS_OK and read["image_role"] == ""


def test_the_census_counts_what_ingest_would_leave_out_and_ingest_metrics_tell_it_from_objects_without_pixels(
    tmp_path: Path,
) -> None:
    cts = write_ct_series(tmp_path / "ct", 1, generate_uid(), generate_uid())
    scout = _localizer(tmp_path / "ct", cts[0])
    row = header_row(str(scout), "ct/scout.dcm", _source(tmp_path))
    assert row["status"] == STATUS_SKIPPED and "localizer" in row["error"]
    assert header_row(str(scout), "ct/scout.dcm", _source(tmp_path, skip=[]))["status"] == STATUS_OK

    meta = pd.DataFrame(
        {
            "source_uri": ["a", "b", "c", "d"],
            "status": [STATUS_OK, STATUS_SKIPPED, STATUS_SKIPPED, STATUS_SKIPPED],
            "stage": ["", "select", "select", "read"],
            "has_label": [True, False, False, False],
            "error": ["", "a localizer", "modality PT", "no image"],
        }
    )
    metrics = ingest_metrics(meta, {})
    assert metrics["ingest_skipped_by_selection"] == 2 and metrics["ingest_skipped_no_pixels"] == 1


def test_plan_reads_the_labelled_series_modality_and_skips_screenshots_beside_acquired_images(tmp_path: Path) -> None:
    a, b, _ = make_rtstruct_archive(tmp_path)  # 6 labelled + 2 unlabelled CT slices, one RTSTRUCT
    _localizer(tmp_path / "ct" / "a", a[0])
    _secondary_capture(tmp_path / "ct" / "dose", a[0])
    _pet_series(tmp_path / "ct" / "pt", a[0], n=3)
    d = detect(tmp_path)
    assert d.pairing == "dicom-rtstruct"
    assert d.source["skip"] == ["localizer", "secondary"] and d.source["modalities"] == ["CT"]
    assert (d.n_images, d.n_paired) == (8, 8)
    assert d.notes["skip"] == (
        "of 13 DICOM image files: 1 localizer(s) (scout views, skipped by default); "
        "1 secondary capture(s) (screenshots, dose reports)"
    )
    assert d.notes["modalities"].startswith("3 PT image(s) in no labelled series")
    # the planned source validates and reads only the labelled series' modality
    assert DicomSource(**d.source).modalities == ("CT",)


def test_plan_keeps_secondary_captures_where_they_are_the_images_and_writes_nothing_for_a_plain_series(
    tmp_path: Path,
) -> None:
    cts = write_ct_series(tmp_path / "ct", 2, generate_uid(), generate_uid())
    plain = [f"ct/ct{k}.dcm" for k in range(2)]
    found = Detection({"kind": "dicom", "path": str(tmp_path)}, "semantic", 2, "dicom-seg", "dicom-seg", 2, 2)
    assert select_images(tmp_path, found, plain, lambda o: True) is found  # nothing to say: unchanged

    captures = [_secondary_capture(tmp_path / "sc", cts[0], f"sc{k}.dcm") for k in range(3)]
    names = [f"sc/{p.name}" for p in captures]
    kept = select_images(tmp_path, found, names, lambda o: True)
    assert "skip" not in kept.source and "modalities" not in kept.source
    assert "images of the archive here: all or labelled, read" in kept.notes["path"] and kept.n_images == 3
    # beside acquired images, screenshots are skipped unless a label was drawn on one
    mixed = plain + names
    assert select_images(tmp_path, found, mixed, lambda o: o.role == "").source["skip"] == [
        "localizer",
        "secondary",
    ]
    assert "skip" not in select_images(tmp_path, found, mixed, lambda o: o.role == "secondary").source

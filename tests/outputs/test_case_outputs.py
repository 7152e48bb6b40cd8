"""Case outputs named by DICOM tags take them from the record; a record of a dataset written by
an older segops (no identifier columns) falls back to reading the file's header."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from segops.config.schema import DicomSource
from segops.data.decode import decode_file
from segops.data.records import DICOM_ID_COLUMNS
from segops.outputs.case_outputs import OutputConfig, case_stem, write_case_outputs


def _record(ct_archive: Path, tmp_path: Path) -> tuple[dict, pydicom.Dataset]:
    """A decoded slice's columns (no pixels), from a copy of the file this test may delete."""
    folder = tmp_path / "in"
    folder.mkdir()
    path = shutil.copy(ct_archive / "images" / "series-000" / "slice-0000.dcm", folder / "s.dcm")
    (row,) = decode_file(str(path), "s.dcm", DicomSource(kind="dicom", path=folder))
    return {k: v for k, v in row.items() if k not in ("image", "label")}, pydicom.dcmread(path)


def _config(tmp_path: Path, formats: tuple[str, ...], layout: str = "dicom-tags") -> OutputConfig:
    return OutputConfig(str(tmp_path / "out"), formats, layout, {1: "lesion"}, 2, "digest")


def test_tag_layout_uses_the_record_identifiers_without_reading_the_file(ct_archive: Path, tmp_path: Path) -> None:
    meta, header = _record(ct_archive, tmp_path)
    Path(meta["source_uri"]).unlink()  # a header read would fail now
    mask = np.zeros((header.Rows, header.Columns), np.uint8)
    written = write_case_outputs(_config(tmp_path, ("png",)), meta, mask)
    tags = [header.PatientID, header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID]
    assert written["mask_path"] == str(tmp_path / "out" / "masks" / "/".join(tags)) + ".png"
    assert Path(written["mask_path"]).is_file() and written["seg_path"] == ""


def test_records_of_older_datasets_read_the_header_and_get_the_same_stem(ct_archive: Path, tmp_path: Path) -> None:
    meta, _ = _record(ct_archive, tmp_path)
    cfg = _config(tmp_path, ("png",))
    old = {k: v for k, v in meta.items() if k not in DICOM_ID_COLUMNS}
    assert case_stem(cfg, old) == case_stem(cfg, meta)
    Path(meta["source_uri"]).unlink()
    with pytest.raises(FileNotFoundError):  # the old record has nothing else to go on
        case_stem(cfg, old)
    assert case_stem(cfg, meta).count("/") == 3


def test_mirror_layout_and_image_records_ignore_the_tags(ct_archive: Path, tmp_path: Path) -> None:
    meta, _ = _record(ct_archive, tmp_path)
    assert case_stem(_config(tmp_path, ("png",), "mirror"), meta) == "s"
    png = meta | {"transfer_syntax": "PNG", "rel_path": "a/b.png"}  # an image file: no DICOM tags
    assert case_stem(_config(tmp_path, ("png",)), png) == "a/b"


def test_a_seg_still_reads_its_source_header(ct_archive: Path, tmp_path: Path) -> None:
    meta, header = _record(ct_archive, tmp_path)
    mask = np.zeros((header.Rows, header.Columns), np.uint8)
    mask[4:9, 4:9] = 1
    written = write_case_outputs(_config(tmp_path, ("png", "dicom-seg")), meta, mask)
    seg = pydicom.dcmread(written["seg_path"])
    assert written["seg_path"].endswith(f"/{header.SOPInstanceUID}.seg.dcm")
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == header.SeriesInstanceUID

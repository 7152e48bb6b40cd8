"""The record, problem and quarantine row layouts: defined once, and every producer agrees."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.data import get_testdata_file

from segops.config.schema import DicomSource, ImageSource, MaskPngLabels
from segops.data.decode import decode_file
from segops.data.records import (
    DICOM_ID_COLUMNS,
    EMPTY_IMAGE,
    EMPTY_LABEL,
    META_COLUMNS,
    PIXEL_COLUMNS,
    QUARANTINE_COLUMNS,
    QUARANTINE_SCHEMA,
    RECORD_SCHEMA,
    ImageRecord,
    dataset_meta,
    path_case_id,
    problem_row,
    quarantine_table,
    records_table,
)
from segops.errors import DecodeError, LabelError


def _decoded_rows(ct_archive: Path, inspection_archive: Path, tmp_path: Path) -> list[dict]:
    """A labelled DICOM slice, an unlabelled PNG, a quarantined and a skipped file."""
    dicom = DicomSource(
        kind="dicom", path=ct_archive / "images", labels=MaskPngLabels(kind="mask-png", path=ct_archive / "labels")
    )
    images = ImageSource(kind="images", path=inspection_archive / "images")
    png = sorted((inspection_archive / "images").glob("*.png"))[0]
    (tmp_path / "x.dcm").write_bytes(b"not dicom at all")
    return [
        *decode_file(str(ct_archive / "images/series-000/slice-0000.dcm"), "series-000/slice-0000.dcm", dicom),
        *decode_file(str(png), png.name, images),
        *decode_file(str(tmp_path / "x.dcm"), "x.dcm", dicom),  # quarantined at read
        *decode_file(get_testdata_file("rtplan.dcm"), "rtplan.dcm", dicom),  # skipped: no image
    ]


def _matches(value: object, kind: pa.DataType) -> bool:
    if pa.types.is_list(kind):
        return isinstance(value, list) and all(_matches(v, kind.value_type) for v in value)
    if pa.types.is_boolean(kind):
        return isinstance(value, bool)
    if pa.types.is_integer(kind):
        return isinstance(value, int | np.integer) and not isinstance(value, bool)
    if pa.types.is_floating(kind):
        return isinstance(value, float)
    return isinstance(value, str)


def test_decoded_rows_have_exactly_the_record_columns_with_their_types(
    ct_archive: Path, inspection_archive: Path, tmp_path: Path
) -> None:
    rows = _decoded_rows(ct_archive, inspection_archive, tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok", "quarantined", "skipped"]
    for row in rows:
        assert list(row) == [*META_COLUMNS, *PIXEL_COLUMNS]
        wrong = [f.name for f in RECORD_SCHEMA if not _matches(row[f.name], f.type)]
        assert wrong == [], f"{row['rel_path']}: {wrong} do not have their RECORD_SCHEMA type"
    table = records_table(rows)
    assert table.schema == RECORD_SCHEMA and table.num_rows == 4
    assert table.column("has_label").to_pylist() == [True, False, False, False]


def test_dicom_records_keep_the_identifiers_outputs_need(ct_archive: Path, tmp_path: Path) -> None:
    path = ct_archive / "images/series-000/slice-0000.dcm"
    header = pydicom.dcmread(path, stop_before_pixels=True)
    (row,) = decode_file(str(path), "series-000/slice-0000.dcm", DicomSource(kind="dicom", path=ct_archive / "images"))
    assert [row[c] for c in DICOM_ID_COLUMNS] == [
        header.PatientID,
        header.StudyInstanceUID,
        header.SeriesInstanceUID,
        header.SOPInstanceUID,
    ]
    assert row["case_id"] == header.SOPInstanceUID and row["group_id"] == header.SeriesInstanceUID


def test_image_files_have_empty_identifiers(inspection_archive: Path) -> None:
    png = sorted((inspection_archive / "images").glob("*.png"))[0]
    (row,) = decode_file(str(png), png.name, ImageSource(kind="images", path=inspection_archive / "images"))
    assert [row[c] for c in DICOM_ID_COLUMNS] == ["", "", "", ""]


def test_problem_row_says_why_in_the_record_layout(tmp_path: Path) -> None:
    row = problem_row(
        str(tmp_path / "a" / "b.dcm"),
        "a/b.dcm",
        "quarantined",
        "read",
        DecodeError("bad codec", "1.2.840.10008.1.2.4.50"),
    )
    assert list(row) == [*META_COLUMNS, *PIXEL_COLUMNS]
    assert row["case_id"] == path_case_id("a/b.dcm") and len(row["case_id"]) == 16
    assert row["source_uri"] == str((tmp_path / "a" / "b.dcm").resolve()) and row["rel_path"] == "a/b.dcm"
    assert (row["status"], row["stage"], row["error_type"], row["error"]) == (
        "quarantined",
        "read",
        "DecodeError",
        "bad codec",
    )
    assert row["transfer_syntax"] == "1.2.840.10008.1.2.4.50"
    assert row["instance_number"] == -1 and row["frame"] == 0 and row["spacing_y"] == 0.0
    assert row["has_label"] is False and row["position"] == [] and row["label_values"] == []
    assert row["patient_id"] == "" and row["modality"] == ""
    assert row["image"] is EMPTY_IMAGE and row["label"] is EMPTY_LABEL
    assert records_table([row]).schema == RECORD_SCHEMA


def test_problem_row_of_a_label_keeps_the_case_id_and_cuts_long_errors(tmp_path: Path) -> None:
    row = problem_row(str(tmp_path / "x.png"), "x.png", "quarantined", "label", LabelError("y" * 5000), "case-7")
    assert row["case_id"] == "case-7" and row["stage"] == "label" and row["error_type"] == "LabelError"
    assert row["error"] == "y" * 2000 and row["transfer_syntax"] == ""


def test_quarantine_table_keeps_the_rows_that_are_not_ok(tmp_path: Path) -> None:
    ok = ImageRecord(np.zeros((1, 2, 3), np.float32), "c1", "g", "/s/ok.png", "ok.png", "XC").to_row()
    bad = problem_row(str(tmp_path / "x.png"), "x.png", "skipped", "read", ValueError("no image"))
    meta = pd.DataFrame([ok, bad, ok | {"case_id": "c2"}])
    table = quarantine_table(meta)
    assert list(table.columns) == list(QUARANTINE_COLUMNS) and table.index.tolist() == [0]
    assert table.iloc[0].to_dict() == {name: bad[name] for name in QUARANTINE_COLUMNS}
    arrow = pa.Table.from_pandas(table, schema=QUARANTINE_SCHEMA, preserve_index=False)
    assert arrow.schema.names == list(QUARANTINE_COLUMNS)


def test_to_row_measures_images_and_volumes_and_counts_labels() -> None:
    label = np.array([[0, 1, 1], [0, 0, 2]], np.uint8)
    row = ImageRecord(np.ones((3, 2, 3), np.float64), "c", "g", "/s", "r", "XC", label=label).to_row()
    assert (row["channels"], row["height"], row["width"]) == (3, 2, 3) and row["image"].dtype == np.float32
    assert (row["label_values"], row["label_pixels"]) == ([0, 1, 2], [3, 2, 1]) and row["has_label"] is True
    volume = ImageRecord(np.zeros((1, 5, 4, 6), np.float32), "s", "s", "/s", "r", "CT").to_row()
    assert (volume["channels"], volume["height"], volume["width"]) == (1, 4, 6)
    assert volume["has_label"] is False and volume["label"] is EMPTY_LABEL and volume["label_values"] == []


@pytest.mark.parametrize("old", [False, True])
def test_dataset_meta_reads_the_record_columns_of_old_and_new_datasets(tmp_path: Path, old: bool) -> None:
    rows = [ImageRecord(np.zeros((1, 2, 2), np.float32), f"c{i}", "g", "/s", f"r{i}", "XC").to_row() for i in range(3)]
    table = records_table(rows).append_column("image", pa.array([b"x"] * 3))
    if old:  # written before the DICOM identifiers and the label census existed
        table = table.drop_columns([*DICOM_ID_COLUMNS, "label_values", "label_pixels"])
    (tmp_path / "ds").mkdir()
    pq.write_table(table, tmp_path / "ds" / "part-0.parquet")
    meta = dataset_meta(tmp_path / "ds")
    dropped = {*DICOM_ID_COLUMNS, "label_values", "label_pixels"} if old else set()
    assert list(meta.columns) == [c for c in META_COLUMNS if c not in dropped]
    assert meta["case_id"].tolist() == ["c0", "c1", "c2"]

"""Header-only census: per-file status by the decode rule, and the grouped summary users read."""

from pathlib import Path

import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from segops.config.schema import DicomSource
from segops.data.census import census_summary, header_row

COLUMNS = ["modality", "transfer_syntax", "photometric", "channels", "height", "width"]


def test_summary_of_one_shape_table_is_one_line_per_group() -> None:
    ct = ("CT", "1.2.840.10008.1.2.1", "MONOCHROME2", 1)
    census = pd.DataFrame(
        [
            (*ct, 512, 512, 40),
            (*ct, 480, 512, 30),
            (*ct, 1024, 512, 20),
            (*ct, 600, 512, 10),
            ("MR", "1.2.840.10008.1.2", "MONOCHROME2", 1, 256, 256, 5),
        ],
        columns=[*COLUMNS, "records"],
    )
    summary = census_summary(census, weight="records")
    assert summary.to_dict("records") == [
        {
            "modality": "CT",
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "photometric": "MONOCHROME2",
            "channels": 1,
            "records": 100,
            "height": "480–1024 (median 512)",
            "width": "512",
            "shapes": "512×512 (40), 480×512 (30), 1024×512 (20), +1 more",
        },
        {
            "modality": "MR",
            "transfer_syntax": "1.2.840.10008.1.2",
            "photometric": "MONOCHROME2",
            "channels": 1,
            "records": 5,
            "height": "256",
            "width": "256",
            "shapes": "256×256",
        },
    ]


def test_photos_of_120_sizes_summarise_to_a_few_lines() -> None:
    """One row per file (the census command): 120 JPEG sizes, 3 PNGs, one skipped file."""
    jpegs = [("XC", "JPEG", "RGB", 3, 480 + 4 * i, 640 + 8 * (i % 2), 1, "ok") for i in range(120)]
    pngs = [("XC", "PNG", "L", 1, 256, 256, 1, "ok")] * 3
    skipped = [("", "", "", 0, 0, 0, 0, "skipped")]
    rows = pd.DataFrame(jpegs + pngs + skipped, columns=[*COLUMNS, "frames", "status"])
    summary = census_summary(rows)
    assert list(summary.columns) == ["status", *COLUMNS[:4], "files", "frames", "height", "width", "shapes"]
    assert summary[["status", "transfer_syntax", "files", "frames"]].values.tolist() == [
        ["ok", "JPEG", 120, 120],
        ["ok", "PNG", 3, 3],
        ["skipped", "", 1, 0],
    ]
    jpeg, png, skip = summary.to_dict("records")
    assert jpeg["height"] == "480–956 (median 718)" and jpeg["width"] == "640–648 (median 644)"
    assert jpeg["shapes"] == "480×640 (1), 484×648 (1), 488×640 (1), +117 more"
    assert (png["height"], png["width"], png["shapes"]) == ("256", "256", "256×256")
    assert (skip["height"], skip["shapes"]) == ("", "")


def test_empty_census_gives_an_empty_summary_with_its_columns() -> None:
    summary = census_summary(pd.DataFrame(columns=[*COLUMNS, "records"]), weight="records")
    assert summary.empty and list(summary.columns) == [*COLUMNS[:4], "records", "height", "width", "shapes"]


SOURCE = DicomSource(kind="dicom", path=Path("."))


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("CT_small.dcm", "ok", ""),
        ("rtplan.dcm", "skipped", "no image: RT Plan Storage objects carry no pixel data"),
        ("test-SR.dcm", "skipped", "no image: Comprehensive SR Storage objects carry no pixel data"),
        (
            "rtplan_truncated.dcm",
            "quarantined",
            "RT Plan Storage object damaged: truncated: (300A,00B0) declares 976 bytes but 711 remain",
        ),
        (
            "MR_truncated.dcm",
            "quarantined",
            "MR Image Storage without complete Pixel Data: truncated (expected 8192 bytes, found 8130)",
        ),
    ],
)
def test_dicom_header_status_follows_the_decode_rule(name: str, status: str, error: str) -> None:
    row = header_row(get_testdata_file(name), name, SOURCE)
    assert (row["status"], row["error"]) == (status, error)


def test_image_without_class_or_pixels_is_quarantined_not_skipped(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.SOPClassUID, ds.PixelData
    ds.save_as(tmp_path / "stripped.dcm")
    row = header_row(str(tmp_path / "stripped.dcm"), "stripped.dcm", SOURCE)
    assert (row["status"], row["height"], row["frames"]) == ("quarantined", 128, 0)
    assert row["error"] == (
        "object of unknown SOP class (no readable SOP Class UID) without complete Pixel Data: no Pixel Data element"
    )

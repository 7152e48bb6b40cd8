"""Header-only census: per-file status by the decode rule, and the grouped summary users read."""

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from segops.config.schema import DicomSource, ImageSource
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


IMAGES = ImageSource(kind="images", path=Path("."))


def test_image_header_rows_read_format_mode_shape_and_frames(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / "photo.jpg")
    frames = [Image.fromarray(np.full((8, 10), v, np.uint8)) for v in (0, 1, 2)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    (tmp_path / "notes.png").write_text("not pixels")
    rows = {name: header_row(str(tmp_path / name), name, IMAGES) for name in sorted(p.name for p in tmp_path.iterdir())}
    shape = ("modality", "transfer_syntax", "photometric", "channels", "height", "width", "frames", "status")
    assert {name: tuple(row[k] for k in shape) for name, row in rows.items()} == {
        "gray.png": ("XC", "PNG", "L", 1, 20, 30, 1, "ok"),
        "photo.jpg": ("XC", "JPEG", "RGB", 3, 12, 16, 1, "ok"),
        "stack.tif": ("XC", "TIFF", "L", 1, 8, 10, 3, "ok"),
        "notes.png": ("", "", "", 0, 0, 0, 0, "quarantined"),
    }
    assert rows["notes.png"]["error"].startswith("DecodeError: not an image: cannot identify image file")
    assert rows["gray.png"]["error"] == "" and rows["gray.png"]["rel_path"] == "gray.png"


def test_census_of_a_folder_of_random_sizes_matches_numpy(tmp_path: Path) -> None:
    """40 PNGs of seeded random sizes and 2 unreadable files: counts, ranges, medians and the
    most frequent shapes are what numpy and a Counter say."""
    rng = np.random.default_rng(3)
    heights, widths = rng.choice([32, 48, 64, 80], 40), rng.choice([40, 56, 72], 40)
    for i, (h, w) in enumerate(zip(heights, widths)):
        Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / f"{i:02d}.png")
    for i in range(2):
        (tmp_path / f"broken-{i}.png").write_bytes(b"\x89PNG" + bytes(20))
    rows = pd.DataFrame([header_row(str(p), p.name, IMAGES) for p in sorted(tmp_path.iterdir())])
    ok, bad = census_summary(rows).to_dict("records")
    assert (ok["status"], ok["files"], ok["frames"], ok["photometric"]) == ("ok", 40, 40, "L")
    assert (bad["status"], bad["files"], bad["frames"], bad["height"], bad["shapes"]) == ("quarantined", 2, 0, "", "")
    for text, values in ((ok["height"], heights), (ok["width"], widths)):
        assert text == f"{values.min()}–{values.max()} (median {np.median(values):g})"
    counts = Counter(zip(heights.tolist(), widths.tolist()))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    named = [f"{h}×{w} ({n})" for (h, w), n in ranked[:3]]
    assert ok["shapes"] == ", ".join([*named, f"+{len(counts) - 3} more"])


def test_weighted_summary_takes_the_median_over_records_not_shapes() -> None:
    """Per-shape rows with a ``records`` count (ingest's census): the median is over records, a
    half-way median keeps its fraction, and ``top`` limits the named shapes."""
    ct = ("CT", "1.2.840.10008.1.2.1", "MONOCHROME2", 1)
    sizes = [(480, 512, 1), (481, 512, 1), (500, 512, 2), (600, 512, 96)]
    census = pd.DataFrame([(*ct, h, w, n) for h, w, n in sizes], columns=[*COLUMNS, "records"])
    heights = np.repeat([h for h, _, _ in sizes], [n for _, _, n in sizes])
    [line] = census_summary(census, weight="records", top=1).to_dict("records")
    assert (
        line["records"] == 100
        and line["height"] == f"480–600 (median {np.median(heights):g})" == "480–600 (median 600)"
    )
    assert line["shapes"] == "600×512 (96), +3 more"
    [first_two] = census_summary(census.iloc[:2], weight="records").to_dict("records")
    assert first_two["height"] == "480–481 (median 480.5)" and first_two["records"] == 2

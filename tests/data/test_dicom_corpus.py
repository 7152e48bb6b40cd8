"""Every DICOM file pydicom ships: decoded, or skipped/quarantined with a reason; none crashes."""

from pathlib import Path

import numpy as np
import pydicom
import pytest

from segops.config.schema import DicomSource
from segops.data.decode import decode_file
from segops.data.dicom import read_dicom
from segops.data.sop_classes import is_non_image_class

from .corrupt import make_corrupt_corpus, make_fuzzed_copies

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
CORPUS = sorted(p for p in TEST_FILES.iterdir() if p.is_file() and p.suffix == ".dcm")
SOURCE = DicomSource(kind="dicom", path=TEST_FILES)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict]:
    return {p.name: decode_file(str(p), p.name, SOURCE) for p in CORPUS}


def test_corpus_accounting(outcomes: dict[str, dict]) -> None:
    assert len(CORPUS) >= 75
    status = {name: {r["status"] for r in rows} for name, rows in outcomes.items()}
    decoded = sorted(n for n, s in status.items() if s == {"ok"})
    skipped = sorted(n for n, s in status.items() if s == {"skipped"})
    quarantined = sorted(n for n, s in status.items() if s == {"quarantined"})
    assert len(decoded) + len(skipped) + len(quarantined) == len(CORPUS)
    # measured with pydicom 3.0 + pylibjpeg (libjpeg, openjpeg); see field-notes.md
    assert (len(decoded), len(skipped), len(quarantined)) == (58, 8, 12)
    assert set(skipped) == {  # intact objects of non-image classes, and nothing else
        "ExplVR_BigEndNoMeta.dcm",  # RT Ion Plan
        "ExplVR_LitEndNoMeta.dcm",
        "reportsi.dcm",  # Basic Text SR
        "reportsi_with_empty_number_tags.dcm",
        "rtplan.dcm",
        "rtstruct.dcm",
        "test-SR.dcm",  # Comprehensive SR
        "waveform_ecg.dcm",
    }
    assert set(quarantined) == {
        "rtplan_truncated.dcm",  # a non-image class, but cut off inside an element
        "UN_sequence.dcm",  # no SOP class and no pixels: nothing says it is not a damaged image
        "empty_charset_LEI.dcm",
        "no_meta_group_length.dcm",
        "priv_SQ.dcm",
        "JPEG-lossy.dcm",  # 12-bit JPEG Extended: no installed codec decodes it
        "JPEG2000-embedded-sequence-delimiter.dcm",
        "MR_truncated.dcm",
        "badVR.dcm",
        "meta_missing_tsyntax.dcm",
        "nested_priv_SQ.dcm",
        "no_meta.dcm",
    }


def test_every_problem_row_says_why(outcomes: dict[str, dict]) -> None:
    for name, rows in outcomes.items():
        for row in rows:
            if row["status"] != "ok":
                assert row["error"] and row["error_type"] and row["stage"] == "read", name
    (jpeg,) = outcomes["JPEG-lossy.dcm"]
    assert "JPEG Extended" in jpeg["error"] and jpeg["transfer_syntax"] == "1.2.840.10008.1.2.4.51"


@pytest.mark.parametrize(
    "twin",
    [
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_compressed_and_big_endian_twins_match_the_uncompressed_reference(twin: str) -> None:
    (reference,) = read_dicom(TEST_FILES / "MR_small.dcm", "ref")
    (record,) = read_dicom(TEST_FILES / twin, twin)
    np.testing.assert_array_equal(record.image, reference.image)


def test_jpeg_ls_and_j2k_lossless_ct_like_sources() -> None:
    (ct,) = read_dicom(TEST_FILES / "CT_small.dcm", "ct")
    assert ct.image.min() < 0  # signed pixels with rescale: HU
    frames = read_dicom(TEST_FILES / "SC_rgb_rle_2frame.dcm", "f")
    assert len(frames) == 2 and frames[0].image.shape[0] == 3


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    (record,) = read_dicom(tmp_path / "m1.dcm", "m1.dcm")
    stored = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    np.testing.assert_allclose(record.image[0], stored.max() + stored.min() - stored)
    assert record.photometric == "MONOCHROME1"


def test_generated_corrupt_corpus_is_all_quarantined(tmp_path: Path, ct_archive: Path) -> None:
    good = next((ct_archive / "images").rglob("*.dcm"))
    files = make_corrupt_corpus(good, tmp_path / "bad")
    assert len(files) >= 50
    rows = [row for f in files for row in decode_file(str(f), f.name, SOURCE)]
    assert len(rows) == len(files)
    assert {r["status"] for r in rows} == {"quarantined"}
    assert all(r["error"] for r in rows)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    # the bundled files only: get_testdata_files() would also try to download pydicom's external set
    return make_fuzzed_copies(CORPUS, tmp_path_factory.mktemp("fuzzed"), count=60, seed=7)


def test_fuzzed_copies_are_ok_only_when_whole_and_skipped_only_when_not_images(
    fuzzed: dict[Path, Path], outcomes: dict[str, dict]
) -> None:
    """Randomly truncated / header-damaged copies: decoded with the original's shape, or quarantined;
    ``skipped`` only where the intact original is a non-image object."""
    counts = {"ok": 0, "skipped": 0, "quarantined": 0}
    for damaged, original in fuzzed.items():
        rows = decode_file(str(damaged), damaged.name, SOURCE)
        (status,) = {r["status"] for r in rows}
        counts[status] += 1
        if status == "ok":
            shapes = [r.image.shape for r in read_dicom(original, original.name)]
            assert [r["image"].shape for r in rows] == shapes, damaged.name
        elif status == "skipped":
            assert is_non_image_class(pydicom.dcmread(original, force=True).SOPClassUID), damaged.name
        else:
            assert rows[0]["error"], damaged.name
    assert counts == {"ok": 7, "skipped": 5, "quarantined": 48}  # seed 7; pydicom 3.0 + pylibjpeg

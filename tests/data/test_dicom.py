import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from segops.data.dicom import read_dicom
from segops.errors import DecodeError, NoPixelDataError


def test_ct_small_is_in_hounsfield_units() -> None:
    path = get_testdata_file("CT_small.dcm")
    (record,) = read_dicom(path, "CT_small.dcm")
    ds = dcmread(path)
    expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    assert record.image.shape == (1, 128, 128)
    np.testing.assert_array_equal(record.image[0], expected)
    assert record.case_id == ds.SOPInstanceUID and record.group_id == ds.SeriesInstanceUID
    assert record.modality == "CT" and record.spacing == tuple(float(v) for v in ds.PixelSpacing)
    assert record.spacing_known and record.to_row()["spacing_known"]


def test_a_file_without_pixel_spacing_has_no_known_spacing(tmp_path) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelSpacing
    ds.save_as(tmp_path / "nospacing.dcm")
    (record,) = read_dicom(tmp_path / "nospacing.dcm", "nospacing.dcm")
    assert record.spacing == (1.0, 1.0) and not record.spacing_known  # (1, 1) stands in; never measured in mm


def test_rle_compressed_twin_decodes_to_same_pixels() -> None:
    (plain,) = read_dicom(get_testdata_file("MR_small.dcm"), "a")
    (rle,) = read_dicom(get_testdata_file("MR_small_RLE.dcm"), "b")
    np.testing.assert_array_equal(plain.image, rle.image)
    assert rle.transfer_syntax == "1.2.840.10008.1.2.5"


def test_rgb_file_becomes_three_channels() -> None:
    (record,) = read_dicom(get_testdata_file("SC_rgb_rle.dcm"), "rgb")
    assert record.image.shape[0] == 3


def test_multiframe_gives_one_record_per_frame() -> None:
    records = read_dicom(get_testdata_file("SC_rgb_rle_2frame.dcm"), "two")
    assert [r.frame for r in records] == [0, 1]
    assert len({r.case_id for r in records}) == 2


def test_no_pixel_data_and_broken_files_raise_specific_errors(tmp_path) -> None:
    with pytest.raises(NoPixelDataError, match="RT Plan Storage objects carry no pixel data"):
        read_dicom(get_testdata_file("rtplan.dcm"), "rtplan.dcm")
    with pytest.raises(DecodeError, match="not a DICOM file"):
        read_dicom(get_testdata_file("no_meta.dcm"), "no_meta.dcm")
    truncated = r"MR Image Storage without complete Pixel Data: truncated \(expected 8192 bytes, found 8130\)"
    with pytest.raises(DecodeError, match=truncated):
        read_dicom(get_testdata_file("MR_truncated.dcm"), "MR_truncated.dcm")
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
    with pytest.raises(DecodeError):
        read_dicom(garbage, "garbage.dcm")

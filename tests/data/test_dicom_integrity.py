"""Completeness checks pydicom's lenient reader does not make: element stream, native Pixel Data length."""

import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless

from segops.data.dicom_integrity import pixel_data_problem, stream_problem


def _encoding(path: str | Path) -> tuple[bool, bool]:
    return pydicom.dcmread(path, force=True).original_encoding


@pytest.mark.parametrize(
    "name",
    [
        "rtplan.dcm",
        "rtstruct.dcm",
        "test-SR.dcm",
        "ExplVR_BigEndNoMeta.dcm",
        "CT_small.dcm",
        "JPEG2000.dcm",
        "waveform_ecg.dcm",
    ],
)
def test_intact_files_have_a_whole_stream(name: str) -> None:
    path = get_testdata_file(name)
    assert stream_problem(Path(path).read_bytes(), *_encoding(path)) is None


def test_cut_inside_a_value_is_found() -> None:
    path = get_testdata_file("rtplan.dcm")
    data = Path(path).read_bytes()
    assert stream_problem(data[:2129], *_encoding(path)) == "truncated: (300A,00B0) declares 976 bytes but 711 remain"


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def test_cut_between_items_of_an_undefined_length_sequence_is_found() -> None:
    """A cut on an element boundary leaves every value whole; only the missing delimiters tell."""
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # item of undefined length ... item delimiter
    item_end, sequence_end = b"\xfe\xff\x0d\xe0" + bytes(4), b"\xfe\xff\xdd\xe0" + bytes(4)
    head = _element(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.481.5\x00")
    sequence = struct.pack("<HH2sHI", 0x300A, 0x00B0, b"SQ", 0, 0xFFFFFFFF)
    beams = [item + _element(0x300A, 0x00C2, b"LO", name) + item_end for name in (b"A ", b"B ")]
    data = head + sequence + b"".join(beams) + sequence_end
    assert stream_problem(data, False, True) is None
    assert stream_problem(data[: -len(sequence_end)], False, True) == (
        "truncated: sequence (300A,00B0) has no sequence delimiter before the end of the file"
    )
    assert stream_problem(data[: -len(item_end + sequence_end)], False, True) == (
        "truncated: a sequence item has no item delimiter before the end of the file"
    )


def test_native_pixel_data_must_have_the_declared_length() -> None:
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # 128 x 128, 16 bits: 32768 bytes
    ts = str(ct.file_meta.TransferSyntaxUID)
    assert pixel_data_problem(ct, ts, 32768) is None
    assert pixel_data_problem(ct, ts, 20000) == "truncated (expected 32768 bytes, found 20000)"
    assert pixel_data_problem(ct, ts, 32768 + 256) is None  # one row of trailing padding (MR_small_padded)
    assert pixel_data_problem(ct, ts, 32768 * 2) == (
        "Pixel Data has 65536 bytes, more than the 32768 the header declares (damaged header?)"
    )
    assert pixel_data_problem(ct, str(JPEG2000Lossless), 100) is None  # compressed: the codec judges
    assert pixel_data_problem(ct, "1.2.3", 100) is None  # not a transfer syntax: the decoder says so

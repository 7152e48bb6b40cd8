"""Is a DICOM file complete? Checks that pydicom's lenient reader does not make.

pydicom reads a truncated value as the bytes that are left and stops quietly at the end of
the file, so a cut-off RT plan or a CT slice whose pixels stop halfway parses "fine". Two
checks close that gap: :func:`stream_problem` walks the raw element stream (every declared
length present, every undefined-length sequence and item closed), and
:func:`pixel_data_problem` compares the Pixel Data length of a native (uncompressed) object
with what Rows × Columns × SamplesPerPixel × BitsAllocated / 8 × NumberOfFrames declares.
"""

from __future__ import annotations

import struct

import pydicom
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class _Incomplete(Exception):
    """The element stream stops before a declared length or delimiter."""


def stream_problem(data: bytes, implicit: bool, little: bool) -> str | None:
    """Why the element stream of a DICOM file is incomplete, or None when it is whole.

    Args:
        data: the whole file.
        implicit, little: encoding of the dataset after the file meta (pydicom's
            ``Dataset.original_encoding``); the file meta itself is explicit VR little endian.
    """
    pos = 132 if data[128:132] == b"DICM" else 0
    try:
        while pos + 4 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
            pos, _ = _element_end(data, pos, implicit=False, little=True)
        _dataset_end(data, pos, implicit, little, in_item=False)
    except _Incomplete as exc:
        return f"truncated: {exc}"
    return None


def _dataset_end(data: bytes, pos: int, implicit: bool, little: bool, in_item: bool) -> int:
    """Position after the elements from ``pos``: at the end of the file, or after the item delimiter."""
    while True:
        if pos == len(data):
            if in_item:
                raise _Incomplete("a sequence item has no item delimiter before the end of the file")
            return pos
        pos, tag = _element_end(data, pos, implicit, little)
        if tag == _ITEM_END:
            if not in_item:
                raise _Incomplete(f"item delimiter outside a sequence item at byte {pos - 8}")
            return pos


def _element_end(data: bytes, pos: int, implicit: bool, little: bool) -> tuple[int, int]:
    """(position after the element at ``pos``, its tag); undefined-length values are walked."""
    order = "<" if little else ">"
    if pos + 8 > len(data):
        raise _Incomplete(f"the file ends inside an element header at byte {pos} of {len(data)}")
    group, elem = struct.unpack_from(order + "HH", data, pos)
    tag, vr = group << 16 | elem, data[pos + 4 : pos + 6]
    if implicit or group == 0xFFFE:
        (length,), pos = struct.unpack_from(order + "I", data, pos + 4), pos + 8
    elif vr in _LONG_VRS:
        if pos + 12 > len(data):
            raise _Incomplete(f"the file ends inside the header of ({group:04X},{elem:04X})")
        (length,), pos = struct.unpack_from(order + "I", data, pos + 8), pos + 12
    else:
        (length,), pos = struct.unpack_from(order + "H", data, pos + 6), pos + 8
    if tag in (_ITEM_END, _SEQUENCE_END):
        return pos, tag
    if length == _UNDEFINED:
        un = not implicit and vr == b"UN"  # UN of undefined length holds an implicit VR little endian sequence
        return _items_end(data, pos, implicit or un, little or un, (group, elem)), tag
    if pos + length > len(data):
        raise _Incomplete(f"({group:04X},{elem:04X}) declares {length} bytes but {len(data) - pos} remain")
    return pos + length, tag


def _items_end(data: bytes, pos: int, implicit: bool, little: bool, owner: tuple[int, int]) -> int:
    """Position after the sequence delimiter of an undefined-length sequence (or encapsulated pixels)."""
    order = "<" if little else ">"
    where = f"({owner[0]:04X},{owner[1]:04X})"
    while True:
        if pos + 8 > len(data):
            raise _Incomplete(f"sequence {where} has no sequence delimiter before the end of the file")
        group, elem, length = struct.unpack_from(order + "HHI", data, pos)
        tag, pos = group << 16 | elem, pos + 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _Incomplete(f"sequence {where} holds ({group:04X},{elem:04X}) where an item should be")
        if length == _UNDEFINED:
            pos = _dataset_end(data, pos, implicit, little, in_item=True)
        elif pos + length > len(data):
            raise _Incomplete(f"an item of {where} declares {length} bytes but {len(data) - pos} remain")
        else:
            pos += length


def expected_pixel_bytes(ds: pydicom.Dataset) -> int | None:
    """Bytes of native Pixel Data the header declares (YBR_FULL_422 and 1-bit packing included),
    or None when an attribute it needs is missing or not a number."""
    try:
        return int(get_expected_length(ds, "bytes"))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def pixel_data_problem(ds: pydicom.Dataset, transfer_syntax: str, found: int) -> str | None:
    """Why ``found`` bytes of Pixel Data are not the complete native pixels ``ds`` declares, or None.

    Only native (uncompressed) transfer syntaxes are checked: compressed frames have no fixed
    size (their codec reports damage). Allowed beyond the declared length: the pad byte to an
    even length, and up to one row of trailing padding that some writers add; more than that
    means the header (Rows, Columns, BitsAllocated...) no longer describes the pixels.
    """
    try:
        if UID(transfer_syntax).is_compressed:
            return None
    except ValueError:  # not a transfer syntax UID: the decoder will say so
        return None
    expected = expected_pixel_bytes(ds)
    if expected is None:
        return None
    if found < expected:
        return f"truncated (expected {expected} bytes, found {found})"
    rows = int(ds.Rows) * int(getattr(ds, "NumberOfFrames", 1) or 1)
    if found > expected + 1 + expected // max(rows, 1):
        return f"Pixel Data has {found} bytes, more than the {expected} the header declares (damaged header?)"
    return None


def pixel_bytes_in_file(head: bytes, offset: int, file_size: int, implicit: bool, little: bool) -> int | None:
    """How many bytes of a defined-length Pixel Data value the file holds, from its element header.

    For a header-only read: ``head`` is the first 12 bytes at ``offset``, where
    ``dcmread(..., stop_before_pixels=True)`` stopped. None when there is no (7FE0,0010) element
    there, or its length is undefined (encapsulated, compressed pixels).
    """
    order = "<" if little else ">"
    if len(head) < 8 or struct.unpack_from(order + "HH", head) != (0x7FE0, 0x0010):
        return None
    if implicit:
        (length,), size = struct.unpack_from(order + "I", head, 4), 8
    elif len(head) >= 12:
        (length,), size = struct.unpack_from(order + "I", head, 8), 12  # OB/OW: 2 reserved bytes, 4-byte length
    else:
        return None
    if length == _UNDEFINED:
        return None
    return max(0, min(length, file_size - offset - size))

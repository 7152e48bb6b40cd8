"""A small reader of NRRD files for what ITK's Python wrapping cannot read: 3D Slicer's segmentations
of several layers (``.seg.nrrd`` with a ``list`` axis of 8-bit values; ITK wraps no 8-bit vector
images). Detached headers and encodings other than raw and gzip are not read (ITK reads those).
Pure numpy; see http://teem.sourceforge.net/nrrd/format.html."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

from segops.errors import DecodeError

#: NRRD ``type`` names → numpy dtypes (the spec's synonyms of each).
_TYPES = {
    np.int8: ("signed char", "int8", "int8_t"),
    np.uint8: ("uchar", "unsigned char", "uint8", "uint8_t"),
    np.int16: ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    np.uint16: ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    np.int32: ("int", "signed int", "int32", "int32_t"),
    np.uint32: ("uint", "unsigned int", "uint32", "uint32_t"),
    np.float32: ("float",),
    np.float64: ("double",),
}
DTYPES = {name: np.dtype(t) for t, names in _TYPES.items() for name in names}
#: A ``space`` → the signs that take its axes to LPS.
_TO_LPS = {
    "left-posterior-superior": (1, 1, 1),
    "lps": (1, 1, 1),
    "right-anterior-superior": (-1, -1, 1),
    "ras": (-1, -1, 1),
}


def read_nrrd(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(array, LPS affine) of an attached-header NRRD of three space axes: (I, J, K), or (I, J, K, C)
    with its non-space (``list``) axis last.

    Raises:
        DecodeError: not such a NRRD (detached data, another encoding or space, a truncated file).
    """
    raw = Path(path).read_bytes()
    end = raw.find(b"\n\n")
    if not raw.startswith(b"NRRD") or end < 0:
        raise DecodeError(f"{path} is not a NRRD file with its header attached", "NRRD")
    fields = {}
    for line in raw[:end].decode("latin-1").splitlines()[1:]:
        if ": " in line and not line.startswith("#") and ":=" not in line:
            key, value = line.split(": ", 1)
            fields[key.strip().lower()] = value.strip()
    dtype = DTYPES.get(fields.get("type", ""))
    sizes = [int(s) for s in fields.get("sizes", "").split()]
    directions = re.findall(r"none|\(([^)]*)\)", fields.get("space directions", ""))
    signs = _TO_LPS.get(fields.get("space", "").lower())
    if dtype is None or signs is None or "data file" in fields or len(directions) != len(sizes):
        raise DecodeError(f"{path}: NRRD type, space or layout not read here ({fields})", "NRRD")
    data = raw[end + 2 :]
    encoding = fields.get("encoding", "raw")
    if encoding in ("gzip", "gz"):
        data = gzip.decompress(data)
    elif encoding != "raw":
        raise DecodeError(f"{path}: NRRD encoding {encoding!r} not read here", "NRRD")
    dtype = dtype.newbyteorder("<" if fields.get("endian", "little") == "little" else ">")
    if len(data) < dtype.itemsize * int(np.prod(sizes)):
        raise DecodeError(f"{path}: NRRD data truncated ({len(data)} bytes for sizes {sizes})", "NRRD")
    array = np.frombuffer(data, dtype, int(np.prod(sizes))).reshape(sizes, order="F")
    space = [n for n, d in enumerate(directions) if d]  # the axes with a direction; "none" marks a list axis
    other = [n for n in range(len(sizes)) if n not in space]
    if len(space) != 3 or len(other) > 1:
        raise DecodeError(f"{path}: NRRD of {len(space)} space axes; expected 3", "NRRD")
    affine = np.eye(4)
    for column, axis in enumerate(space):
        affine[:3, column] = [float(v) for v in directions[axis].split(",")]
    affine[:3, 3] = [float(v) for v in fields.get("space origin", "(0,0,0)").strip("()").split(",")]
    affine[:3] *= np.asarray(signs, float)[:, None]
    return np.ascontiguousarray(np.moveaxis(array, other, [-1] * len(other)) if other else array), affine

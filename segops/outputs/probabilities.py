"""The ``probabilities`` output: a case's softmax as a compressed ``.npz``.

One file per case (per series for volume records) under ``probabilities/``, with the stem of
the case's mask. Its arrays:

- ``probabilities``: (classes, H, W) float16, or (classes, Z, H, W) for a volume (slices in
  the order of the NIfTI mask's Z axis, i.e. the record's ``source_uris``), summing to 1 over
  axis 0 within float16 rounding. The case's class map is the argmax of the float32 softmax
  these were rounded from, so the two agree wherever the top two classes differ by more than
  that rounding (about 5e-4);
- ``classes``: (classes,) int16, the class index of each entry of axis 0;
- ``case_id``: 0-d unicode, the case it belongs to.

Files load with ``numpy.load`` (no pickle). Their zip entries carry a fixed date, so the same
probabilities give the same bytes: a rerun of a case rewrites an identical file.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segops.errors import ShapeError
from segops.outputs.atomic import atomic_write_bytes, safe_join
from segops.outputs.storage import join, read_bytes

#: Folder under the outputs root that holds the files.
PROBABILITIES_DIR = "probabilities"
#: Date of every zip entry (the earliest a zip file can hold): no clock in the bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class CaseProbabilities:
    """A probabilities file's content (see the module docstring)."""

    probabilities: np.ndarray
    classes: np.ndarray
    case_id: str


def encode_probabilities(probabilities: np.ndarray, case_id: str) -> bytes:
    """The ``.npz`` bytes of one case.

    Args:
        probabilities: (classes, *spatial) softmax, any float dtype; stored as float16.

    Raises:
        ShapeError: not (classes, H, W) or (classes, Z, H, W).
    """
    if probabilities.ndim not in (3, 4):
        raise ShapeError(
            f"probabilities of shape {probabilities.shape}: expected (classes, H, W) or (classes, Z, H, W)"
        )
    arrays = {
        "probabilities": np.ascontiguousarray(probabilities, dtype=np.float16),
        "classes": np.arange(probabilities.shape[0], dtype=np.int16),
        "case_id": np.array(str(case_id)),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)
    return buffer.getvalue()


def write_probabilities(root: str | Path, stem: str, probabilities: np.ndarray, case_id: str) -> Path | str:
    """Atomically write ``<root>/probabilities/<stem>.npz``; its path (or URI)."""
    path = safe_join(join(root, PROBABILITIES_DIR), f"{stem}.npz")
    return atomic_write_bytes(path, encode_probabilities(probabilities, case_id))


def read_probabilities(path: str | Path) -> CaseProbabilities:
    """Load a file written by :func:`write_probabilities` (a local path or a storage URI)."""
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
        return CaseProbabilities(data["probabilities"], data["classes"], str(data["case_id"]))

"""Masks stored as MATLAB ``.mat`` files, as the CrackForest dataset (CFD) and BSDS500 ship their
ground truth: ``groundTruth/001.mat`` holding a struct ``groundTruth`` with a ``Segmentation``
array (CFD: 1 background, 2 crack) beside its ``Boundaries``; BSDS500 a cell array of such structs,
one per annotator. A file holding one plain 2-D numeric array (``mask = …; save mask.mat mask``)
is read as that array. MATLAB 7.3 files (HDF5) are not read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from segops.errors import LabelError

#: The suffix of the files this module reads (compared case-insensitively).
MAT_SUFFIX = ".mat"
#: The struct field that holds the label map (CFD, BSDS500); ``Boundaries`` is its outline.
SEGMENTATION_FIELD = "Segmentation"


def is_mat(path: object) -> bool:
    """Whether ``path`` names a ``.mat`` file (a file object, as a mask read from an object store, never)."""
    return isinstance(path, str | os.PathLike) and Path(path).suffix.lower() == MAT_SUFFIX


def read_mat_mask(path: str | Path) -> np.ndarray:
    """The label map in a ``.mat`` file: the ``Segmentation`` field of its (first) struct, else its
    one 2-D numeric array; booleans as 0/1 ``uint8``.

    Raises:
        LabelError: not a MATLAB file, a MATLAB 7.3 (HDF5) file, or no single 2-D array to read.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        variables = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except NotImplementedError as exc:  # scipy's message for v7.3 files
        raise LabelError(
            f"mask {path} is a MATLAB 7.3 (HDF5) file, which is not read; save it with save(..., '-v7') or as PNG"
        ) from exc
    except (MatReadError, OSError, ValueError, TypeError) as exc:
        raise LabelError(f"cannot read mask {path} as a MATLAB file: {type(exc).__name__}: {exc}") from exc
    found = [(name, _label_array(value)) for name, value in variables.items() if not name.startswith("__")]
    arrays = [(name, a) for name, a in found if a is not None]
    if len(arrays) != 1:
        listed = ", ".join(sorted(variables.keys() - {"__header__", "__version__", "__globals__"})) or "none"
        raise LabelError(
            f"mask {path} holds {len(arrays)} 2-D arrays to read as a mask (variables: {listed}); expected one, "
            f"or a struct with a {SEGMENTATION_FIELD} field as CrackForest's and BSDS500's groundTruth"
        )
    array = arrays[0][1]
    return array.astype(np.uint8) if array.dtype == bool else array


def _label_array(value: Any) -> np.ndarray | None:
    """A variable's label map: itself when a 2-D numeric array, its ``Segmentation`` when a struct,
    the first element's when a cell array (BSDS500's annotators: the first one's); else None."""
    if hasattr(value, "_fieldnames"):  # a MATLAB struct
        return _label_array(getattr(value, SEGMENTATION_FIELD)) if SEGMENTATION_FIELD in value._fieldnames else None
    if not isinstance(value, np.ndarray):
        return None
    if value.dtype == object:
        return _label_array(value.flat[0]) if value.size else None
    if value.ndim == 2 and (value.dtype == bool or np.issubdtype(value.dtype, np.integer) or _whole(value)):
        return value if value.dtype == bool or np.issubdtype(value.dtype, np.integer) else value.astype(np.int64)
    return None


def _whole(value: np.ndarray) -> bool:
    """Whether a float array holds only whole numbers (MATLAB's default ``double`` for a label map)."""
    return (
        np.issubdtype(value.dtype, np.floating)
        and bool(np.all(np.isfinite(value)))
        and bool(np.all(value == np.round(value)))
    )

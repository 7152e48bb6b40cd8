"""Masks stored as arrays rather than pictures: MATLAB ``.mat`` (:mod:`segops.data.mat_masks`) and
NumPy ``.npy`` / ``.npz`` files, as research code and some public sets save them (WGISD's grape
bunches: ``CDY_2015.npz`` beside ``CDY_2015.jpg``, one binary mask per object).

A NumPy file holds a 2-D map of class or instance ids (read as it is, booleans as 0/1), or a stack
of binary masks, one per object, along its first or last axis (the shorter one): read as instance
ids 1..N in stack order, where two objects overlap the first keeps the pixel. A ``.npz`` archive is
read from its one array, or from the array named ``mask``/``masks``/``label``/``labels``/``seg``/
``segmentation`` where it holds several. Pickled object arrays are never loaded.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from segops.data.mat_masks import MAT_SUFFIX, read_mat_mask
from segops.errors import LabelError

#: The suffixes of the mask files this module reads (compared case-insensitively).
ARRAY_SUFFIXES = (MAT_SUFFIX, ".npy", ".npz")
#: Names of the array a ``.npz`` archive of several holds its mask in (lower case).
MASK_ARRAY_NAMES = ("mask", "masks", "label", "labels", "seg", "segmentation")


def is_array_mask(path: object) -> bool:
    """Whether ``path`` names a ``.mat``, ``.npy`` or ``.npz`` file (a file object never)."""
    return isinstance(path, str | os.PathLike) and Path(path).suffix.lower() in ARRAY_SUFFIXES


def read_array_mask(path: str | Path) -> np.ndarray:
    """The (H, W) label map in an array file (see the module's docstring).

    Raises:
        LabelError: unreadable, or holding no array that is a label map or a stack of binary masks.
    """
    return read_array_layout(path)[0]


def read_array_layout(path: str | Path) -> tuple[np.ndarray, bool]:
    """(:func:`read_array_mask`'s label map, whether the file stores it as a stack of binary masks, one
    per object: instances by the file's layout, whatever their shapes). A ``.mat`` file is never a stack.

    Raises:
        LabelError: as :func:`read_array_mask`.
    """
    if Path(path).suffix.lower() == MAT_SUFFIX:
        return read_mat_mask(path), False
    return _label_map(path, _load(path))


def _load(path: str | Path) -> np.ndarray:
    try:
        if Path(path).suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as loaded:
            return _archive_array(path, {name: loaded[name] for name in loaded.files})
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise LabelError(f"cannot read mask {path} as a NumPy file: {type(exc).__name__}: {exc}") from exc


def _archive_array(path: str | Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    named = [a for name, a in arrays.items() if name.lower() in MASK_ARRAY_NAMES]
    if len(named) == 1:
        return named[0]
    raise LabelError(
        f"mask {path} holds {len(arrays)} arrays ({', '.join(sorted(arrays)) or 'none'}); expected one, or one "
        f"named {' or '.join(MASK_ARRAY_NAMES)}"
    )


def _label_map(path: str | Path, array: np.ndarray) -> tuple[np.ndarray, bool]:
    whole = array.dtype == bool or np.issubdtype(array.dtype, np.integer)
    if not whole and np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)):
        whole = bool(np.all(array == np.round(array)))
    if not whole:
        raise LabelError(
            f"mask {path} holds {array.dtype} values that are not whole numbers; expected class or instance ids"
        )
    stack = _stack(path, array)
    if stack is None:
        return _smallest(array), False
    ids = np.zeros(stack.shape[1:], np.int64)
    for k, mask in enumerate(stack, start=1):
        ids[mask & (ids == 0)] = k
    return _smallest(ids), True


def _stack(path: str | Path, array: np.ndarray) -> np.ndarray | None:
    """A 3-D array of 0/1 as (objects, H, W) booleans; None for a 2-D map.

    Raises:
        LabelError: another 3-D array, more dimensions, or a one-hot stack of classes."""
    if array.ndim == 2:
        return None
    if array.ndim != 3 or not np.isin(array, (0, 1)).all():
        raise LabelError(
            f"mask {path} holds a {array.shape} array of values other than 0 and 1; expected a 2-D map of class "
            "or instance ids, or a stack of binary masks (one per object) along the first or last axis"
        )
    stack = (np.moveaxis(array, -1, 0) if array.shape[-1] <= array.shape[0] else array).astype(bool)
    if len(stack) > 1 and np.array_equal(stack.sum(0), np.ones(stack.shape[1:])):
        raise LabelError(
            f"mask {path} holds {len(stack)} binary masks that cover every pixel exactly once: one-hot classes, "
            "not objects; save the class map (argmax over the classes) as a 2-D array"
        )
    return stack


def _smallest(array: np.ndarray) -> np.ndarray:
    """Whole-number values in the smallest integer type that holds them (uint8 where 0..255, as a PNG
    mask would store them), so that a plan reads an array's bit depth as that of the picture it stands for."""
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for kind in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(kind)
        if info.min <= low and high <= info.max:
            return array.astype(kind)
    return array.astype(np.int64)

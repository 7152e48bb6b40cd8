"""Decode inspection images (PNG 8/16-bit, TIFF incl. 16-bit and multi-page, JPEG, BMP)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from segops.data.records import ImageRecord, path_case_id
from segops.errors import DecodeError

_GRAY_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "I;16S", "F", "1")
#: The EXIF tag that says how a stored photo is turned for display (1: as stored).
EXIF_ORIENTATION = 0x0112
_COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr")
#: Gray with an alpha channel (a gray PNG exported with transparency): read as gray, alpha dropped.
_GRAY_ALPHA_MODES = ("LA", "La")


def read_image(path: str | Path, rel_path: str, group_by: str = "file") -> list[ImageRecord]:
    """Read an image file as (C, H, W) float32 records, C = 1 (gray) or 3 (RGB), in the split
    group :func:`image_group` gives (``group_by``: the source's rule).

    A multi-page TIFF gives one record per page (``frame``); 16-bit values are kept as is
    (no rescaling to 8 bits), so intensity normalisation sees the real dynamic range. A photo is
    read in the orientation its EXIF ``Orientation`` tag asks for (a phone's portrait shot is
    stored landscape), as labelling tools show it and so as its mask was drawn.

    Raises:
        DecodeError: unreadable, truncated, not an image, or holding NaN/inf pixels.
    """
    try:
        with Image.open(path) as img:
            fmt, n_pages = img.format or "", getattr(img, "n_frames", 1)
            turned = n_pages == 1 and img.getexif().get(EXIF_ORIENTATION, 1) != 1
            frames = [ImageOps.exif_transpose(img)] if turned else ImageSequence.Iterator(img)
            pages = [_finite(_to_array(page), page.mode, index, n_pages) for index, page in enumerate(frames)]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    base_id = path_case_id(rel_path)
    group_id = image_group(rel_path, group_by) or base_id
    return [
        ImageRecord(
            image=array,
            case_id=base_id if len(pages) == 1 else f"{base_id}.{index}",
            group_id=group_id,
            source_uri=str(Path(path).resolve()),
            rel_path=rel_path,
            frame=index,
            modality="XC",  # DICOM's "external-camera photography"
            transfer_syntax=fmt,
            photometric="RGB" if array.shape[0] == 3 else "MONOCHROME2",
        )
        for index, array in enumerate(pages)
    ]


def image_group(rel_path: str, group_by: str) -> str | None:
    """The split group of the image at ``rel_path`` (relative to the source folder) under the rule
    ``group_by`` (see :class:`segops.config.sources.ImageSource`): the file's id for ``file``; the
    folder's relative path for ``folder`` (``.`` for the source folder itself); else the text the
    regular expression's capture group matched, as ``re:<text>``, or None where it does not match (the
    caller keeps the file its own group, and the ingest step names such files)."""
    if group_by == "file":
        return path_case_id(rel_path)
    if group_by == "folder":
        return PurePosixPath(rel_path).parent.as_posix()
    found = re.search(group_by, rel_path)
    return f"re:{found.group(1)}" if found is not None and found.group(1) else None


def _finite(array: np.ndarray, mode: str, index: int, n_pages: int) -> np.ndarray:
    """``array``, checked for NaN/inf where its stored mode can hold them (32-bit float, ``F``): a
    float TIFF's no-data pixels would make every intensity statistic and loss NaN."""
    bad = int(array.size - np.count_nonzero(np.isfinite(array))) if mode == "F" else 0
    if bad:
        where = f" on page {index}" if n_pages > 1 else ""
        raise DecodeError(
            f"{bad} pixel(s){where} are NaN or infinite (a float image's no-data value?); replace them with a "
            "number (e.g. the background value) and run again"
        )
    return array


def _to_array(img: Image.Image) -> np.ndarray:
    img.load()
    if img.mode in _COLOUR_MODES:
        array = np.asarray(img.convert("RGB"), dtype=np.float32)
        return np.ascontiguousarray(np.moveaxis(array, -1, 0))
    if img.mode in _GRAY_ALPHA_MODES:
        return np.asarray(img.getchannel(0), dtype=np.float32)[None]
    if img.mode in _GRAY_MODES:
        return np.asarray(img, dtype=np.float32)[None]
    raise DecodeError(f"unsupported image mode {img.mode!r}")

"""Decode inspection images (PNG, TIFF, JPEG, BMP) into :class:`ImageRecord` s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segops.data.records import ImageRecord, path_case_id
from segops.errors import DecodeError


def read_image(path: str | Path, rel_path: str) -> list[ImageRecord]:
    """Read an image file as one (C, H, W) float32 record: C = 1 (gray) or 3 (RGB).

    Raises:
        DecodeError: unreadable, truncated, or not an image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            array = _to_array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    case_id = path_case_id(rel_path)
    return [
        ImageRecord(
            image=array,
            case_id=case_id,
            group_id=case_id,
            source_uri=str(Path(path).resolve()),
            rel_path=rel_path,
            modality="XC",  # DICOM's "external-camera photography"
            photometric="RGB" if array.shape[0] == 3 else "MONOCHROME2",
        )
    ]


def _to_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
        array = np.asarray(img.convert("RGB"), dtype=np.float32)
        return np.ascontiguousarray(np.moveaxis(array, -1, 0))
    if img.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F", "1"):
        return np.asarray(img, dtype=np.float32)[None]
    raise DecodeError(f"unsupported image mode {img.mode!r}")

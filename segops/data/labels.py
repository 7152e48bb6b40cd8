"""Label readers. Labels are (H, W) uint8 class-index maps aligned with their image."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from segops.errors import LabelError


def mask_png_path(root: str | Path, pattern: str, rel_path: str) -> Path:
    """Where the mask for input ``rel_path`` lives, per ``pattern`` (see ``MaskPngLabels``)."""
    rel = PurePosixPath(rel_path)
    rel_dir = str(rel.parent) if str(rel.parent) != "." else ""
    name = pattern.format(rel_dir=rel_dir, stem=rel.stem, rel_stem=str(rel.with_suffix("")))
    return Path(root) / name.lstrip("/")


def read_mask_png(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a class-index mask; a binary mask stored as {0, 255} becomes {0, 1}.

    Args:
        shape: (H, W) of the image the mask belongs to.

    Raises:
        LabelError: unreadable, not single-channel, or of another size than the image.
    """
    try:
        with Image.open(path) as img:
            mask = np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise LabelError(f"cannot read mask {path}: {exc}") from exc
    if mask.ndim != 2:
        raise LabelError(f"mask {path} has shape {mask.shape}; expected a single-channel (H, W) image")
    if mask.shape != tuple(shape):
        raise LabelError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}")
    values = np.unique(mask)
    if values.max(initial=0) == 255 and set(values.tolist()) <= {0, 255}:
        mask = mask // 255
    return mask.astype(np.uint8)

"""Masks stored at another size than their images: ``segops plan``'s check of the sampled pairs, so a
rescaled set (SCR's 1024² lung masks for JSRT's 2048² radiographs, masks exported from a
downscaled viewer) is planned with ``resize: true`` instead of failing on every file at ingest.
Reads image headers only."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from segops.data.images import EXIF_ORIENTATION
from segops.data.mask_files import ASPECT_TOLERANCE
from segops.data.unannotated import spread

#: Pairs whose sizes are compared.
SAMPLE = 20
#: EXIF orientations that turn a photo a quarter (its width and height swap when shown).
_QUARTER_TURNS = {5, 6, 7, 8}


def rescaled_masks(image_root: Path, label_root: Path, mask_of: dict[str, str], paired: list[str]) -> str | None:
    """Why the masks of the ``paired`` images (relative to ``image_root``; ``mask_of``: each one's mask,
    relative to ``label_root``) are to be resized to their images, or None: of a spread sample, at least 9
    in 10 of the readable pairs differ in size, and every one that differs keeps
    its image's aspect ratio (within :data:`~segops.data.mask_files.ASPECT_TOLERANCE`). A mask of
    another shape (a crop, another image's mask) is left to fail as a label error."""
    pairs = [(image_root / i, label_root / mask_of[i]) for i in spread(paired, SAMPLE)]
    sizes = [s for s in (_sizes(image, mask) for image, mask in pairs) if s is not None]
    other = [(i, m) for i, m in sizes if i != m]
    if not sizes or len(other) < 0.9 * len(sizes):
        return None
    if any(abs((i[0] / m[0]) / (i[1] / m[1]) - 1) > ASPECT_TOLERANCE for i, m in other):
        return None
    (iw, ih), (mw, mh) = other[0]
    return (
        f"{len(other)} of {len(sizes)} sampled masks are of another size than their images but of the same "
        f"aspect ratio (e.g. {mw}x{mh} for a {iw}x{ih} image): resized to their images, nearest neighbour (resize)"
    )


def _sizes(image: Path, mask: Path) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((width, height) of the image as shown, of the mask), or None where either is not a readable image."""
    try:
        with Image.open(image) as img:
            w, h = img.size
            if getattr(img, "n_frames", 1) == 1 and img.getexif().get(EXIF_ORIENTATION, 1) in _QUARTER_TURNS:
                w, h = h, w
        with Image.open(mask) as m:
            return (w, h), m.size
    except (UnidentifiedImageError, OSError):
        return None

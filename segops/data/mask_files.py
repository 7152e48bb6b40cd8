"""Reading one mask file (PNG/TIFF/BMP, a page of a multi-page TIFF, a MATLAB ``.mat``, a NumPy
``.npy``/``.npz``) into a class map or an instance-id map, or a folder of one binary mask per object
into either, checked against its image's size: the file readers behind :mod:`segops.data.labels`
(which finds each record's label) and the label census."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from segops.config.schema import MaskFolderLabels, MaskPngLabels
from segops.config.sources import IGNORE_LABEL
from segops.data.array_masks import is_array_mask, read_array_mask
from segops.data.instances import stack_instances
from segops.data.mask_colours import colour_classes
from segops.data.mask_kinds import as_single_channel, without_void
from segops.data.mask_names import match_pattern
from segops.errors import LabelError


def read_mask_png(
    path: str | Path,
    shape: tuple[int, int] | None,
    page: int = 0,
    values: dict[int, int] | None = None,
    threshold: int | None = None,
    void: int | None = None,
    ignore: bool = False,
    resize: bool = False,
) -> np.ndarray:
    """Read a class-index mask image (PNG/TIFF; page ``page`` of a multi-page TIFF).

    A binary mask stored as {0, 255} becomes {0, 1}, unless ``values`` (stored value → class)
    says otherwise; with ``threshold``, stored value >= threshold is 1, else 0. Pixels stored as
    ``void`` are background (0) first, and need not be listed in ``values``; with ``ignore``
    they end as :data:`~segops.config.sources.IGNORE_LABEL` (left out of the loss and scores).

    Args:
        shape: (H, W) of the image the mask belongs to (None: not checked).
        resize: a rescaled mask is resized to ``shape`` (:func:`resized`) before it is checked.

    Raises:
        LabelError: unreadable, not single-channel, missing page, of another size than the
            image, or with a value ``values`` does not list.
    """
    stored = _read_page(path, page, "mask")
    stored = resized(stored, shape, str(path)) if resize and shape else stored
    label = class_map(without_void(stored, void), shape or stored.shape[:2], str(path), values, threshold)
    if ignore and void is not None:
        label[stored == void] = IGNORE_LABEL
    return label


def spec_mask(spec: MaskPngLabels, path: str | Path, shape: tuple[int, int] | None = None, page: int = 0) -> np.ndarray:
    """The (H, W) uint8 class map of mask file ``path`` as ``spec`` reads it: through ``colors``
    (colour-coded masks), else ``void`` then ``values`` / ``threshold`` (:func:`read_mask_png`).
    ``shape``: its image's (H, W), None when read without it (the label census).

    Raises:
        LabelError: as :func:`read_mask_png`, or a colour mask with colours ``colors`` lacks.
    """
    if spec.colors is None:
        return read_mask_png(path, shape, page, spec.values, spec.threshold, spec.void, spec.ignore_void, spec.resize)
    frame = _read_frame(path, page, "mask")
    frame = resized(frame, shape, str(path)) if spec.resize and shape else frame
    check_size(frame[..., 0] if frame.ndim == 3 else frame, shape or frame.shape[:2], f"mask {path}")
    return colour_classes(frame, spec.colors, str(path))


#: Most the aspect ratios of a mask and its image may differ for :func:`resized` to fit one to the other.
ASPECT_TOLERANCE = 0.02


def resized(mask: np.ndarray, shape: tuple[int, int], where: str) -> np.ndarray:
    """``mask`` (H', W'[, C]) resized to ``shape`` (H, W) by nearest neighbour (stored values kept) where
    their aspect ratios agree within :data:`ASPECT_TOLERANCE`; as it is where the sizes already match.

    Raises:
        LabelError: the aspect ratios differ (a crop or another image's mask, not a rescaled one).
    """
    h, w = mask.shape[:2]
    if (h, w) == tuple(shape):
        return mask
    if abs((shape[0] / h) / (shape[1] / w) - 1) > ASPECT_TOLERANCE:
        raise LabelError(
            f"mask {where} is {w}x{h} but its image is {shape[1]}x{shape[0]}: another aspect ratio, so not "
            "resized (resize fits only a rescaled mask)"
        )
    rows = np.minimum((np.arange(shape[0]) + 0.5) * h / shape[0], h - 1).astype(np.intp)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * w / shape[1], w - 1).astype(np.intp)
    return mask[rows][:, cols]


def mask_parts(path: str | Path) -> list[Path]:
    """The numbered parts beside a mask file (``x_mask_1.png``, ``x_mask_2.png`` … for
    ``x_mask.png``), in number order, up to the first number missing."""
    path = Path(path)
    parts = []
    while (part := path.with_name(f"{path.stem}_{len(parts) + 1}{path.suffix}")).is_file():
        parts.append(part)
    return parts


def spec_mask_with_parts(
    spec: MaskPngLabels, path: str | Path, shape: tuple[int, int] | None = None, page: int = 0
) -> np.ndarray:
    """:func:`spec_mask`, merged with its numbered parts when ``spec.parts``: each pixel the largest
    class of the files (BUSI stores a second lesion in ``x_mask_1.png``)."""
    mask = spec_mask(spec, path, shape, page)
    for part in mask_parts(path) if spec.parts else []:
        mask = np.maximum(mask, spec_mask(spec, part, mask.shape, page))
    return mask


def with_class_files(spec: MaskPngLabels, mask: np.ndarray, rel_path: str, frame: int = 0, page: int = 0) -> np.ndarray:
    """``mask`` (the class map of ``spec.pattern``'s file for input ``rel_path``) with the foreground
    of each of ``spec.class_files`` (a binary mask per class, read as the pattern's file is) set to
    its class, in order; a class file that is missing leaves its class absent.

    Raises:
        LabelError: a class file that cannot be read or does not fit, its ``label_uri`` that file.
    """
    for pattern, k in (spec.class_files or {}).items():
        path = Path(spec.path) / match_pattern(pattern, rel_path, spec.replace, frame)
        if path.is_file():
            try:
                found = spec_mask(spec, path, mask.shape, page)
            except LabelError as exc:
                exc.label_uri = exc.label_uri or str(path.resolve())
                raise
            mask[(found > 0) & (found != IGNORE_LABEL)] = k
    return mask


def read_instance_png(path: str | Path, shape: tuple[int, int] | None, page: int = 0) -> np.ndarray:
    """Read an instance-id image (8/16-bit PNG/TIFF, single channel): (H, W) int64, 0 = background.

    Ids are kept as stored: no {0, 255} → {0, 1} rescaling, no cast to 8 bits.

    Raises:
        LabelError: unreadable, not single-channel, missing page, non-integer or negative ids,
            or of another size than the image (``shape``: None, not checked).
    """
    ids = _read_page(path, page, "instance-id image", soft=False)
    if shape is not None:
        check_size(ids, shape, f"instance-id image {path}")
    if ids.dtype.kind not in "biu":
        raise LabelError(f"instance-id image {path} has {ids.dtype} pixels; expected integer instance ids")
    ids = ids.astype(np.int64)
    if ids.min(initial=0) < 0:
        raise LabelError(f"instance-id image {path} has negative id {ids.min()}; expected 0 (background) or k >= 1")
    return ids


#: Files of a mask folder read as masks (by suffix, case-insensitive); hidden files never.
MASK_FOLDER_EXTS = (".png", ".tif", ".tiff", ".bmp", ".gif", ".jpg", ".jpeg")


def mask_folder_files(folder: str | Path) -> list[Path]:
    """The mask files of a mask folder (see :class:`~segops.config.sources.MaskFolderLabels`), by name."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.suffix.lower() in MASK_FOLDER_EXTS and not p.name.startswith(".") and p.is_file()
    )


def read_mask_folder(spec: MaskFolderLabels, folder: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A folder of one binary mask file per object → (H, W) uint8 class map (the objects' union as
    ``spec.class_id``), or with ``spec.instances`` an int32 instance label map (one instance per
    file with foreground, in name order, a later file on top where two overlap).

    A file's object is its pixels above half its largest value; an all-zero file adds nothing.

    Raises:
        LabelError: a file that cannot be read, is not single-channel or is of another size.
    """
    objects = []
    for path in mask_folder_files(folder):
        mask = _read_page(path, 0, "mask")
        check_size(mask, shape, f"mask {path}")
        top = mask.max(initial=0)
        if top > 0:
            objects.append(mask > top / 2)
    if spec.instances:
        return stack_instances(objects, [spec.class_id] * len(objects), shape)
    union = np.zeros(shape, dtype=np.uint8)
    for mask in objects:
        union[mask] = spec.class_id
    return union


def _read_page(path: str | Path, page: int, what: str, soft: bool = True) -> np.ndarray:
    """Page ``page`` of a single-channel image file, as stored (integers: see :func:`as_single_channel`)."""
    frame = _read_frame(path, page, what)
    array = as_single_channel(frame, soft)
    if array is None:
        raise LabelError(
            f"{what} {path} has shape {frame.shape} with channels that differ (a colour image, e.g. colour-coded "
            "classes); expected one channel or a gray image stored as RGB; for colour-coded classes give "
            "labels.colors ('#rrggbb': class)"
        )
    return array


def _read_frame(path: str | Path, page: int, what: str) -> np.ndarray:
    if is_array_mask(path) and page == 0:  # CrackForest's groundTruth/001.mat
        return read_array_mask(path)
    try:
        with Image.open(path) as img:
            frames = [np.asarray(p) for p in ImageSequence.Iterator(img)]
    except (UnidentifiedImageError, OSError) as exc:
        raise LabelError(f"cannot read {what} {path}: {exc}") from exc
    if page >= len(frames):
        raise LabelError(f"{what} {path} has {len(frames)} page(s); page {page} was asked for")
    return frames[page]


def check_size(array: np.ndarray, shape: tuple[int, int], where: str) -> None:
    if array.shape != tuple(shape):
        raise LabelError(f"{where} is {array.shape[1]}x{array.shape[0]} but its image is {shape[1]}x{shape[0]}")


def class_map(
    mask: np.ndarray,
    shape: tuple[int, int],
    where: str,
    mapping: dict[int, int] | None = None,
    threshold: int | None = None,
) -> np.ndarray:
    """A stored mask → (H, W) uint8 class map: binarised at ``threshold`` (stored >= threshold → 1),
    or through ``mapping`` (stored value → class; every stored value must be listed), else as
    class indices with {0, 255} read as {0, 1}."""
    check_size(mask, shape, f"mask {where}")
    if threshold is not None:
        return (mask >= threshold).astype(np.uint8)
    values = np.unique(mask)
    if mapping is not None:
        unlisted = sorted(set(values.tolist()) - set(mapping))
        if unlisted:
            raise LabelError(f"mask {where} has value(s) {unlisted[:10]} that labels.values does not map to a class")
        lut = np.zeros(int(max(mapping)) + 1, dtype=np.uint8)
        for stored, cls in mapping.items():
            lut[stored] = cls
        return lut[mask]
    if values.max(initial=0) == 255 and set(values.tolist()) <= {0, 255}:
        mask = mask // 255
    if values.max(initial=0) > 255:
        raise LabelError(f"mask {where} has class index {values.max()} (> 255)")
    return mask.astype(np.uint8)

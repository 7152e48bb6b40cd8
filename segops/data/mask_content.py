"""What mask files' contents say about a layout that their names do not: a folder of masks beside
the images' folder under names without a mask word (the Concrete Crack Segmentation set's ``rgb/`` +
``BW/``), and masks that are one region on every image (DRIVE's field-of-view ``mask/`` folder,
which is not a label). Reads at most a few files per folder."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from segops.data.mask_kinds import as_single_channel
from segops.data.mat_masks import is_mat, read_mat_mask
from segops.errors import LabelError

#: Masks compared by :func:`same_region`, and the IoU with the first above which they are one region.
SAME_REGION_SAMPLE, SAME_REGION_IOU = 8, 0.98


def same_region(masks: list[Path]) -> bool:
    """Whether at least 3 of the masks (:data:`SAME_REGION_SAMPLE` read) hold one and the same
    foreground region (IoU ≥ :data:`SAME_REGION_IOU` with the first) covering a fifth of the image or
    more: a field-of-view or region-of-interest mask, which no real label set repeats on every image.
    Foreground: values above 0, or where the masks store no 0 (CrackForest's 1/2, Oxford-IIIT Pet's
    trimaps 1/2/3) every value but the commonest."""
    stored = []
    for path in masks[:: max(1, len(masks) // SAME_REGION_SAMPLE)][:SAME_REGION_SAMPLE]:
        try:
            if is_mat(path):
                stored.append(read_mat_mask(path))
                continue
            with Image.open(path) as img:
                single = as_single_channel(np.asarray(img)) if img.mode not in ("P", "PA") else None
                stored.append(single if single is not None else np.asarray(img.convert("L")))
        except (OSError, UnidentifiedImageError, ValueError, LabelError):
            return False
    if len(stored) < 3 or len({a.shape for a in stored}) > 1:
        return False
    values, counts = np.unique(np.stack(stored), return_counts=True)
    background = 0 if values[0] <= 0 else values[counts.argmax()]
    arrays = [a != background for a in stored]
    if arrays[0].mean() < 0.2:
        return False
    first = arrays[0]
    return all((a & first).sum() >= SAME_REGION_IOU * (a | first).sum() for a in arrays[1:])


#: Files read per folder to judge whether it holds masks; share of shared names two folders need.
CONTENT_SAMPLE, SHARED_NAMES = 6, 0.8
#: A file is mask-like with at most this many values, or this share of its pixels within 1/8 of its range
#: of either end (JPEG noise, anti-aliased edges).
MASK_VALUES, MASK_TWO_VALUE_SHARE = 12, 0.9


def mask_folder_by_content(root: Path, pictures: list[str]) -> tuple[str, str] | None:
    """(mask folder, why), relative to ``root``, where two sibling folders hold files of the same
    names (stems; 80 % of the smaller folder's) and only one of them holds mask-like files (one
    channel, at most 12 values or 90 % of pixels near either end: binary, anti-aliased or JPEG masks):
    masks kept beside the images under a folder name without a mask word (``rgb/`` + ``BW/``,
    ``A/`` + ``B/``). None where no such pair exists; of several, the pair sharing the most names."""
    by_dir: dict[str, list[str]] = {}
    for f in pictures:
        by_dir.setdefault(str(PurePosixPath(f).parent), []).append(f)
    siblings: dict[str, list[str]] = {}
    for d in by_dir:
        if d != "." and len(by_dir[d]) >= 2:
            siblings.setdefault(str(PurePosixPath(d).parent), []).append(d)
    best: tuple[int, str, str] | None = None
    for folders in siblings.values():
        stems = {d: {PurePosixPath(f).stem for f in by_dir[d]} for d in folders[:20]}
        masklike: dict[str, bool] = {}
        for i, a in enumerate(stems):
            for b in list(stems)[i + 1 :]:
                shared = len(stems[a] & stems[b])
                if shared < max(2, SHARED_NAMES * min(len(stems[a]), len(stems[b]))):
                    continue
                for d in (a, b):
                    if d not in masklike:
                        masklike[d] = all(_mask_like(root / f) for f in _sample(by_dir[d]))
                if masklike[a] != masklike[b] and (best is None or shared > best[0]):
                    best = (shared, a if masklike[a] else b, b if masklike[a] else a)
    if best is None:
        return None
    shared, masks, images = best
    return masks, (
        f"{masks} holds mask-like files (one channel, two values or nearly) under the names of {images}'s images "
        f"({shared} shared): masks in a folder named without a mask word"
    )


def _mask_like(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            array = as_single_channel(np.asarray(img)) if img.mode not in ("P", "PA") else np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError):
        return False
    if array is None or array.size == 0:
        return False
    values = np.unique(array)
    if len(values) <= MASK_VALUES:
        return True
    lo, hi = int(values[0]), int(values[-1])  # JPEG or anti-aliased: nearly all pixels near the two ends
    tol = (hi - lo) // 8
    return bool(((array <= lo + tol) | (array >= hi - tol)).mean() >= MASK_TWO_VALUE_SHARE)


def mask_suffix_by_content(root: Path, pictures: list[str]) -> tuple[str, list[str], str] | None:
    """(mask suffix, other readers' suffixes, why) where most images ``x.jpg`` have a file
    ``x<suffix>`` beside them (the suffix after ``_``, ``-`` or ``.``, with its extension) whose files
    are mask-like (:func:`_mask_like`) while the images are not: CHASE_DB1's ``Image_01L.jpg`` with
    ``Image_01L_1stHO.png`` and ``Image_01L_2ndHO.png``, two observers' vessels. Of several such
    suffixes the first in name order is the label; the others are another reader's masks. None
    otherwise."""
    stems = {str(PurePosixPath(p).with_suffix("")): p for p in pictures}
    found: dict[str, list[str]] = {}  # suffix with extension → the images that have a file with it
    for p in pictures:
        rel = str(PurePosixPath(p).with_suffix(""))
        for cut in range(rel.rfind("/") + 2, len(rel)):
            if rel[cut] in "_-." and (base := stems.get(rel[:cut])) is not None:
                found.setdefault(rel[cut:] + PurePosixPath(p).suffix, []).append(base)
    images = sorted({b for bases in found.values() for b in bases})
    common = sorted(t for t, bases in found.items() if len(bases) >= max(2, SHARED_NAMES * len(images)))
    if not common or any(_mask_like(root / p) for p in _sample(images)):
        return None
    masks = [t for t in common if all(_mask_like(root / (_without_suffix(b) + t)) for b in _sample(found[t]))]
    if not masks:
        return None
    why = f"{len(found[masks[0]])} of {len(images)} images have a mask-like file <image>{masks[0]} beside them" + (
        f"; {', '.join(masks[1:])} too: another reader's masks, left out" if masks[1:] else ""
    )
    return masks[0], masks[1:], why


def _without_suffix(rel_path: str) -> str:
    """A relative path without its suffix."""
    return str(PurePosixPath(rel_path).with_suffix(""))


def _sample(paths: list[str]) -> list[str]:
    return paths[:: max(1, len(paths) // CONTENT_SAMPLE)][:CONTENT_SAMPLE]

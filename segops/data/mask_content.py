"""What mask files' contents say about a layout that their names do not: a folder of masks beside
the images' folder under names without a mask word (the Concrete Crack Segmentation set's ``rgb/`` +
``BW/``), a mask pattern read off examples of mask-like files named after their images (CHASE_DB1's
``_1stHO.png``, PH2's ``<case>_lesion/`` folders), and masks that are one region on every image
(DRIVE's field-of-view ``mask/`` folder, which is not a label). Reads at most a few files per folder
or pattern."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from segops.data.array_masks import is_array_mask, read_array_mask
from segops.data.class_folders import SAME_STRUCTURE_IOU, mean_iou
from segops.data.mask_kinds import as_single_channel
from segops.data.mask_names import match_pattern, name_id
from segops.data.unannotated import spread
from segops.errors import LabelError

#: Masks compared by :func:`same_region`, and the IoU with the first above which they are one region.
SAME_REGION_SAMPLE, SAME_REGION_IOU = 8, 0.98


def same_region(masks: list[Path]) -> bool:
    """Whether at least 3 of the masks (:data:`SAME_REGION_SAMPLE` read) hold one and the same
    foreground region (IoU ≥ :data:`SAME_REGION_IOU` with the first) covering a fifth of the image or
    more, in one value: a field-of-view or region-of-interest mask, which no real label set repeats on
    every image.
    Foreground: values above 0, or where the masks store no 0 (CrackForest's 1/2, Oxford-IIIT Pet's
    trimaps 1/2/3) every value but the commonest."""
    stored = []
    for path in masks[:: max(1, len(masks) // SAME_REGION_SAMPLE)][:SAME_REGION_SAMPLE]:
        try:
            if is_array_mask(path):
                stored.append(read_array_mask(path))
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
    if arrays[0].mean() < 0.2 or not all(_one_value(a[m]) for a, m in zip(stored, arrays, strict=True)):
        return False
    first = arrays[0]
    return all((a & first).sum() >= SAME_REGION_IOU * (a | first).sum() for a in arrays[1:])


def _one_value(foreground: np.ndarray) -> bool:
    """Whether one value covers nearly all of a mask's foreground pixels, as a region mask's does;
    a dense class map (CamVid's colours, whose black void may be small or absent) holds several."""
    if not foreground.size:
        return True
    _, counts = np.unique(foreground, return_counts=True)
    return counts.max() >= 0.95 * foreground.size


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
                        masklike[d] = all(_mask_like(root / f) for f in spread(by_dir[d], CONTENT_SAMPLE))
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


def mask_pattern_by_example(root: Path, pictures: list[str]) -> tuple[str, list[str], str] | None:
    """(mask pattern, ``exclude`` globs, why) where most images have a mask-like file (:func:`_mask_like`)
    whose path is the image's under one pattern (:func:`_example_pattern`: the image's name in its
    name, a folder of the image's or the one above it), though no name rule finds it: CHASE_DB1's
    ``Image_01L.jpg`` + ``Image_01L_1stHO.png`` (``{rel_stem}_1stHO.png``), PH2's
    ``IMD002/IMD002_Dermoscopic_Image/IMD002.bmp`` + ``IMD002/IMD002_lesion/IMD002_lesion.bmp``
    (``{parent_dir}/{stem}_lesion/{stem}_lesion.bmp``). Of several such patterns the one that finds
    the most masks, then the first in name order, is the label; the others' files (a second observer's
    ``_2ndHO.png``, PH2's ``_roi/`` masks) are excluded; masks that are one region on every image (a
    field of view) are no label. None where no pattern finds masks for half the
    images, where the images look like masks too, or where patterns that differ only in a number name
    masks of different regions (``x_0.png``, ``x_1.png``: one object each, none to be dropped)."""
    by_stem: dict[str, list[str]] = {}
    for p in pictures:
        by_stem.setdefault(PurePosixPath(p).stem, []).append(p)
    found: dict[str, dict[str, str]] = {}  # pattern → image → its file
    for q in pictures:
        stem = PurePosixPath(q).stem
        for cut in [i for i, ch in enumerate(stem) if ch in _SEPARATORS] + [len(stem)]:
            for image in by_stem.get(stem[:cut], []) if cut >= MIN_STEM else []:
                pattern = _example_pattern(image, q)
                if pattern is not None:
                    found.setdefault(pattern, {})[image] = q
    derived = {q for files in found.values() for q in files.values()}
    images = sorted({i for files in found.values() for i in files} - derived)
    commonest = sorted(found.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:MAX_PATTERNS]  # a few files read each
    masklike = [
        pattern
        for pattern, files in commonest
        if len(files) >= 2 and all(_mask_like(root / files[i]) for i in spread(sorted(files), CONTENT_SAMPLE))
    ]
    masklike = [p for p in masklike if not same_region([root / f for f in sorted(found[p].values())])]
    if not images or not masklike or len(found[masklike[0]]) < MIN_EXAMPLE_SHARE * len(images):
        return None
    if any(_mask_like(root / p) for p in spread(images, CONTENT_SAMPLE)):
        return None
    chosen, others = masklike[0], masklike[1:]
    numbered = [o for o in others if re.sub(r"\d+", "#", o) == re.sub(r"\d+", "#", chosen)]
    if any((mean_iou(root, chosen, o, images, None) or 0.0) < SAME_STRUCTURE_IOU for o in numbered):
        return None  # x_0.png, x_1.png: one object each, not readers of one structure; none may be dropped
    globs = [as_glob(o) for o in others]
    why = f"{len(found[chosen])} of {len(images)} images have a mask-like file at {chosen}" + (
        f"; those at {', '.join(others)} are left out (another reader's or region masks)" if others else ""
    )
    return chosen, globs, why


#: Stem length an image's name needs before it is looked for in other files' names (not "1" in "11_mask").
MIN_STEM = 3
#: Share of the images a pattern found by example must give a mask; patterns (the commonest) whose files are read.
MIN_EXAMPLE_SHARE, MAX_PATTERNS = 0.5, 10
_SEPARATORS = "_-. "


def _example_pattern(image: str, other: str, by_id: bool = False) -> str | None:
    """The mask pattern that names ``other`` for ``image`` (both relative): the image's path without
    suffix, its folder or the folder above it as the head (``{rel_stem}``, ``{rel_dir}``,
    ``{parent_dir}``), its name where it recurs (``{stem}``) and, ``by_id``, its id (the name's first
    word, :func:`segops.data.mask_names.name_id`) where it recurs as a word (``{id}``); None unless the
    pattern names exactly ``other`` back (:func:`segops.data.mask_names.match_pattern`) and uses a field."""
    rel = PurePosixPath(image)
    if other == image:
        return None
    heads = [("{rel_stem}", str(rel.with_suffix(""))), ("{rel_dir}/", str(rel.parent) + "/")]
    heads += [("{parent_dir}/", str(rel.parent.parent) + "/")] if str(rel.parent) != "." else []
    head, rest = next(
        ((f, other[len(v) :]) for f, v in heads if v not in ("./", "") and other.startswith(v)), ("", other)
    )
    rest = rest.replace(rel.stem, "{stem}")
    if by_id:
        rest = re.sub(rf"(?<![A-Za-z0-9]){re.escape(name_id(rel.stem))}(?![A-Za-z0-9])", "{id}", rest)
    pattern = head + rest
    if "{" not in pattern or "{" in other or "}" in other:
        return None
    return pattern if match_pattern(pattern, image) == other else None


def as_glob(pattern: str) -> str:
    """A mask pattern as an ``exclude`` glob matching the files it names for any image."""
    glob = pattern.replace("{rel_stem}", "**/*").replace("{rel_dir}/", "**/").replace("{parent_dir}/", "**/")
    return glob.replace("{stem}", "*").replace("{id}", "*")


#: Folders of pictures beyond which :func:`mask_pattern_by_id` looks no further (DRIVE has eight).
MAX_ID_FOLDERS = 40


def mask_pattern_by_id(root: Path, pictures: list[str], sample: int = 60) -> tuple[str, list[str], str] | None:
    """(mask pattern, ``include`` globs, why) for masks that share no more than an id with their images,
    the names' first word (:func:`segops.data.mask_names.name_id`): DRIVE's
    ``training/images/21_training.tif`` + ``training/1st_manual/21_manual1.gif`` →
    ``{parent_dir}/1st_manual/{id}_manual1.gif``. The images are the files of folders whose files are not
    mask-like, each id once in its folder and holding a digit; the masks, files of mask-like folders. Of
    the patterns that name a mask for at least half the sampled images, the one naming the most whose masks
    are not one region on every image (DRIVE's field-of-view ``mask/``) wins, then the first in name order
    (``1st_manual`` before ``2nd_manual``); ``include`` reads the image folders only. Only patterns that
    use ``{id}`` qualify: a mask named with the image's whole name is the example rule's to judge. None
    where no pattern qualifies."""
    by_dir: dict[str, list[str]] = {}
    for f in pictures:
        by_dir.setdefault(str(PurePosixPath(f).parent), []).append(f)
    if len(by_dir) > MAX_ID_FOLDERS:  # a folder per case is no layout of this rule; three files read per folder
        return None
    masklike = {d: all(_mask_like(root / f) for f in spread(fs, 3)) for d, fs in by_dir.items()}
    image_dirs = sorted(d for d in by_dir if not masklike[d])
    for d in image_dirs:
        ids = [name_id(PurePosixPath(f).stem) for f in by_dir[d]]
        if len(set(ids)) < len(ids) or not all(any(c.isdigit() for c in i) for i in ids):
            return None
    by_id: dict[str, list[str]] = {}
    for d in (d for d in by_dir if masklike[d]):
        for f in by_dir[d]:
            by_id.setdefault(name_id(PurePosixPath(f).stem), []).append(f)
    images = spread(sorted(f for d in image_dirs for f in by_dir[d]), sample)
    found: dict[str, dict[str, str]] = {}
    for image in images:
        for q in by_id.get(name_id(PurePosixPath(image).stem), []):
            pattern = _example_pattern(image, q, by_id=True)
            if pattern is not None:
                found.setdefault(pattern, {})[image] = q
    ranked = sorted(found.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:MAX_PATTERNS]
    chosen = next(
        (
            (pattern, files)
            for pattern, files in ranked
            if "{id}" in pattern  # names that share more are the example rule's (x_0.png, x_1.png: objects)
            and len(files) >= MIN_EXAMPLE_SHARE * len(images)
            and not same_region([root / f for f in sorted(files.values())])
        ),
        None,
    )
    if not images or chosen is None:
        return None
    names = {PurePosixPath(d).name for d in image_dirs}
    include = [f"**/{names.pop()}/*"] if len(names) == 1 else [f"{d}/*" for d in image_dirs]
    if len(include) > 20:
        return None
    why = (
        f"{len(chosen[1])} of {len(images)} sampled images have a mask-like file at {chosen[0]} (their names share "
        "the id, their first word)"
    )
    return chosen[0], include, why

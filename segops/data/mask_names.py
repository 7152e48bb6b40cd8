"""Which file is whose mask, from names alone: mask folders, mask file patterns, defect-free
folders, stray figures, and the image/mask folder pair of a tree (the name rules behind
:mod:`segops.data.pairing`). No file is opened: names, and whether a folder exists."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path, PurePosixPath

from segops.data.mask_kinds import LOSSY_MASK_EXTS

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
MASK_EXTS = (".png", ".tif", ".tiff", ".bmp")
MASK_DIRS = (
    "masks",
    "mask",
    "labels",
    "label",
    "gt",
    "groundtruth",
    "ground_truth",
    "annotations",
    "annotation",
    "segmentations",
    "segmentation",
    "seg",
    "segs",
    "targets",
    "target",
    "instances",
)
#: Words that make a folder name a mask folder beyond :data:`MASK_DIRS` (``PedMasks``, ``SegmentationClass``).
MASK_WORDS = re.compile(r"mask|label|annot|ground[ _-]?truth|segmentation|(?<![a-z])(gts?|lab|labs)(?![a-z])")
MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "_seg", "_segmentation", "-mask", "-label")
#: Unpaired image files with these words in their name are overview figures, not data.
STRAY_WORDS = re.compile(r"readme|overview|dataset|example|sample|preview|figure|montage|thumb|license", re.IGNORECASE)
#: Folder names of defect-free samples (MVTec AD's ``good``): their images' missing masks are empty masks.
NORMAL_DIR = re.compile(
    r"(.*[-_ ])?(good|ok|okay|normal|negatives?|clean|nominal|free"
    r"|defect[-_ ]?free|no[-_ ]?defects?|non[-_ ]?defective)"
)
#: Image and mask folders a parallel-tree level pairs against each other (the most image-like first).
MAX_CANDIDATE_DIRS = 6
GLOB_CHARS = re.compile(r"[*?\[\]]")


def match_pattern(pattern: str, image: str) -> str:
    """The mask path ``pattern`` names for image ``image`` (both relative, POSIX)."""
    rel = PurePosixPath(image)
    rel_dir = str(rel.parent) if str(rel.parent) != "." else ""
    return pattern.format(rel_dir=rel_dir, stem=rel.stem, rel_stem=str(rel.with_suffix("")), frame=0).lstrip("/")


def mask_patterns(masks: set[str]) -> list[str]:
    """Candidate mask patterns for the mask files ``masks``, most usual first: ``{rel_stem}<suffix><ext>``
    for :data:`MASK_SUFFIXES` x :data:`MASK_EXTS`; the same in the case the files use (KolektorSDD2's
    ``_GT``, DAGM's ``.PNG``); and ``{rel_dir}/<folder>/{stem}<suffix><ext>`` for a mask folder inside
    the images' folder (DAGM's ``Train/Label/0576_label.PNG`` for ``Train/0576.PNG``)."""
    exts = {PurePosixPath(m).suffix for m in masks}
    stems = {PurePosixPath(m).stem for m in masks}
    tails = [
        (suffix, ext)
        for suffix in MASK_SUFFIXES
        for ext in MASK_EXTS
        if ext in exts  # the lower-case candidates, in the usual order
    ]
    tails += [(suffix, ext) for ext in LOSSY_MASK_EXTS for suffix in MASK_SUFFIXES if ext in exts]  # Kvasir-SEG
    for suffix in MASK_SUFFIXES:
        for variant in dict.fromkeys((suffix.upper(), suffix.title())):
            if variant != suffix and any(stem.endswith(variant) for stem in stems):
                tails += [(variant, ext) for ext in MASK_EXTS if ext in exts]
    for ext in MASK_EXTS:
        if ext.upper() in exts:
            tails += [(v, ext.upper()) for suffix in MASK_SUFFIXES for v in dict.fromkeys((suffix, suffix.upper()))]
    patterns = [f"{{rel_stem}}{suffix}{ext}" for suffix, ext in dict.fromkeys(tails)]
    subfolders = sorted({PurePosixPath(m).parent.name for m in masks} - {""})
    for sub in [d for d in subfolders if is_mask_dir(d) and "{" not in d and "}" not in d][:3]:
        patterns += [f"{{rel_dir}}/{sub}/{{stem}}{suffix}{ext}" for suffix, ext in dict.fromkeys(tails)]
    return patterns


def best_pattern(images: list[str], masks: set[str], same_folder: bool = False) -> tuple[str | None, int]:
    """The mask pattern (of :func:`mask_patterns`) that finds a mask for the most images, and how many.

    With ``same_folder`` (masks and images in one tree) an image is never its own mask; on a
    tie the earlier candidate (no suffix, ``.png``) wins.
    """
    best: tuple[str | None, int] = (None, 0)
    for pattern in mask_patterns(masks):
        hits = sum(1 for i in images if (m := match_pattern(pattern, i)) in masks and not (same_folder and m == i))
        if hits > best[1]:
            best = (pattern, hits)
    return best


def is_mask_dir(name: str) -> bool:
    """A folder named like masks: :data:`MASK_DIRS`, or a name with a mask word in it
    (``PedMasks``, ``SegmentationClass``, ``GroundTruth``, ``train_labels``)."""
    lower = name.lower()
    return lower in MASK_DIRS or MASK_WORDS.search(lower) is not None


def normal_folders(images: list[str], paired: set[str]) -> list[str]:
    """Folders (relative) whose images all lack a mask and whose name says they hold defect-free
    samples (:data:`NORMAL_DIR`: MVTec AD's ``good``, ``ok``, ``normal``, ``defect_free`` …),
    while other images have masks: their missing masks mean "nothing to segment"."""
    if not paired:
        return []
    by_dir: dict[str, list[str]] = {}
    for i in images:
        by_dir.setdefault(str(PurePosixPath(i).parent), []).append(i)
    return sorted(
        d
        for d, members in by_dir.items()
        if d != "."
        and NORMAL_DIR.fullmatch(PurePosixPath(d).name.lower())
        and not GLOB_CHARS.search(d)
        and not any(i in paired for i in members)
    )


def stray_files(images: list[str], paired: set[str]) -> list[str]:
    """Unpaired image files that are not data: overview figures (README, dataset, example...) or
    files in a folder where no image has a mask, when at least half of the images are paired."""
    if len(paired) < len(images) / 2:
        return []
    paired_dirs = {str(PurePosixPath(p).parent) for p in paired}
    return [
        i
        for i in images
        if i not in paired
        and (STRAY_WORDS.search(PurePosixPath(i).stem) or str(PurePosixPath(i).parent) not in paired_dirs)
    ]


def _under(files: list[str], parent: str, folder: str, exts: tuple[str, ...]) -> list[str]:
    """Files of ``parent/folder`` with one of ``exts``, relative to that folder."""
    prefix = "/".join(p for p in (parent, folder) if p) + "/"
    return [f[len(prefix) :] for f in files if f.startswith(prefix) and PurePosixPath(f).suffix.lower() in exts]


def _image_like(name: str, count: int) -> tuple[bool, int]:
    """Sort key of an image folder: an image-like name (``images``, ``PNGImages``, ``input``), then size."""
    lower = name.lower()
    return lower.startswith(("image", "img", "input")) or "image" in lower, count


def parallel_tree(root: Path, files: list[str]) -> tuple[str, str, list[str]] | None:
    """(image folder, mask folder, other datasets) relative to ``root``: sibling folders, one named
    like a mask folder.

    At the shallowest level that has such siblings, the pair whose images find the most masks
    (:func:`best_pattern`) wins, so a folder of text annotations beside the mask folder
    (PennFudan's ``Annotation`` beside ``PedMasks``) or an image folder without masks (MVTec's
    ``train`` beside ``test`` and ``ground_truth``) is not chosen; with no pair that finds a
    mask there, deeper levels are tried, and with none anywhere the first level's first mask-named
    folder and most image-like sibling are returned (for the error message). At most
    :data:`MAX_CANDIDATE_DIRS` folders of each kind are paired per level. Where several folders
    of one level each hold such a pair (MVTec AD's root: ``bottle/``, ``screw/``, … each with
    ``test/`` and ``ground_truth/``), they are separate datasets: the one that pairs the most
    files is chosen, and the others are returned as the third item.
    """
    tops: dict[str, Counter] = {}
    for f in files:
        parts = PurePosixPath(f).parts
        for depth in range(min(3, len(parts) - 1)):
            parent, child = "/".join(parts[:depth]), parts[depth]
            tops.setdefault(parent, Counter())[child] += 1
    fallback: tuple[str, str, list[str]] | None = None
    found: list[tuple[int, str, str, str]] = []  # (hits, parent, image folder, mask folder) at one level
    for parent in sorted(tops, key=lambda p: (len(PurePosixPath(p).parts), p)):  # shallowest first
        if found and len(PurePosixPath(parent).parts) > len(PurePosixPath(found[0][1]).parts):
            break
        children = tops[parent]
        masks = [c for c in children if is_mask_dir(c) and (root / parent / c).is_dir()]
        others = [c for c in children if c not in masks and (root / parent / c).is_dir()]
        if not (masks and others):
            continue
        others.sort(key=lambda c: _image_like(c, children[c]), reverse=True)
        fallback = fallback or (_join(parent, others[0]), _join(parent, masks[0]), [])
        scored = [
            (
                best_pattern(
                    _under(files, parent, i, IMAGE_EXTS), set(_under(files, parent, m, MASK_EXTS + LOSSY_MASK_EXTS))
                )[1],
                _image_like(i, children[i]),
                i,
                m,
            )
            for m in masks[:MAX_CANDIDATE_DIRS]
            for i in others[:MAX_CANDIDATE_DIRS]
        ]
        hits, _, image_dir, mask_dir = max(scored, key=lambda t: (t[0], t[1]))
        if hits:
            found.append((hits, parent, image_dir, mask_dir))
    if not found:
        return fallback
    _, parent, image_dir, mask_dir = min(found, key=lambda t: (-t[0], t[1]))  # most masks, then by name
    return _join(parent, image_dir), _join(parent, mask_dir), sorted(p for _, p, _, _ in found if p != parent)


def _join(parent: str, folder: str) -> str:
    return "/".join(p for p in (parent, folder) if p)

"""Which file is whose mask, from names alone: mask folders, mask file patterns, defect-free
folders and stray figures (the name rules behind :mod:`segops.data.pairing`). Pure: no file is
opened."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

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

"""``segops plan`` for binary masks kept in a folder per class under the same names: Montgomery's
chest X-rays (``ManualMask/leftMask/x.png`` and ``ManualMask/rightMask/x.png``), JSRT's SCR masks
(``heart/``, ``left lung/`` …). The pairing finds one of those folders; left alone, the plan would
train the first class and teach every other one as background. Here the folders beside the paired
one that hold a mask for most of the same images become ``class_files`` (classes 2, 3 … in name
order), unless their masks cover the same region as the paired ones: then they are another
reader's outlines of the same structure (DRIVE's ``1st_manual`` / ``2nd_manual``), named in the
note and not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segops.data.mask_files import read_mask_png
from segops.data.mask_names import match_pattern
from segops.data.unannotated import spread
from segops.errors import LabelError

#: Share of the sampled images a folder beside the paired one must hold a mask for (same name).
MIN_SHARE = 0.5
#: Mean IoU with the paired masks from which a folder's masks are another reader's of the same structure.
SAME_STRUCTURE_IOU = 0.5
#: Folders beside the paired one looked at, images sampled for the share, mask pairs read for the IoU.
MAX_FOLDERS, SAMPLE, IOU_PAIRS = 32, 200, 8


@dataclass(frozen=True)
class ClassFolders:
    """What :func:`class_folders` found: ``class_files`` (pattern → class) and names of classes 1..K."""

    class_files: dict[str, int]
    names: dict[int, str]
    note: str
    readers: list[str] = field(default_factory=list)  # folders of the same structure, not used


def class_folders(
    label_root: Path, pattern: str, paired: list[str], replace: dict[str, str] | None = None
) -> ClassFolders | None:
    """The per-class mask folders beside the folder that ``pattern`` (relative to ``label_root``)
    names, for the images ``paired`` (those with a mask under ``pattern``); None where the pattern
    names no folder of its own, or no folder beside it holds masks of the same images."""
    segments = pattern.split("/")
    literal = [i for i, s in enumerate(segments[:-1]) if s and "{" not in s and "}" not in s]
    if not literal or not paired:
        return None
    at = literal[-1]  # the innermost named folder: leftMask in {rel_dir}/leftMask/{stem}.png
    folder = _named_folder(label_root / match_pattern(pattern, paired[0], replace), segments[at])
    if folder is None:
        return None
    sample = spread(paired, SAMPLE)
    beside: list[tuple[str, str]] = []
    for other in sorted(p.name for p in folder.parent.iterdir() if p.is_dir() and not p.name.startswith("."))[
        :MAX_FOLDERS
    ]:
        if other == folder.name or "{" in other or "}" in other:
            continue
        candidate = "/".join([*segments[:at], other, *segments[at + 1 :]])
        if any(match_pattern(candidate, i, replace) == i for i in sample[:3]):
            continue  # the images' own folder (MVTec 3D-AD's rgb/ beside gt/): no class
        hits = sum((label_root / match_pattern(candidate, i, replace)).is_file() for i in sample)
        if hits >= MIN_SHARE * len(sample):
            beside.append((other, candidate))
    if not beside:
        return None
    classes: list[tuple[str, str]] = []
    readers: list[str] = []
    for other, candidate in beside:
        iou = mean_iou(label_root, pattern, candidate, sample, replace)
        (readers if iou is not None and iou >= SAME_STRUCTURE_IOU else classes).append((other, candidate))
    names = {1: folder.name} | {k: other for k, (other, _) in enumerate(classes, start=2)}
    class_files = {candidate: k for k, (_, candidate) in enumerate(classes, start=2)}
    note = ""
    if classes:
        note = (
            f"; a folder per class: {', '.join(names.values())} hold binary masks of the same images (classes "
            f"1..{len(names)} in that order, later on top where they overlap)"
        )
    if readers:
        note += (
            f"; {', '.join(r for r, _ in readers)} hold masks of the same region as {folder.name} (another reader's "
            "outlines?): not used"
        )
    return ClassFolders(class_files, names, note, [r for r, _ in readers])


def _named_folder(mask: Path, name: str) -> Path | None:
    """The nearest folder above ``mask`` called ``name``, where it exists."""
    for parent in mask.parents:
        if parent.name == name:
            return parent if parent.is_dir() else None
    return None


def mean_iou(
    root: Path, pattern: str, candidate: str, sample: list[str], replace: dict[str, str] | None
) -> float | None:
    """Mean foreground IoU of the two patterns' masks (relative to ``root``) over up to :data:`IOU_PAIRS`
    sampled images with both (pairs where both are empty, or either is unreadable, are skipped); None without any."""
    ious: list[float] = []
    for image in sample:
        if len(ious) >= IOU_PAIRS:
            break
        paths = [root / match_pattern(p, image, replace) for p in (pattern, candidate)]
        if not all(p.is_file() for p in paths):
            continue
        try:
            a, b = (read_mask_png(p, None) > 0 for p in paths)
        except LabelError:
            continue
        if a.shape != b.shape or not (union := int((a | b).sum())):
            continue
        ious.append(int((a & b).sum()) / union)
    return float(np.mean(ious)) if ious else None

"""Datasets stored as split folders, planned as one dataset: ``train/`` + ``train_labels/``,
``val/`` + ``val_labels/`` (Massachusetts Roads), or ``train/images`` + ``train/masks``, ``valid/…``,
``test/…`` (Kaggle and Roboflow exports). segops draws its own seeded split from them all. Pure:
names and ``is_file`` checks only (see :mod:`segops.data.pairing`)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from segops.data.globs import path_selected
from segops.data.mask_names import match_pattern

#: Folder names of a dataset's splits (``train``, ``valid``, ``test2017`` …).
SPLIT_NAMES = re.compile(r"(train|training|val|valid|validation|dev|test|testing|eval)([-_ ]?[0-9]+)?")
#: Mask folder names made of an image folder's name and one of these (``train`` → ``train_labels``).
SPLIT_MASK_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_gt", "_annotations", "-labels", "-masks")


def split_folders(
    root: Path, images: list[str], image_root: Path, label_root: Path, pattern: str
) -> tuple[Path, str, int, list[str]] | None:
    """(parent, pattern, masks found) where the chosen image and mask folders are siblings named
    ``<split>`` and ``<split><suffix>`` (:data:`SPLIT_MASK_SUFFIXES`) and the other splits beside them
    follow suit (Massachusetts Roads' ``train/`` + ``train_labels/``, ``val/`` + ``val_labels/`` …):
    then the splits are one dataset, read from the parent with ``{rel_dir}<suffix>/…``; else None."""
    suffix = label_root.name[len(image_root.name) :]
    if image_root.parent != label_root.parent or not label_root.name.startswith(image_root.name):
        return None
    if suffix not in SPLIT_MASK_SUFFIXES or "{rel_stem}" not in pattern:
        return None
    parent = image_root.parent
    combined = "{rel_dir}" + suffix + "/" + pattern.replace("{rel_stem}", "{stem}")
    base = parent.relative_to(root).as_posix() + "/" if parent != root else ""
    under = [f[len(base) :] for f in images if f.startswith(base) and PurePosixPath(f[len(base) :]).parent.name]
    hits = sum(1 for i in under if (parent / match_pattern(combined, i)).is_file())
    return parent, combined, hits, []


def split_pairs(
    root: Path, images: list[str], image_root: Path, label_root: Path, pattern: str, siblings: list[str]
) -> tuple[Path, str, int, list[str]] | None:
    """(parent, pattern, masks found, include) where the chosen pair's folder and the "separate
    datasets" beside it are named as splits (``train/images`` + ``train/masks``, ``valid/…``,
    ``test/…``, as Kaggle and Roboflow export): one dataset, read from their parent with
    ``include: ["*/images/**"]`` and ``{parent_dir}/masks/{stem}…``; else None."""
    split_dir = image_root.parent
    if not siblings or label_root.parent != split_dir or "{rel_stem}" not in pattern:
        return None
    names = [split_dir.name] + [PurePosixPath(s).name for s in siblings]
    if not all(SPLIT_NAMES.fullmatch(n.lower()) for n in names):
        return None
    parent = split_dir.parent
    include = [f"*/{image_root.name}/**"]
    combined = "{parent_dir}/" + label_root.name + "/" + pattern.replace("{rel_stem}", "{stem}")
    base = parent.relative_to(root).as_posix() + "/" if parent != root else ""
    under = [f[len(base) :] for f in images if f.startswith(base) and path_selected(f[len(base) :], include)]
    hits = sum(1 for i in under if (parent / match_pattern(combined, i)).is_file())
    return parent, combined, hits, include

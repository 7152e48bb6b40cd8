"""Datasets stored as split folders, planned as one dataset: ``train/`` + ``train_labels/``,
``val/`` + ``val_labels/`` (Massachusetts Roads), ``train_img/`` + ``train_lab/``, ``test_img/`` +
``test_lab/`` (DeepCrack), or ``train/images`` + ``train/masks``, ``valid/…``, ``test/…`` (Kaggle
and Roboflow exports). segops draws its own seeded split from them all. Pure: names and
``is_file`` checks only (see :mod:`segops.data.pairing`)."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from segops.data.globs import path_selected
from segops.data.mask_names import is_mask_dir, match_pattern

#: Folder names of a dataset's splits (``train``, ``valid``, ``test2017`` …).
SPLIT_NAMES = re.compile(r"(train|training|val|valid|validation|dev|test|testing|eval)([-_ ]?[0-9]+)?")
#: Mask folder names made of an image folder's name and one of these (``train`` → ``train_labels``).
SPLIT_MASK_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_gt", "_annotations", "-labels", "-masks")


class SplitLayout(NamedTuple):
    """Split folders read as one dataset: the folder they are read from, the mask pattern, how many
    of their images it finds a mask for, the ``include`` globs of the image folders (empty: all)
    and the labels' ``replace`` (image folder → mask folder)."""

    parent: Path
    pattern: str
    hits: int
    include: list[str]
    replace: dict[str, str]
    others: tuple[str, ...] = ()  # other datasets beside it (MVTec 3D-AD's other categories), relative to the root


def split_folders(
    root: Path, images: list[str], image_root: Path, label_root: Path, pattern: str
) -> SplitLayout | None:
    """The split folders' layout where the chosen image and mask folders are siblings named
    ``<split>`` and ``<split><suffix>`` (:data:`SPLIT_MASK_SUFFIXES`) and the other splits beside them
    follow suit (Massachusetts Roads' ``train/`` + ``train_labels/``, ``val/`` + ``val_labels/`` …):
    then the splits are one dataset, read from the parent with ``{rel_dir}<suffix>/…``; or siblings
    named ``<split><image word>`` and ``<split><mask word>`` (:func:`_worded_splits`); else None."""
    suffix = label_root.name[len(image_root.name) :]
    if image_root.parent != label_root.parent or "{rel_stem}" not in pattern:
        return None
    if not label_root.name.startswith(image_root.name):
        return _worded_splits(root, images, image_root, label_root, pattern)
    if suffix not in SPLIT_MASK_SUFFIXES:
        return None
    parent = image_root.parent
    combined = "{rel_dir}" + suffix + "/" + pattern.replace("{rel_stem}", "{stem}")
    base = parent.relative_to(root).as_posix() + "/" if parent != root else ""
    under = [f[len(base) :] for f in images if f.startswith(base) and PurePosixPath(f[len(base) :]).parent.name]
    hits = sum(1 for i in under if (parent / match_pattern(combined, i)).is_file())
    return SplitLayout(parent, combined, hits, [], {})


def _split_word(a: str, b: str) -> tuple[str, str] | None:
    """(word of ``a``, word of ``b``) where the two folder names share a split name at their start
    (``train_img``, ``train_lab``) or end (``images_train``, ``masks_train``) and differ in the rest."""
    for flip in (False, True):
        x, y = (a[::-1], b[::-1]) if flip else (a, b)
        common = os.path.commonprefix([x.lower(), y.lower()])
        for n in range(min(len(common), len(x) - 1, len(y) - 1), 0, -1):  # the longest whole split word
            if x[n - 1] in "-_ " or x[n] in "-_ ":
                split = x[:n][::-1] if flip else x[:n]
                if SPLIT_NAMES.fullmatch(split.strip("-_ ").lower()):
                    return (a[: len(a) - n], b[: len(b) - n]) if flip else (a[n:], b[n:])
    return None


def _worded_splits(
    root: Path, images: list[str], image_root: Path, label_root: Path, pattern: str
) -> SplitLayout | None:
    """DeepCrack's ``train_img/`` + ``train_lab/``, ``test_img/`` + ``test_lab/`` (or ``images_train/`` +
    ``masks_train/`` …): sibling folders named by a split and an image or mask word, every split
    read from the parent, each image folder's masks in its split's mask folder (``replace``)."""
    words = _split_word(image_root.name, label_root.name)
    if words is None or not is_mask_dir(words[1].strip("-_ ")) or is_mask_dir(words[0].strip("-_ ")):
        return None
    image_word, mask_word = words
    parent = image_root.parent
    replace: dict[str, str] = {}
    for folder in sorted(p for p in parent.iterdir() if p.is_dir()):
        if folder.name.endswith(image_word):  # train_img
            at = len(folder.name) - len(image_word)
        elif folder.name.startswith(image_word):  # images_train
            at = 0
        else:
            continue
        masks = folder.name[:at] + mask_word + folder.name[at + len(image_word) :]
        split = (folder.name[:at] + folder.name[at + len(image_word) :]).strip("-_ ")
        if SPLIT_NAMES.fullmatch(split.lower()) and (parent / masks).is_dir():
            replace[folder.name + "/"] = masks + "/"
    if len(replace) < 2:
        return None
    include = [f"{folder[:-1]}/**" for folder in replace]
    return _layout(root, images, parent, pattern, include, replace)


def split_pairs(
    root: Path, images: list[str], image_root: Path, label_root: Path, pattern: str, siblings: list[str]
) -> SplitLayout | None:
    """The split folders' layout where the chosen pair's folder and the "separate
    datasets" beside it are named as splits (``train/images`` + ``train/masks``, ``valid/…``,
    ``test/…``, as Kaggle and Roboflow export): one dataset, read from their parent with
    ``include: ["*/images/**"]`` and ``{parent_dir}/masks/{stem}…``; else None."""
    split_dir = image_root.parent
    if not siblings or label_root.parent != split_dir or "{rel_stem}" not in pattern:
        return None
    names = [split_dir.name] + [PurePosixPath(s).name for s in siblings]
    if not all(SPLIT_NAMES.fullmatch(n.lower()) for n in names):
        return _sample_folders(root, images, image_root, label_root, pattern, siblings)
    if split_dir.name.lower() in image_root.name.lower():
        return _split_named_pairs(root, images, image_root, label_root, pattern, names)
    parent = split_dir.parent
    include = [f"*/{image_root.name}/**"]
    combined = "{parent_dir}/" + label_root.name + "/" + pattern.replace("{rel_stem}", "{stem}")
    return _layout(root, images, parent, combined, include, {})


def _split_named_pairs(
    root: Path, images: list[str], image_root: Path, label_root: Path, pattern: str, splits: list[str]
) -> SplitLayout | None:
    """FloodNet's ``train/train-org-img`` + ``train/train-label-img``, ``val/val-org-img`` + …: each
    split's image and mask folders named with the split. One dataset, read from the splits' parent,
    each image folder's masks in its split's mask folder (``replace``); a split's image folder
    without a mask folder (a withheld test split) is read too, unlabelled."""
    split = image_root.parent.name
    parent = image_root.parent.parent
    others = sorted(d.name for d in parent.iterdir() if d.is_dir() and SPLIT_NAMES.fullmatch(d.name.lower()))
    replace: dict[str, str] = {}
    include: list[str] = []
    for name in dict.fromkeys([*splits, *others]):
        folders = [
            re.sub(re.escape(split), name, f.name, count=1, flags=re.IGNORECASE) for f in (image_root, label_root)
        ]
        if (parent / name / folders[0]).is_dir():  # a test split without its mask folder: segmented unlabelled
            include.append(f"{name}/{folders[0]}/**")
            if (parent / name / folders[1]).is_dir():
                replace[f"{name}/{folders[0]}/"] = f"{name}/{folders[1]}/"
    if len(replace) < 2:
        return None
    return _layout(root, images, parent, pattern, include, replace)


def _sample_folders(
    root: Path, images: list[str], image_root: Path, label_root: Path, pattern: str, siblings: list[str]
) -> SplitLayout | None:
    """MVTec 3D-AD: ``test/<defect>/rgb/000.png`` with ``test/<defect>/gt/000.png`` (and point clouds
    in ``xyz/``) for every defect of a split, ``train/good/rgb`` without masks: the folders beside
    the chosen pair's that lie in its split folder are other defects of one object, not other
    datasets. One dataset, read from the split's parent with
    ``include: ["**/rgb/**"]`` and ``{parent_dir}/gt/{stem}…``, other categories beside it (the
    dataset's root) named as ``others``; else None."""
    split = image_root.parent.parent
    if split == root or not SPLIT_NAMES.fullmatch(split.name.lower()):
        return None
    if not any((root / s).parent == split for s in siblings):
        return None
    parent = split.parent
    depth = len(parent.relative_to(root).parts)  # other categories' folders at the category's depth
    others = {"/".join(PurePosixPath(s).parts[:depth]) for s in siblings if not (root / s).is_relative_to(parent)}
    include = [f"**/{image_root.name}/**"]
    combined = "{parent_dir}/" + label_root.name + "/" + pattern.replace("{rel_stem}", "{stem}")
    return _layout(root, images, parent, combined, include, {})._replace(others=tuple(sorted(others)))


def _layout(
    root: Path, images: list[str], parent: Path, pattern: str, include: list[str], replace: dict[str, str]
) -> SplitLayout:
    """The layout read from ``parent`` with ``pattern``, ``include`` and ``replace``, with how many of
    ``images`` (relative to ``root``) under it the pattern finds a mask for."""
    base = parent.relative_to(root).as_posix() + "/" if parent != root else ""
    under = [f[len(base) :] for f in images if f.startswith(base) and path_selected(f[len(base) :], include)]
    hits = sum(1 for i in under if (parent / match_pattern(pattern, i, replace)).is_file())
    return SplitLayout(parent, pattern, hits, include, replace)

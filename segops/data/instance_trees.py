"""A second mask tree of instance ids beside a tree of class masks (Pascal VOC's
``SegmentationObject/`` beside ``SegmentationClass/``): the layout of photos with instance masks
where one file says which object a pixel belongs to and the other what the object is.

:func:`instance_tree` finds it from folder names and checks it on a sample of files; the plan
then reads the pair as ``instance-png`` labels with ``classes_pattern`` (each object takes the
class under most of its pixels) and trains an instance model. Pure (no Ray).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segops.data.mask_files import read_instance_png, read_mask_png
from segops.errors import LabelError

#: Folder names of instance-id masks (VOC ``SegmentationObject``, ``instances``, ``inst_masks``).
INSTANCE_WORDS = re.compile(r"object|instance|inst(?![a-z])|(?<![a-z])ids?(?![a-z])", re.IGNORECASE)
#: Folder names of class masks (VOC ``SegmentationClass``, ``semantic``, ``cls``).
CLASS_WORDS = re.compile(r"class|semantic|(?<![a-z])cls(?![a-z])|categor", re.IGNORECASE)
#: Share of the sampled masks that must have a same-named file in the other tree.
MIN_SHARED = 0.9
#: Share of instance pixels (void left out) that must lie on a nonzero class.
MIN_ON_CLASS = 0.9


@dataclass(frozen=True)
class InstanceTree:
    """Instance-id and class-mask folders, siblings under ``parent``."""

    parent: Path
    instances: str
    classes: str
    most_objects: int  # the most instance ids in one sampled mask


def instance_tree(label_root: Path, pattern: str, masks: list[Path], void: int | None) -> InstanceTree | None:
    """The instance-id / class-mask pair that ``label_root`` (the mask folder chosen) is one of, or None.

    The two folders are siblings named with an instance word and a class word; at least
    :data:`MIN_SHARED` of the sampled ``masks`` (files under ``label_root``) have a file of the
    same relative name in the other, of the same size, and the instance ids (``void`` left out)
    lie on nonzero classes. ``pattern`` must name masks by a path relative to ``label_root``
    (it is prefixed with the folder name).
    """
    parent = label_root.parent
    if not masks or label_root == parent or "{" in label_root.name:
        return None
    here_instance, here_class = bool(INSTANCE_WORDS.search(label_root.name)), bool(CLASS_WORDS.search(label_root.name))
    if here_instance == here_class:
        return None
    wanted = CLASS_WORDS if here_instance else INSTANCE_WORDS
    for sibling in sorted(p for p in parent.iterdir() if p.is_dir() and p != label_root):
        if not wanted.search(sibling.name) or (INSTANCE_WORDS if here_instance else CLASS_WORDS).search(sibling.name):
            continue
        pairs = [(m, sibling / m.relative_to(label_root)) for m in masks]
        shared = [(a, b) for a, b in pairs if b.is_file()]
        if len(shared) < MIN_SHARED * len(pairs):
            continue
        ordered = [(b, a) if here_instance else (a, b) for a, b in shared]  # (class mask, instance ids)
        most = _objects_on_classes(ordered[:20], void)
        if most is None:
            continue
        inst, cls = (label_root, sibling) if here_instance else (sibling, label_root)
        return InstanceTree(parent, inst.name, cls.name, most)
    return None


def _objects_on_classes(pairs: list[tuple[Path, Path]], void: int | None) -> int | None:
    """The most instance ids in one of the (class mask, instance ids) pairs, or None if a pair
    cannot be read, differs in size, or its instances lie off the classes."""
    most, on, total = 0, 0, 0
    for class_path, ids_path in pairs:
        try:
            classes = read_mask_png(class_path, None, void=void)
            ids = read_instance_png(ids_path, classes.shape)
        except (LabelError, OSError, ValueError):
            return None
        if void is not None:
            ids = np.where(ids == void, 0, ids)
        fg = ids != 0
        on, total = on + int(np.count_nonzero(classes[fg])), total + int(np.count_nonzero(fg))
        most = max(most, len(np.unique(ids[fg])))
    return most if total and on >= MIN_ON_CLASS * total else None


#: Keys of a mask-png spec that an instance-png spec with class masks can carry over.
CLASS_MASK_KEYS = {"kind", "path", "pattern", "values", "void", "replace"}


def instance_labels(labels: dict[str, Any], tree: InstanceTree, pattern: str) -> dict[str, Any]:
    """The mask-png spec of the class masks → instance-png labels of the instance-id tree with them."""
    out: dict[str, Any] = {
        "kind": "instance-png",
        "path": str(tree.parent),
        "pattern": f"{tree.instances}/{pattern}",
        "classes_pattern": f"{tree.classes}/{pattern}",
    }
    if "values" in labels:
        out["class_values"] = labels["values"]
    return out | {k: labels[k] for k in ("void", "replace") if k in labels}

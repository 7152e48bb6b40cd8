"""Defect-free folders beside the paired ones: MVTec AD's ``train/good`` next to ``test/<defect>`` +
``ground_truth/<defect>``, BTAD's ``train/ok``, MVTec AD 2's ``train/good`` and ``validation/good``
next to ``test_public/{bad,good,ground_truth}``, MVTec LOCO AD's beside ``ground_truth/<defect>/000/``.

Pairing by a parallel tree reads the images from the folder beside the mask folder (``test/``), so
the defect-free parts of the training split were left out: most of the archive's clean parts (MVTec
AD's bottle: 209 of 292 images), which a model needs to see to leave clean parts clean, and which
give validation the clean cases that choose the postprocessing against false alarms
(:mod:`segops.cluster.postprocess_choice` needs 5). :func:`with_normals_beside` widens the source to
the folder holding those folders, reaching each image's mask by dropping the old image folder from
its path (``labels.replace``), and trains on the defect-free folders as empty masks.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path, PurePosixPath

from segops.data.detection import Detection
from segops.data.mask_names import NORMAL_DIR
from segops.data.unannotated import TEST_WORDS

#: Names of split folders (lower case), the parents of the defect-free folders taken beside a category's test images.
SPLIT_DIR = re.compile(r"train(ing)?|val(id|idation)?|dev|test(ing)?([-_ ]\w+)?")
#: The label kinds whose masks are found by a pattern on the image's path, one file (or folder) per image.
_KINDS = ("mask-png", "instance-png", "mask-folder")
#: The count in the pairings' notes on the labels ("14 of 14 images have a mask", "12 of 16 images have one").
_COUNTED = re.compile(r"(\d+) of \d+ images(?= have (a mask|one))")
#: The sentence of :func:`segops.data.pairing._paired` on the images outside the image folder.
_LEFT_OUT = re.compile(r"(^|; )\d+ image\(s\) outside it \(.*?\) pair with no mask and are left out")


def with_normals_beside(root: Path, images: list[str], found: Detection) -> Detection:
    """``found`` widened to the defect-free folders beside its image folder (see the module), or
    ``found`` as it is where it pairs otherwise or nothing beside it is defect-free.

    The new source folder is the lowest of the image folder's parent and the folder above it that
    gathers the most defect-free folders while everything else it holds outside the image and mask
    folders is defect-free or named as test data (MVTec AD 2's ``test_private``: segmented,
    unlabelled). A folder holding another category's masks (MVTec AD's root) is never taken.

    Args:
        root: the planned folder; ``images``: every image file under it (relative, POSIX).
    """
    labels = found.source.get("labels", {})
    if found.pairing not in ("parallel-tree", "mask-folder") or labels.get("kind") not in _KINDS:
        return found
    image_root, label_root = Path(found.source["path"]), Path(labels["path"])
    base = Path(os.path.commonpath([image_root, label_root]))
    if base == image_root or not base.is_relative_to(root):
        return found
    best: tuple[int, Path, list[str], list[str]] | None = None
    for top in (base, base.parent) if base != root else (base,):
        normal, test, other = _outside(root, top, image_root, label_root, images)
        if normal and not other and (best is None or len(normal) > best[0]):
            best = (len(normal), top, normal, test)
    if best is None:
        return found
    _, top, normal, test = best
    return _widened(root, top, found, normal, test, images)


def _outside(
    root: Path, top: Path, image_root: Path, label_root: Path, images: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """Images under ``top`` outside the image and mask folders: (defect-free, test data, other). A
    defect-free folder is one of a split (``train/good``): a ``normal/`` beside ``images/`` and
    ``masks/`` may hold healthy patients' X-rays, whose lungs are no empty mask."""
    normal, test, other = [], [], []
    for f in images:
        path = root / f
        if not path.is_relative_to(top) or path.is_relative_to(image_root) or path.is_relative_to(label_root):
            continue
        rel = path.relative_to(top)
        if NORMAL_DIR.fullmatch(rel.parent.name.lower()) and SPLIT_DIR.fullmatch(rel.parent.parent.name.lower()):
            normal.append(rel.as_posix())
        elif TEST_WORDS.search(rel.parent.as_posix().lower()):
            test.append(rel.as_posix())
        else:
            other.append(rel.as_posix())
    return normal, test, other


def _widened(
    root: Path, top: Path, found: Detection, normal: list[str], test: list[str], images: list[str]
) -> Detection:
    source, labels = dict(found.source), dict(found.source["labels"])
    prefix = Path(source["path"]).relative_to(top).as_posix()
    folders = sorted({str(PurePosixPath(f).parent) for f in normal})
    tests = sorted({str(PurePosixPath(f).parent) for f in test})
    labels["replace"] = {f"{prefix}/": "", **labels.get("replace", {})}  # test/crack/000 → crack/000, as before
    labels["empty_when_missing"] = [f"{prefix}/{g}" for g in labels.get("empty_when_missing", [])] + [
        f"{d}/**" for d in folders
    ]
    source["path"], source["labels"] = str(top), labels
    mask_folder = Path(labels["path"]).relative_to(top).as_posix()
    source["exclude"] = [f"{prefix}/{g}" for g in source.get("exclude", [])] + [f"{mask_folder}/**"]
    if "include" in source:
        source["include"] = [f"{prefix}/{g}" for g in source["include"]] + [f"{d}/**" for d in folders + tests]
    notes = dict(found.notes)
    shown = ", ".join(folders[:5]) + (", …" if len(folders) > 5 else "")
    notes["labels.empty_when_missing"] = (
        f"{len(normal)} defect-free image(s) in {shown} beside {prefix}/ and {mask_folder}/: trained on and "
        "scored as empty masks, so the model sees the clean parts too"
        + (f"; {found.notes['labels.empty_when_missing']}" if "labels.empty_when_missing" in found.notes else "")
    )
    n_images = found.n_images + len(normal) + len(test)
    counted = _COUNTED.sub(lambda m: f"{m[1]} of {n_images} images", found.notes["labels"], count=1)
    notes["labels"] = counted + (
        f"; read from {top.name}/ with {prefix}/ dropped from each image's path to find its mask (replace)"
    )
    if test:
        notes["labels"] += f"; {len(test)} image(s) in {', '.join(tests[:5])}: test data, segmented unlabelled"
    said = _LEFT_OUT.sub("", notes.pop("path", ""))  # the images outside the old folder: now read, or said below
    left = [f for f in images if not (root / f).is_relative_to(top)]
    if left and top != root:
        said += ("; " if said else "") + f"{len(left)} image(s) outside {top.relative_to(root).as_posix()} are left out"
    if said:
        notes["path"] = said
    return dataclasses.replace(
        found,
        source=source,
        n_images=n_images,
        n_paired=found.n_paired + len(normal),
        notes=notes,
    )

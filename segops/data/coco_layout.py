"""``segops plan`` for COCO JSON files: which file (of several, as Roboflow exports one per split),
which folder its image names resolve in, and the task (see :mod:`segops.data.pairing`)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from segops.data.detection import Detection, PlanOverrides
from segops.data.mask_names import MASK_DIRS
from segops.errors import PlanError


def find_coco(root: Path, files: list[str]) -> tuple[Path, list[Path]] | None:
    """The COCO file with the most annotations, and the other COCO files (Roboflow's and CVAT's
    exports put one per split: ``train/_annotations.coco.json``, ``valid/…``, ``test/…``)."""
    found: list[tuple[int, Path]] = []
    for f in files:
        if f.lower().endswith(".json") and (root / f).stat().st_size < 500 * 2**20:
            try:
                doc = json.loads((root / f).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(doc, dict) and "images" in doc and "annotations" in doc:
                found.append((len(doc["annotations"]), root / f))
    if not found:
        return None
    found.sort(key=lambda t: (-t[0], str(t[1])))
    return found[0][1], [p for _, p in found[1:]]


def coco_layout(
    root: Path, files: list[str], path: Path, overrides: PlanOverrides, others: list[Path] | None = None
) -> Detection:
    """A COCO file: the image folder is where its ``file_name``s resolve; instance task when an
    image holds two or more objects of one category (touching objects must be kept apart).

    Categories no annotation uses (Roboflow's supercategory ``id: 0``) get no class: the used
    ones are mapped to 1..K in id order (``categories``). ``others``: further COCO files found;
    those of the same categories over other images (the other splits: Roboflow's
    ``valid/_annotations.coco.json``, COCO's ``instances_val2017.json``) are read with it
    (``more_files``), from the folder above all their images; the rest are named in the note.
    """
    doc = json.loads(path.read_text(encoding="utf-8"))
    image_dir = _coco_image_dir(root, files, [str(im["file_name"]) for im in doc["images"]], path)
    merged, skipped, dirs = [], [], [image_dir]
    taken = {(image_dir, str(im["file_name"])) for im in doc["images"]}
    for other in others or []:
        more = _same_categories_other_images(root, files, doc, other, taken)
        if more is None:
            skipped.append(other)
        else:
            merged.append(other)
            dirs.append(more[1])
            taken |= {(more[1], str(im["file_name"])) for im in more[0]["images"]}
            doc = {**doc, "images": doc["images"] + more[0]["images"], "annotations": _renumbered(doc, more[0])}
    names = [str(im["file_name"]) for im in doc["images"]]
    per_image = Counter((a["image_id"], a["category_id"]) for a in doc["annotations"])
    crowded = max(per_image.values(), default=0) >= 2
    task = overrides.task or ("instance" if crowded else "semantic")
    labels: dict[str, Any] = {"kind": "coco", "path": str(path)}
    if merged:
        labels["more_files"] = [str(p) for p in merged]
    if task == "instance":
        labels["instances"] = True
    declared = sorted({int(c["id"]) for c in doc.get("categories", [])})
    used = sorted({int(a["category_id"]) for a in doc["annotations"]})
    unused = [c for c in declared if c not in used]
    if unused and used:
        labels["categories"] = {cid: rank + 1 for rank, cid in enumerate(used)}
    classes = (len(used) if unused and used else len(declared)) + 1

    def rel(p: Path) -> str:
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    note = (
        f"COCO file {rel(path)}"
        + (f" and {', '.join(rel(p) for p in merged)} (same categories, other images)" if merged else "")
        + f": {len(names)} images, {len(doc['annotations'])} annotations, {classes - 1} categories"
        + (f" (ids {unused[:5]} unused: no class)" if unused and used else "")
        + f"; up to {max(per_image.values(), default=0)} objects of one category per image → {task}"
        + (f"; other COCO files, not read: {', '.join(rel(p) for p in skipped[:3])}" if skipped else "")
    )
    source = {"kind": "images", "path": os.path.commonpath(dirs), "labels": labels}  # the folder above them all
    mapping = labels.get("categories") or {cid: rank + 1 for rank, cid in enumerate(declared)}  # ranks by default
    named = {int(c["id"]): str(c.get("name", "")) for c in doc.get("categories", [])}
    class_names = {k: named[cid] for cid, k in mapping.items() if named.get(cid)}
    return Detection(
        source, task, classes, "coco", "coco", len(names), len(names), {"labels": note}, class_names=class_names
    )


def _same_categories_other_images(
    root: Path, files: list[str], doc: dict[str, Any], other: Path, taken: set[tuple[Path, str]]
) -> tuple[dict[str, Any], Path] | None:
    """``other``'s COCO document and image folder when it names the same categories as ``doc``
    over other images than the ``taken`` (folder, file name) pairs (another split), else None
    (captions, keypoints, or a copy)."""
    try:
        more = json.loads(other.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None

    def categories(d: dict[str, Any]) -> set[tuple[int, str]]:
        return {(int(c["id"]), str(c.get("name", ""))) for c in d.get("categories", []) if "id" in c}

    if not categories(more) or categories(more) != categories(doc):
        return None
    try:
        folder = _coco_image_dir(root, files, [str(im["file_name"]) for im in more["images"]], other)
    except PlanError:
        return None
    if any((folder, str(im["file_name"])) in taken for im in more["images"]):
        return None  # the same images again: a copy, or another annotator's version
    return more, folder


def _renumbered(doc: dict[str, Any], more: dict[str, Any]) -> list[dict[str, Any]]:
    """Annotations of both documents, ``more``'s image ids offset past ``doc``'s (each file numbers from 0)."""
    offset = 1 + max((int(im["id"]) for im in doc["images"]), default=0)
    return doc["annotations"] + [{**a, "image_id": int(a["image_id"]) + offset} for a in more["annotations"]]


def _coco_image_dir(root: Path, files: list[str], names: list[str], coco: Path | None = None) -> Path:
    """The folder where the COCO file names resolve: the COCO file's own folder where they are
    beside it (Roboflow's splits, which reuse names), else where the full relative name, else the
    base name, is found; among several, one named like an image folder and not like a mask folder."""
    if coco is not None and names and 2 * sum((coco.parent / n).is_file() for n in names[:20]) >= len(names[:20]):
        return coco.parent
    found: set[str] = set()
    for name in names[:20]:
        found |= {f[: len(f) - len(name)].rstrip("/") for f in files if f == name or f.endswith("/" + name)}
    if not found:
        bases = {PurePosixPath(n).name for n in names[:20]}
        found = {str(PurePosixPath(f).parent) for f in files if PurePosixPath(f).name in bases}
    if not found:
        raise PlanError(f"none of the COCO file's first image names ({names[:3]}) is a file under {root}")
    best = max(
        sorted(found),
        key=lambda d: (
            PurePosixPath(d).name.lower().startswith(("image", "img")),
            PurePosixPath(d).name.lower() not in (*MASK_DIRS, "classes"),
        ),
    )
    return root / best if best not in ("", ".") else root

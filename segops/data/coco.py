"""COCO instance annotations (polygons or RLE) → label maps: class maps, or instance label maps.

Images are matched by ``file_name`` (relative path, else base name); see
:class:`~segops.config.sources.CocoLabels`. Used by :class:`segops.data.labels.LabelResolver`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from segops.data.instances import stack_instances
from segops.errors import LabelError


def index_coco(
    path: Path, categories: dict[int, int] | None, more: tuple[Path, ...] | list[Path] = ()
) -> tuple[dict[str, dict[str, Any]], dict[int, int]]:
    """COCO file(s) → (image entry by key, class of each category id).

    Entries are keyed by :func:`index_entries` (with ``more`` files, other splits, a name two
    files share is left to the absolute path). Each entry carries its label ``uri``
    (``<file>#image=<id>``). ``categories`` maps category ids to classes; by default a category's
    class is its rank among the files' category ids (1..K).

    Raises:
        LabelError: a file cannot be read or has no ``images``.
    """
    parsed = [(file, *_file_entries(file)) for file in (Path(path), *map(Path, more))]
    entries = index_entries([(file, images) for file, images, _ in parsed])
    if categories is None:
        ids = set().union(*(file_ids for _, _, file_ids in parsed))
        categories = {cid: rank + 1 for rank, cid in enumerate(sorted(ids))}
    return entries, categories


def index_entries(per_file: list[tuple[Path, list[tuple[str, dict[str, Any]]]]]) -> dict[str, dict[str, Any]]:
    """Image entries of annotation files (each ``(file, [(file name, entry), …])``, COCO's or VIA's)
    keyed as the label readers look an image up: by the absolute path of the image beside its
    file (Roboflow's splits), by file name and by base name. A file name twice in one file: the
    later entry by name, the first by base name; a name two files share (``0001.jpg`` in two
    splits) is left to the absolute path."""
    entries: dict[str, dict[str, Any]] = {}  # absolute paths, then names
    names: dict[str, dict[str, Any]] = {}
    ambiguous: set[str] = set()
    for file, images in per_file:
        keys: dict[str, dict[str, Any]] = {}
        for name, entry in images:
            beside = file.parent / name
            if beside.is_file():
                entries[str(beside.resolve())] = entry
            keys[name] = entry
            keys.setdefault(PurePosixPath(name).name, entry)
        ambiguous |= keys.keys() & names.keys()
        names.update({name: entry for name, entry in keys.items() if name not in names})
    entries.update({name: entry for name, entry in names.items() if name not in ambiguous})
    return entries


def _file_entries(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], set[int]]:
    """One COCO file's (file name, image entry) pairs and its category ids."""
    try:
        data = json.loads(path.read_text())
        images, anns = data["images"], data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabelError(f"cannot read COCO file {path}: {type(exc).__name__}: {exc}") from exc
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in anns:
        by_image[ann["image_id"]].append(ann)
    entries = [
        (
            str(image["file_name"]),
            {
                "id": image["id"],
                "uri": f"{path}#image={image['id']}",
                "height": image.get("height"),
                "width": image.get("width"),
                "annotations": by_image.get(image["id"], []),
            },
        )
        for image in images
    ]
    ids = {c["id"] for c in data.get("categories", [])} | {a["category_id"] for a in anns}
    return entries, ids


def coco_label(entry: dict[str, Any], shape: tuple[int, int], classes: dict[int, int]) -> np.ndarray:
    """All annotations of one COCO image → (H, W) uint8 class map (later annotations on top)."""
    h, w = _coco_shape(entry, shape)
    label = np.zeros((h, w), dtype=np.uint8)
    for ann in entry["annotations"]:
        label[_annotation_mask(ann, entry, h, w)] = classes.get(ann["category_id"], 0)
    return label


def coco_instances(entry: dict[str, Any], shape: tuple[int, int], classes: dict[int, int]) -> np.ndarray:
    """Annotations of one COCO image → (H, W) int32 instance label map, in file order (later on top).

    Crowd annotations (``iscrowd: 1``) are left out: COCO marks a crowd region as one to
    ignore, not as an instance, and a crowd drawn as one instance would teach a detector that
    a group of objects is one object. Categories mapped to class 0 are left out too.

    Raises:
        LabelError: sizes differ, an annotation has no usable mask, or its category has no class.
    """
    h, w = _coco_shape(entry, shape)
    masks, instance_classes = [], []
    for ann in entry["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        cls = classes.get(ann["category_id"])
        if cls is None:
            raise LabelError(
                f"COCO annotation {ann.get('id')} of image {entry['id']} has category_id {ann['category_id']}, "
                f"which has no class in categories {classes}; map it to 0 to leave it out"
            )
        if cls > 0:
            masks.append(_annotation_mask(ann, entry, h, w))
            instance_classes.append(cls)
    try:
        return stack_instances(masks, instance_classes, (h, w))
    except LabelError as exc:
        raise LabelError(f"COCO image {entry['id']}: {exc}") from exc


def entry_or_problem(image_id: Any, uri: str, make: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``make(*args)``, an image's entry built from an annotation file (VIA, CVAT, Label Studio); where that
    raises :class:`LabelError` (a task without its image size, a shape without coordinates, a label
    ``classes`` lacks), an entry holding the problem instead: its image is a label problem when its
    label is read (kept unlabelled, listed in the quarantine), and every other image of the file is read."""
    try:
        return make(*args)
    except LabelError as exc:
        return {"id": image_id, "uri": uri, "height": None, "width": None, "annotations": [], "problem": str(exc)}


def _coco_shape(entry: dict[str, Any], shape: tuple[int, int]) -> tuple[int, int]:
    if "problem" in entry:
        raise LabelError(entry["problem"])
    h, w = shape
    if entry["height"] not in (None, h) or entry["width"] not in (None, w):
        raise LabelError(f"COCO image {entry['id']} is {entry['width']}x{entry['height']} but its image is {w}x{h}")
    return h, w


def _annotation_mask(ann: dict[str, Any], entry: dict[str, Any], h: int, w: int) -> np.ndarray:
    """One annotation's (H, W) bool mask; anything unusable is a LabelError that names it."""
    where = f"COCO annotation {ann.get('id')} of image {entry['id']}"
    if not ann.get("segmentation"):
        raise LabelError(f"{where} has no segmentation (a box alone is not a mask)")
    try:
        mask = coco_segmentation_mask(ann["segmentation"], h, w)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise LabelError(f"{where}: cannot read its segmentation: {type(exc).__name__}: {exc}") from exc
    if mask.shape != (h, w):
        raise LabelError(f"{where}: RLE is {mask.shape[1]}x{mask.shape[0]} but its image is {w}x{h}")
    return mask


def coco_segmentation_mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    """Polygon list or RLE (compressed or not) → (H, W) bool mask."""
    if isinstance(segmentation, list):
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon in segmentation:
            if len(polygon) >= 6:
                draw.polygon(list(map(float, polygon)), fill=1, outline=1)
        return np.asarray(canvas, dtype=bool)
    from pycocotools import mask as mask_utils

    rle = segmentation
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, h, w)
    return mask_utils.decode(rle).astype(bool)

"""LabelMe JSON annotations (one file per image, as the LabelMe tool saves them) → label maps, and
``segops plan``'s detection of them.

A file holds ``shapes``, each with a ``label`` (the class name), a ``shape_type`` and ``points`` in
pixel coordinates: ``polygon`` (3 points or more), ``rectangle`` (two corners), ``circle`` (centre
and a point on the circle) and ``mask`` (LabelMe 5: a base64 PNG of the region between its two
``points``) are areas; ``line``, ``linestrip`` and ``point`` are not, and are left out. Shapes
sharing a ``group_id`` are one object. See :class:`~segops.config.sources.LabelmeLabels`.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from segops.data.detection import Detection
from segops.data.instances import objects_label
from segops.data.sidecars import find_outlines
from segops.errors import LabelError

#: Shape types that cover an area (the others, lines and points, are left out).
AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")


def read_labelme(path: str | Path) -> dict[str, Any]:
    """A LabelMe file's JSON (``shapes`` a list).

    Raises:
        LabelError: unreadable, not JSON, or without a ``shapes`` list.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LabelError(f"cannot read LabelMe file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise LabelError(f"LabelMe file {path} has no 'shapes' list")
    return doc


def label_names(paths: list[Path]) -> list[str]:
    """The class names (``label``) of the area shapes in ``paths``, sorted; unreadable files are skipped."""
    names: set[str] = set()
    for path in paths:
        try:
            shapes = read_labelme(path)["shapes"]
        except LabelError:
            continue
        names |= {str(s.get("label")) for s in shapes if _is_area(s)}
    return sorted(names)


def labelme_label(path: str | Path, shape: tuple[int, int], classes: dict[str, int], instances: bool) -> np.ndarray:
    """One LabelMe file → (H, W) uint8 class map, or with ``instances`` an int32 instance label map
    (one instance per shape, or per ``group_id``); later shapes on top; class-0 names left out.

    Raises:
        LabelError: the file is unreadable, records another image size, holds a class name that
            ``classes`` lacks, or a shape that cannot be drawn.
    """
    doc = read_labelme(path)
    h, w = shape
    size = (doc.get("imageHeight"), doc.get("imageWidth"))
    if size[0] not in (None, h) or size[1] not in (None, w):
        raise LabelError(f"LabelMe file {path} is for a {size[1]}x{size[0]} image but its image is {w}x{h}")
    objects: dict[Any, tuple[int, np.ndarray]] = {}
    for k, item in enumerate(doc["shapes"]):
        if not _is_area(item):
            continue
        name = str(item.get("label"))
        if name not in classes:
            raise LabelError(
                f"LabelMe file {path} has label {name!r}, which labels.classes {sorted(classes)} lacks; add it "
                "(0 leaves it out)"
            )
        if classes[name] == 0:
            continue
        mask = _shape_mask(item, h, w, f"shape {k} ({name!r}) of LabelMe file {path}")
        group = item.get("group_id")
        key = ("group", group, name) if group is not None else ("shape", k)
        if key in objects:
            mask = mask | objects.pop(key)[1]  # re-inserted: the group is on top of what came before it
        objects[key] = (classes[name], mask)
    masks, labels = [m for _, m in objects.values()], [c for c, _ in objects.values()]
    return objects_label(masks, labels, (h, w), instances, f"LabelMe file {path}")


def _shape_mask(item: dict[str, Any], h: int, w: int, where: str) -> np.ndarray:
    """One area shape's (H, W) bool mask."""
    try:
        points = [(float(x), float(y)) for x, y in item.get("points") or []]
    except (TypeError, ValueError) as exc:
        raise LabelError(f"{where}: points are not (x, y) pairs: {exc}") from exc
    kind = item.get("shape_type", "polygon")
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "polygon" and len(points) >= 3:
        draw.polygon(points, fill=1, outline=1)
    elif kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=1)
    elif kind == "circle" and len(points) == 2:
        (cx, cy), (px, py) = points
        r = math.hypot(px - cx, py - cy)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
    elif kind == "mask" and len(points) == 2 and item.get("mask"):
        return _region_mask(item["mask"], points, h, w, where)
    else:
        raise LabelError(f"{where}: a {kind} with {len(points)} point(s) cannot be drawn")
    return np.asarray(canvas, dtype=bool)


def _region_mask(data: str, points: list[tuple[float, float]], h: int, w: int, where: str) -> np.ndarray:
    """LabelMe 5's mask shape: a base64 PNG covering the box from its first point, placed on the image."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            region = np.asarray(img.convert("L")) > 0
    except (ValueError, OSError) as exc:
        raise LabelError(f"{where}: its mask is not a base64 PNG: {exc}") from exc
    x0, y0 = (max(0, int(round(min(p[i] for p in points)))) for i in (0, 1))
    region = region[: max(0, h - y0), : max(0, w - x0)]
    mask = np.zeros((h, w), bool)
    mask[y0 : y0 + region.shape[0], x0 : x0 + region.shape[1]] = region
    return mask


# --------------------------------------------------------------------------- segops plan


def find_labelme(root: Path, files: list[str], pictures: list[str], task: str | None = None) -> Detection | None:
    """LabelMe files beside their images (``x.jpg`` + ``x.json``) or in a mask-named sibling folder
    (``images/x.jpg`` + ``annotations/x.json``), as :func:`segops.data.sidecars.find_outlines` finds
    them: label names → classes 1..K, instance task when an image holds two shapes of one name."""
    return find_outlines(root, files, pictures, task, "labelme", ".json", "LabelMe", _area_labels)


def _area_labels(path: Path) -> list[str]:
    return [str(s.get("label")) for s in read_labelme(path)["shapes"] if _is_area(s)]


def _is_area(shape: dict[str, Any]) -> bool:
    return shape.get("shape_type", "polygon") in AREA_SHAPES

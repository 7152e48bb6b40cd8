"""CVAT's "CVAT for images 1.1" XML export (``annotations.xml``) → the COCO index the label readers
draw from, and ``segops plan``'s detection of it.

An export holds ``<image name width height>`` elements, each with its shapes: ``<polygon points="x,y;x,y;…">``,
``<box xtl ytl xbr ybr rotation>``, ``<ellipse cx cy rx ry rotation>`` and ``<mask rle left top width
height>`` (run lengths over the mask's box, row by row, starting with a background run); polylines,
points, skeletons and cuboids have no area and are left out. A shape's ``label`` names its class;
``z_order`` says which lies on top. Each image becomes a COCO image entry (polygons, and masks as
RLE), so :mod:`segops.data.coco` draws them. See :class:`~segops.config.sources.CvatLabels`.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from segops.data.coco import entry_or_problem, index_entries
from segops.data.detection import Detection, annotation_file_detection, annotation_files_spec, read_annotation_files
from segops.data.seg_layout import common_dir
from segops.errors import LabelError

#: Shapes that cover an area (polylines, points, skeletons and cuboids are left out).
AREA_SHAPES = ("polygon", "box", "ellipse", "mask")
#: Points of the polygon an ellipse is drawn as.
ELLIPSE_POINTS = 32


def read_cvat(path: str | Path) -> list[ET.Element]:
    """The ``<image>`` elements of a CVAT for images XML file.

    Raises:
        LabelError: unreadable, not XML, or not a CVAT export (an ``<annotations>`` root with images).
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise LabelError(f"cannot read CVAT file {path}: {type(exc).__name__}: {exc}") from exc
    images = root.findall("image")
    if root.tag != "annotations" or not images or any(i.get("name") is None for i in images):
        raise LabelError(f"{path} is not a CVAT for images XML file (<annotations> with named <image> elements)")
    return images


def label_names(images: list[ET.Element]) -> list[str]:
    """The labels of the area shapes, in name order."""
    return sorted({s.get("label", "") for i in images for s in i if s.tag in AREA_SHAPES})


def index_cvat(files: list[Path], classes: dict[str, int] | None) -> tuple[dict[str, dict[str, Any]], dict[int, int]]:
    """CVAT files → (COCO image entries keyed as :func:`segops.data.coco.index_entries` keys them,
    the identity category map of their classes). ``classes``: label → class; by default every label
    in the files, 1..K in name order."""
    docs = [(Path(f), read_cvat(f)) for f in files]
    if classes is None:
        classes = {name: k + 1 for k, name in enumerate(label_names([i for _, d in docs for i in d]))}
    per_file = [(file, [(str(i.get("name")), _image_entry(file, i, classes)) for i in doc]) for file, doc in docs]
    return index_entries(per_file), {c: c for c in classes.values()}


def _image_entry(file: Path, image: ET.Element, classes: dict[str, int]) -> dict[str, Any]:
    name = image.get("name")
    return entry_or_problem(name, f"{file}#image={name}", _entry, file, image, classes)


def _entry(file: Path, image: ET.Element, classes: dict[str, int]) -> dict[str, Any]:
    """One CVAT image → a COCO image entry, its shapes lowest ``z_order`` first (later on top)."""
    name = image.get("name")
    try:
        h, w = int(image.get("height", "")), int(image.get("width", ""))
    except ValueError as exc:
        raise LabelError(f"image {name} in CVAT file {file} has no width and height") from exc
    shapes = sorted((s for s in image if s.tag in AREA_SHAPES), key=lambda s: int(float(s.get("z_order", 0))))
    annotations = []
    for n, shape in enumerate(shapes):
        where = f"{shape.tag} {n} ({shape.get('label')!r}) of {name} in CVAT file {file}"
        label = shape.get("label", "")
        if label not in classes:
            raise LabelError(f"{where}: labels.classes {sorted(classes)} lacks {label!r}; add it (0 leaves it out)")
        if classes[label]:  # a label mapped to 0 is left out
            segmentation = _segmentation(shape, h, w, where)
            annotations.append({"id": n, "category_id": classes[label], "segmentation": segmentation, "iscrowd": 0})
    return {"id": name, "uri": f"{file}#image={name}", "height": h, "width": w, "annotations": annotations}


def _segmentation(shape: ET.Element, h: int, w: int, where: str) -> Any:
    """A shape as a COCO segmentation: a polygon list, or an uncompressed RLE for a mask."""
    try:
        if shape.tag == "polygon":
            points = [float(v) for xy in shape.get("points", "").split(";") for v in xy.split(",")]
            return [points] if len(points) >= 6 else []
        if shape.tag == "box":
            x0, y0, x1, y1 = (float(shape.get(k, "")) for k in ("xtl", "ytl", "xbr", "ybr"))
            corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            return [_turned(corners, (x0 + x1) / 2, (y0 + y1) / 2, float(shape.get("rotation", 0)))]
        if shape.tag == "ellipse":
            cx, cy, rx, ry = (float(shape.get(k, "")) for k in ("cx", "cy", "rx", "ry"))
            steps = (2 * math.pi * i / ELLIPSE_POINTS for i in range(ELLIPSE_POINTS))
            outline = [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in steps]
            return [_turned(outline, cx, cy, float(shape.get("rotation", 0)))]
        return _mask_rle(shape, h, w, where)
    except ValueError as exc:
        raise LabelError(f"{where}: cannot read its coordinates: {exc}") from exc


def _turned(points: list[tuple[float, float]], cx: float, cy: float, degrees: float) -> list[float]:
    """``points`` turned ``degrees`` clockwise on the image (CVAT's rotation) about (cx, cy), flat."""
    a = math.radians(degrees)
    return [
        v
        for x, y in points
        for v in (
            cx + (x - cx) * math.cos(a) - (y - cy) * math.sin(a),
            cy + (x - cx) * math.sin(a) + (y - cy) * math.cos(a),
        )
    ]


def _mask_rle(shape: ET.Element, h: int, w: int, where: str) -> dict[str, Any]:
    """A ``<mask>``'s runs over its box (row-major, background first) → the image's COCO RLE."""
    left, top, width, height = (int(float(shape.get(k, ""))) for k in ("left", "top", "width", "height"))
    runs = [int(v) for v in shape.get("rle", "").replace(" ", "").split(",") if v]
    if sum(runs) != width * height:
        raise LabelError(f"{where}: its runs cover {sum(runs)} pixels, its box {width}x{height} = {width * height}")
    flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
    full = np.zeros((h, w), bool)
    box = full[top : top + height, left : left + width]
    box[...] = flat.reshape(height, width)[: box.shape[0], : box.shape[1]]
    return mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))  # as segops.data.coco decodes it


# --------------------------------------------------------------------------- segops plan


def find_cvat(root: Path, files: list[str], task: str | None = None) -> Detection | None:
    """Every CVAT for images XML file under ``root`` whose image names are image files under the
    folder above them all (or beside the file), read as one dataset, or None. Classes: the shapes'
    labels, 1..K in name order; instance task when an image holds two shapes of one label."""
    found: list[tuple[str, list[ET.Element]]] = read_annotation_files(root, files, ".xml", read_cvat)
    named = [Path(str(i.get("name"))).name for _, doc in found for i in doc]
    by_base, in_files = {Path(f).name for f in files}, set(named)
    if not found or 2 * sum(n in by_base for n in named) < len(named):
        return None
    images = [i for _, doc in found for i in doc]
    labels = label_names(images)
    per_image = [Counter(s.get("label") for s in i if s.tag in AREA_SHAPES) for i in images]
    crowded = max((n for c in per_image for n in c.values()), default=0)
    chosen = task or ("instance" if crowded >= 2 else "semantic")
    spec = annotation_files_spec("cvat", root, [f for f, _ in found], chosen)
    shapes = sum(sum(c.values()) for c in per_image)
    note = (
        f"CVAT XML {', '.join(f for f, _ in found[:3])}: {len(images)} images, {shapes} area shapes; labels → "
        f"1..{len(labels)} in name order; up to {crowded} shapes of one label per image → {chosen}"
    )
    common = common_dir([p for p in files if Path(p).name in in_files])
    return annotation_file_detection(root / common if common else root, spec, chosen, labels, len(images), note)

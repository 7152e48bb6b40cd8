"""VGG Image Annotator (VIA 1 and 2) JSON → the COCO index the label readers draw from, and
``segops plan``'s detection of it.

A VIA file (``via_region_data.json``, as the Mask R-CNN balloon tutorial ships one per split, or
a VIA 2 project with ``_via_img_metadata``) maps each image to its ``filename`` (beside the file)
and ``regions``: ``shape_attributes`` (``polygon`` with ``all_points_x``/``all_points_y``,
``rect``, ``circle``, ``ellipse``; lines and points are no area and are left out) and
``region_attributes`` whose value under ``attribute`` names the class. Each image becomes a COCO
image entry (its regions polygons), so :mod:`segops.data.coco` draws them. See
:class:`~segops.config.sources.ViaLabels`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from segops.data.coco import entry_or_problem, index_entries
from segops.data.detection import Detection, annotation_file_detection, annotation_files_spec, read_annotation_files
from segops.data.seg_layout import common_dir
from segops.errors import LabelError

#: The class name of regions without the attribute (or of every region where no attribute names one).
UNNAMED = "object"
#: Shapes that cover an area (points and lines are left out).
AREA_SHAPES = ("polygon", "rect", "circle", "ellipse")
#: Points of the polygon a circle or an ellipse is drawn as.
ELLIPSE_POINTS = 32


def read_via(path: str | Path) -> dict[str, dict[str, Any]]:
    """A VIA file's image metadata: key → ``{"filename", "regions": [...]}`` (regions as a list).

    Raises:
        LabelError: unreadable, not JSON, or not VIA (no entry with ``filename`` and ``regions``).
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LabelError(f"cannot read VIA file {path}: {type(exc).__name__}: {exc}") from exc
    images = doc.get("_via_img_metadata", doc) if isinstance(doc, dict) else None
    if not isinstance(images, dict) or not images or not all(_is_via_image(v) for v in images.values()):
        raise LabelError(f"{path} is not a VIA file (image entries with 'filename' and 'regions')")
    return {k: {**v, "regions": _regions(v["regions"])} for k, v in images.items()}


def region_class_name(region: dict[str, Any], attribute: str | None) -> str:
    """The class name of a region: its ``region_attributes[attribute]`` (a dict of checkboxes:
    the first ticked), else :data:`UNNAMED`."""
    value = (region.get("region_attributes") or {}).get(attribute) if attribute else None
    if isinstance(value, dict):
        value = next((k for k, ticked in value.items() if ticked), None)
    return str(value) if value not in (None, "") else UNNAMED


def index_via(
    files: list[Path], attribute: str | None, classes: dict[str, int] | None
) -> tuple[dict[str, dict[str, Any]], dict[int, int]]:
    """VIA files → (COCO image entries keyed as :func:`segops.data.coco.index_entries` keys
    them, the identity category map of their classes). ``classes``: name → class; by default
    every name in the files, 1..K in sorted order."""
    docs = [(Path(f), read_via(f)) for f in files]
    if classes is None:
        names = {region_class_name(r, attribute) for _, doc in docs for v in doc.values() for r in v["regions"]}
        classes = {name: k + 1 for k, name in enumerate(sorted(names))}
    per_file = [
        (
            file,
            [
                (str(image["filename"]), _image_entry(file, key, image, attribute, classes))
                for key, image in doc.items()
            ],
        )
        for file, doc in docs
    ]
    return index_entries(per_file), {c: c for c in classes.values()}


def _image_entry(
    file: Path, key: str, image: dict[str, Any], attribute: str | None, classes: dict[str, int]
) -> dict[str, Any]:
    return entry_or_problem(key, f"{file}#image={image['filename']}", _entry, file, key, image, attribute, classes)


def _entry(
    file: Path, key: str, image: dict[str, Any], attribute: str | None, classes: dict[str, int]
) -> dict[str, Any]:
    """One VIA image → a COCO image entry whose annotations are its regions' polygons."""
    annotations = []
    for n, region in enumerate(image["regions"]):
        where = f"region {n} of {image['filename']} in VIA file {file}"
        polygon = _polygon(region.get("shape_attributes") or {}, where)
        if polygon is None:
            continue
        name = region_class_name(region, attribute)
        if name not in classes:
            raise LabelError(
                f"{where} is {name!r}, which labels.classes {sorted(classes)} lacks; add it (0 leaves it out)"
            )
        if classes[name]:  # a name mapped to 0 is left out
            annotations.append({"id": n, "category_id": classes[name], "segmentation": [polygon], "iscrowd": 0})
    return {
        "id": key,
        "uri": f"{file}#image={image['filename']}",
        "height": None,
        "width": None,
        "annotations": annotations,
    }


def _polygon(shape: dict[str, Any], where: str) -> list[float] | None:
    """A region's outline as a flat COCO polygon, or None for a shape without area."""
    kind = shape.get("name")
    try:
        if kind == "polygon":
            xs, ys = shape["all_points_x"], shape["all_points_y"]
            return [float(v) for xy in zip(xs, ys) for v in xy] if len(xs) >= 3 else None
        if kind == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            return [x, y, x + w, y, x + w, y + h, x, y + h]
        if kind in ("circle", "ellipse"):
            cx, cy = float(shape["cx"]), float(shape["cy"])
            rx, ry = (float(shape["r"]),) * 2 if kind == "circle" else (float(shape["rx"]), float(shape["ry"]))
            theta = float(shape.get("theta", 0.0))
            return [
                v
                for a in (2 * math.pi * i / ELLIPSE_POINTS for i in range(ELLIPSE_POINTS))
                for v in (
                    cx + rx * math.cos(a) * math.cos(theta) - ry * math.sin(a) * math.sin(theta),
                    cy + rx * math.cos(a) * math.sin(theta) + ry * math.sin(a) * math.cos(theta),
                )
            ]
    except (KeyError, TypeError, ValueError) as exc:
        raise LabelError(f"{where}: a {kind} without its coordinates: {type(exc).__name__}: {exc}") from exc
    return None  # point, polyline: no area


def _has_area(region: dict[str, Any]) -> bool:
    return (region.get("shape_attributes") or {}).get("name") in AREA_SHAPES


def _is_via_image(value: Any) -> bool:
    return isinstance(value, dict) and "filename" in value and isinstance(value.get("regions"), (dict, list))


def _regions(regions: dict[str, Any] | list[Any]) -> list[dict[str, Any]]:
    """VIA 1 keeps regions in a dict ("0", "1", …), VIA 2 in a list."""
    items = regions.values() if isinstance(regions, dict) else regions
    return [r for r in items if isinstance(r, dict)]


# --------------------------------------------------------------------------- segops plan


def find_via(root: Path, files: list[str], task: str | None = None) -> Detection | None:
    """Every VIA file under ``root`` whose image names are files beside it (the balloon
    tutorial's ``train/via_region_data.json`` and ``val/…``), read as one dataset from the folder
    above them all, or None. The class attribute is the region attribute most regions carry;
    its values are the classes 1..K in name order (regions without it: ``object``); instance task
    when an image holds two regions of one class."""
    found = [
        (f, doc)
        for f, doc in read_annotation_files(root, files, ".json", read_via)
        if 2 * sum(((root / f).parent / str(v["filename"])).is_file() for v in doc.values()) >= len(doc)
    ]
    if not found:
        return None
    regions = [r for _, doc in found for v in doc.values() for r in v["regions"] if _has_area(r)]
    keys = Counter(k for r in regions for k in (r.get("region_attributes") or {}))
    attribute = keys.most_common(1)[0][0] if keys else None
    names = sorted({region_class_name(r, attribute) for r in regions})
    per_image = [
        Counter(region_class_name(r, attribute) for r in v["regions"] if _has_area(r))
        for _, d in found
        for v in d.values()
    ]
    crowded = max((n for c in per_image for n in c.values()), default=0)
    chosen = task or ("instance" if crowded >= 2 else "semantic")
    common = common_dir([f for f, _ in found])  # the folder above every VIA file ("" for the root)
    extra = {"attribute": attribute} if attribute else {}
    labels = annotation_files_spec("via", root, [f for f, _ in found], chosen, **extra)
    n_images = sum(len(d) for _, d in found)
    note = (
        f"VIA file(s) {', '.join(f for f, _ in found[:3])}: {n_images} images, {len(regions)} regions; "
        + (
            f"region attribute {attribute!r} names the classes"
            if attribute
            else f"no region attribute: one class {UNNAMED!r}"
        )
        + f" → 1..{len(names)} in name order; up to {crowded} regions of one class per image → {chosen}"
    )
    return annotation_file_detection(root / common if common else root, labels, chosen, names, n_images, note)

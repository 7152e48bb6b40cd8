"""Aperio ImageScope XML annotations (one ``.xml`` per image, as MoNuSeg's ``Annotations/TCGA-….xml``,
MoNuSAC's and TCGA slides' outlines are shipped) → label maps, and ``segops plan``'s detection of them.

A file holds ``<Annotation>`` layers, each with ``<Regions>`` of ``<Region Type NegativeROA>`` whose
``<Vertices>`` are pixel coordinates (``<Vertex X Y/>``). A layer's class name is its ``Name``; else
its first ``<Attribute Name>`` unless that is ImageScope's default ``Description`` column (MoNuSAC
names each cell type so); else that Description's ``Value``; else ``object`` (MoNuSeg: one class,
the nuclei). Region ``Type`` 1 is a rectangle (its corners), 2 an ellipse (two corners of its box),
3 an arrow and 4 a ruler (no area: left out); the others are polygons (freehand ones included;
fewer than 3 vertices: no area). A region with ``NegativeROA="1"`` is a hole cut from the regions of
its class drawn before it (its layer's, and those of layers of the same name). Each region is one
object. See :class:`~segops.config.sources.ImageScopeLabels`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segops.data import labelme
from segops.data.detection import Detection
from segops.data.instances import encode_instances
from segops.data.sidecars import find_outlines
from segops.errors import LabelError

#: Region types without an area: arrows and rulers.
NO_AREA = frozenset({3, 4})
#: ImageScope's default attribute column, which names no class.
DEFAULT_ATTRIBUTE = "Description"
#: The class name of a layer that names none.
UNNAMED = "object"


@dataclass(frozen=True)
class Outline:
    """One region with an area: its layer's class name, type, whether it is a hole, (x, y) vertices."""

    name: str
    kind: int
    negative: bool
    points: tuple[tuple[float, float], ...]


def read_imagescope(path: str | Path) -> list[Outline]:
    """The regions with an area in an ImageScope XML file, in file order.

    Raises:
        LabelError: unreadable, not XML, not an ImageScope file (an ``<Annotations>`` root of
            ``<Annotation>`` layers), or a vertex without numeric X and Y.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise LabelError(f"cannot read ImageScope file {path}: {type(exc).__name__}: {exc}") from exc
    layers = root.findall("Annotation")
    if root.tag != "Annotations" or (len(root) and not layers):
        raise LabelError(f"{path} is not an ImageScope XML file (<Annotations> of <Annotation> layers)")
    outlines = []
    for layer in layers:
        name = _layer_name(layer)
        for n, region in enumerate(layer.iter("Region")):
            try:
                kind = int(region.get("Type") or 0)
                points = tuple((float(v.get("X", "")), float(v.get("Y", ""))) for v in region.iter("Vertex"))
            except ValueError as exc:
                raise LabelError(f"region {n} of layer {name!r} in ImageScope file {path}: {exc}") from exc
            if kind not in NO_AREA and len(points) >= (2 if kind in (1, 2) else 3):
                outlines.append(Outline(name, kind, region.get("NegativeROA") == "1", points))
    return outlines


def _layer_name(layer: ET.Element) -> str:
    if name := (layer.get("Name") or "").strip():
        return name
    attribute = layer.find("Attributes/Attribute")
    if attribute is None:
        return UNNAMED
    if (attribute.get("Name") or DEFAULT_ATTRIBUTE).strip() != DEFAULT_ATTRIBUTE:
        return str(attribute.get("Name")).strip()
    return (attribute.get("Value") or "").strip() or UNNAMED


def label_names(paths: list[Path]) -> list[str]:
    """The class names of the regions in ``paths`` (not holes: a hole names no class of its own, as
    the plan's :func:`find_imagescope` counts them), sorted; unreadable files are skipped."""
    names: set[str] = set()
    for path in paths:
        try:
            names |= set(_area_names(path))
        except LabelError:
            continue
    return sorted(names)


def imagescope_label(path: str | Path, shape: tuple[int, int], classes: dict[str, int], instances: bool) -> np.ndarray:
    """One ImageScope file → (H, W) uint8 class map, or with ``instances`` an int32 instance label map
    (one instance per region); later regions on top, holes cut from their class; class-0 names left out.

    Raises:
        LabelError: the file is unreadable or names a class ``classes`` lacks.
    """
    h, w = shape
    canvas = Image.new("I" if instances else "L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    owners: dict[int, int] = {}  # object id (instances) → class
    for k, outline in enumerate(read_imagescope(path), start=1):
        if outline.negative and not classes.get(outline.name):  # a hole in a class not drawn: nothing to cut
            continue
        if outline.name not in classes:
            raise LabelError(
                f"ImageScope file {path} has a layer named {outline.name!r}, which labels.classes "
                f"{sorted(classes)} lacks; add it (0 leaves it out)"
            )
        cls = classes[outline.name]
        if cls == 0:
            continue
        if outline.negative:  # a hole: cleared where earlier regions of its class lie
            label = np.asarray(canvas)
            hole = Image.new("1", (w, h), 0)
            _draw(ImageDraw.Draw(hole), outline, 1)
            layer = np.isin(label, [i for i, c in owners.items() if c == cls]) if instances else label == cls
            canvas = Image.fromarray(np.where(np.asarray(hole) & layer, 0, label).astype(label.dtype))
            draw = ImageDraw.Draw(canvas)
            continue
        _draw(draw, outline, k if instances else cls)
        owners[k] = cls
    label = np.asarray(canvas)
    if not instances:
        return label.astype(np.uint8)
    return encode_instances(label.astype(np.int32), owners)


def outline_label(
    kind: str, path: str | Path, shape: tuple[int, int], classes: dict[str, int], instances: bool
) -> np.ndarray:
    """The label map of one outline file of ``kind`` (``imagescope`` or ``labelme``), as its reader draws it."""
    read = imagescope_label if kind == "imagescope" else labelme.labelme_label
    return read(path, shape, classes, instances)


def outline_names(kind: str, paths: list[Path]) -> list[str]:
    """The class names in outline files of ``kind`` (``imagescope`` or ``labelme``), sorted."""
    return (label_names if kind == "imagescope" else labelme.label_names)(paths)


def _draw(draw: ImageDraw.ImageDraw, outline: Outline, value: int) -> None:
    xs, ys = [p[0] for p in outline.points], [p[1] for p in outline.points]
    if outline.kind == 2:  # an ellipse: two corners of its box
        draw.ellipse((min(xs), min(ys), max(xs), max(ys)), fill=value)
    elif outline.kind == 1 and len(outline.points) < 3:  # a rectangle stored as two corners
        draw.rectangle((min(xs), min(ys), max(xs), max(ys)), fill=value)
    else:
        draw.polygon(outline.points, fill=value, outline=value)


# --------------------------------------------------------------------------- segops plan


def find_imagescope(root: Path, files: list[str], pictures: list[str], task: str | None = None) -> Detection | None:
    """ImageScope XML files beside their images (MoNuSeg's test folder: ``x.tif`` + ``x.xml``) or in a
    mask-named sibling folder (``Tissue Images/x.tif`` + ``Annotations/x.xml``), as
    :func:`segops.data.sidecars.find_outlines` finds them (Pascal VOC's box ``.xml`` files are of
    another kind): layer names → classes 1..K, instance task when an image holds two regions of one
    name (nuclei, cells)."""
    return find_outlines(root, files, pictures, task, "imagescope", ".xml", "ImageScope XML", _area_names)


def _area_names(path: Path) -> list[str]:
    return [o.name for o in read_imagescope(path) if not o.negative]

"""Label specs of annotation files that name their images: VIA JSON, CVAT XML, Label Studio JSON
and Supervisely projects (drawn as COCO polygons, boxes and masks; see :mod:`segops.config.sources`
for the union they join)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from segops.config.spec import Spec


class ViaLabels(Spec):
    """VGG Image Annotator (VIA 1 / 2) JSON: ``path`` and ``more_files`` (other splits, as the Mask
    R-CNN balloon tutorial ships ``train/via_region_data.json`` and ``val/…``), images found by the
    ``filename`` beside their file, else by name. Polygons, rectangles, circles and ellipses are
    regions (points and lines are no area); a region's class is ``classes[name]`` for the name its
    ``region_attributes[attribute]`` holds (``object`` without one); by default every name in the
    files, numbered 1..K in sorted order. With ``instances: true`` each region is one instance.
    """

    kind: Literal["via"]
    path: Path
    more_files: tuple[Path, ...] = Field(default=(), description="Further VIA files (other splits).")
    attribute: str | None = Field(default=None, description="The region attribute that names a region's class.")
    classes: dict[str, Annotated[int, Field(ge=0, le=255)]] | None = None
    instances: bool = Field(default=False, description="Each region one instance (for arch: maskrcnn).")


class CvatLabels(Spec):
    """CVAT's "CVAT for images 1.1" XML export (``annotations.xml``; ``more_files``: other tasks' or
    splits'), images found by their ``name`` beside the file, else by name. Polygons, boxes (turned
    by ``rotation``), ellipses and masks are shapes, the higher ``z_order`` on top; polylines, points,
    skeletons and cuboids are no area. A shape's class is ``classes[label]`` (0 leaves it out); by
    default every label, numbered 1..K in name order. With ``instances: true`` each shape is one instance.
    """

    kind: Literal["cvat"]
    path: Path
    more_files: tuple[Path, ...] = Field(default=(), description="Further CVAT XML files (other tasks, splits).")
    classes: dict[str, Annotated[int, Field(ge=0, le=255)]] | None = None
    instances: bool = Field(default=False, description="Each shape one instance (for arch: maskrcnn).")


class LabelStudioLabels(Spec):
    """Label Studio's ``JSON`` or ``JSON-MIN`` export (``more_files``: other projects' or splits'),
    each task's image found by the name in its URL (an upload's ``8f2a91c3-`` prefix dropped).
    Polygons, rectangles and ellipses (percent of the image, turned by ``rotation``) and brush strokes
    are regions, later ones on top; keypoints and text are no area. A region's class is
    ``classes[label]`` of its first label (0 leaves it out); by default every label, numbered 1..K in
    name order. With ``instances: true`` each region is one instance.
    """

    kind: Literal["label-studio"]
    path: Path
    more_files: tuple[Path, ...] = Field(default=(), description="Further Label Studio JSON exports.")
    classes: dict[str, Annotated[int, Field(ge=0, le=255)]] | None = None
    instances: bool = Field(default=False, description="Each region one instance (for arch: maskrcnn).")


class SuperviselyLabels(Spec):
    """A Supervisely project (as Dataset Ninja publishes public datasets): ``path`` holds
    ``meta.json`` and dataset folders of ``img/<name>`` with ``ann/<name>.json``. Polygons (with
    holes), rectangles and bitmaps are objects of class ``classes[classTitle]`` (a title mapped to 0
    is left out); by default the area classes of ``meta.json`` numbered 1..K in its order. An image
    whose annotation lists no object has nothing to segment; one without an annotation file is
    unlabelled. With ``instances: true`` each object is one instance.
    """

    kind: Literal["supervisely"]
    path: Path
    classes: dict[str, Annotated[int, Field(ge=0, le=255)]] | None = None
    instances: bool = Field(default=False, description="Each object one instance (for arch: maskrcnn).")

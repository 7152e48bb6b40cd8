"""Microscopy-like scenes of touching and overlapping objects of several classes, with instance-id
PNGs, class PNGs and COCO JSON."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

log = logging.getLogger(__name__)

#: class index → COCO category name. Cells: bright round bodies with a darker membrane and
#: nucleus; rods: dark elongated capsules; rings: thin bright outlines (a vesicle).
INSTANCE_CLASS_NAMES = {1: "cell", 2: "rod", 3: "ring"}


@dataclass(frozen=True)
class InstanceArchiveSummary:
    """What :func:`make_instance_archive` wrote. Images, instances and classes share file names.

    Attributes:
        images: folder of (H, W) uint8 grayscale PNGs.
        instances: folder of uint16 instance-id PNGs: 0 = background, k = k-th object drawn.
        classes: folder of uint8 class-index PNGs: 0 = background, k = ``class_names[k - 1]``.
        annotations: COCO JSON (RLE masks) of the same visible instances, ``file_name``
            relative to ``images``.
        class_names: the COCO category name of each class, category id = class index.
    """

    images: Path
    instances: Path
    classes: Path
    annotations: Path
    n_images: int
    n_instances: int
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class _Scene:
    image: np.ndarray  # (H, W) uint8
    ids: np.ndarray  # (H, W) uint16 visible instance ids 1..N, in drawing order (later on top)
    classes: tuple[int, ...]  # class of instance k at [k - 1]
    shapes: tuple[np.ndarray, ...]  # full (H, W) bool masks before occlusion, in drawing order


def make_instance_archive(
    out: str | Path, count: int = 40, size: int = 128, seed: int = 0, classes: int = 2
) -> InstanceArchiveSummary:
    """Write ``count`` scenes of 3–8 objects (rarely fewer: one that finds no spot is left out).

    Layout: ``images/scene-NNNN.png`` (gray), ``instances/scene-NNNN.png`` (uint16 ids),
    ``classes/scene-NNNN.png`` (uint8 classes) and ``annotations.json`` (COCO, RLE masks,
    category id = class index). Every scene holds at least one overlapping pair (the second
    object is drawn over the first); later objects are on top, and every object keeps at
    least half its area visible. Each scene shows every class when it has enough objects.

    Args:
        size: image height and width in pixels (object sizes scale with it); at least 48.
        classes: 1–3 classes: cell, rod, ring (see :data:`INSTANCE_CLASS_NAMES`).

    Raises:
        ValueError: ``classes`` or ``size`` out of range.
    """
    if not 1 <= classes <= len(INSTANCE_CLASS_NAMES):
        raise ValueError(f"classes must be 1..{len(INSTANCE_CLASS_NAMES)}, got {classes}")
    if size < 48:
        raise ValueError(f"size must be at least 48 pixels, got {size}")
    out = Path(out)
    images, instances, class_dir = out / "images", out / "instances", out / "classes"
    for folder in (images, instances, class_dir):
        folder.mkdir(parents=True, exist_ok=True)
    names = tuple(INSTANCE_CLASS_NAMES[c] for c in range(1, classes + 1))
    coco: dict = {
        "info": {"description": f"segops synth instances (seed {seed})"},
        "images": [],
        "annotations": [],
        "categories": [{"id": c, "name": n, "supercategory": "object"} for c, n in enumerate(names, start=1)],
    }
    for i in range(count):
        scene = _instance_scene(np.random.default_rng([seed, 20_000 + i]), size, classes)
        name = f"scene-{i:04d}.png"
        Image.fromarray(scene.image).save(images / name)
        Image.fromarray(scene.ids).save(instances / name)
        class_of = np.array((0, *scene.classes), dtype=np.uint8)
        Image.fromarray(class_of[scene.ids]).save(class_dir / name)
        coco["images"].append({"id": i + 1, "file_name": name, "height": size, "width": size})
        coco["annotations"] += _coco_annotations(scene, i + 1, len(coco["annotations"]) + 1)
    annotations = out / "annotations.json"
    annotations.write_text(json.dumps(coco, indent=1))
    n_instances = len(coco["annotations"])
    log.info("wrote %d instance scenes (%d objects) to %s", count, n_instances, out)
    return InstanceArchiveSummary(images, instances, class_dir, annotations, count, n_instances, names)


def _instance_scene(rng: np.random.Generator, size: int, n_classes: int) -> _Scene:
    """One scene; drawn again (same stream) in the rare case that fewer than two objects fit."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    while True:
        n = int(rng.integers(3, 9))
        kinds = rng.permutation([*range(1, n_classes + 1), *rng.integers(1, n_classes + 1, n - n_classes)])
        image = _background(rng, yy, xx)
        ids = np.zeros((size, size), dtype=np.uint16)
        shapes: list[np.ndarray] = []
        objects: list[tuple[float, float, _Object]] = []  # (cy, cx, object)
        for cls in kinds.tolist():
            placed = _place(rng, cls, ids, shapes, objects, yy, xx)
            if placed is None:
                continue
            mask, look, where = placed
            image[mask] = look[mask]
            shapes.append(mask)
            objects.append(where)
            ids[mask] = len(shapes)
        if len(shapes) >= 2:  # the second leans on the first (see _place): an overlapping pair
            break
    image = ndimage.gaussian_filter(image, 0.6) + rng.normal(0, 5, image.shape)
    pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return _Scene(pixels, ids, tuple(o.cls for _, _, o in objects), tuple(shapes))


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Dim, unevenly lit background with slow blotches: (H, W) float32 around 50..90."""
    size = yy.shape[0]
    level = rng.uniform(60, 80) + rng.uniform(-10, 10) * (xx / size) + rng.uniform(-10, 10) * (yy / size)
    blotches = ndimage.gaussian_filter(rng.normal(0, 1, yy.shape), sigma=size / 16)
    return (level + 8 * blotches / blotches.std()).astype(np.float32)


def _place(
    rng: np.random.Generator,
    cls: int,
    ids: np.ndarray,
    shapes: list[np.ndarray],
    objects: list[tuple[float, float, _Object]],
    yy: np.ndarray,
    xx: np.ndarray,
    attempts: int = 40,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, _Object]] | None:
    """Find a spot for one object of class ``cls``: (mask, appearance, (cy, cx, object)), or None.

    The second object always leans on the first (their masks overlap); later ones lean on a
    random earlier one half the time, else go anywhere. A spot is refused if the object would
    hide more than half of an earlier one, or if too little of it is inside the image.
    """
    size = yy.shape[0]
    scale, margin = size / 128, 0.08 * size
    min_pixels = 20 * scale**2
    areas = [int(s.sum()) for s in shapes]
    for _ in range(attempts):
        obj = _random_object(rng, cls, scale)
        anchor = _anchor(rng, len(shapes))
        if anchor is None:
            cy, cx = rng.uniform(margin, size - margin, 2)
        else:
            ay, ax, other = objects[anchor]
            angle, reach = rng.uniform(0, 2 * np.pi), (other.extent + obj.extent) * rng.uniform(0.45, 0.85)
            cy, cx = ay + reach * np.sin(angle), ax + reach * np.cos(angle)
        if not (margin <= cy <= size - margin and margin <= cx <= size - margin):
            continue
        mask, look = obj.draw(yy, xx, float(cy), float(cx))
        if mask.sum() < min_pixels or (anchor is not None and not (mask & shapes[anchor]).any()):
            continue
        kept = np.bincount(ids[~mask].ravel(), minlength=len(shapes) + 1)[1:]
        if all(k >= max(0.5 * a, min_pixels) for k, a in zip(kept, areas)):
            return mask, look, (float(cy), float(cx), obj)
    return None


def _anchor(rng: np.random.Generator, placed: int) -> int | None:
    """The earlier object the next one leans on: the first for the second, else a random one half the time."""
    if placed == 1:
        return 0
    if placed and rng.random() < 0.5:
        return int(rng.integers(placed))
    return None


@dataclass(frozen=True)
class _Object:
    """One object's look, before it is placed. Lengths in pixels, ``angle`` in radians."""

    cls: int  # 1 cell (ellipse), 2 rod (capsule), 3 ring (disk with a bright rim)
    angle: float
    length: float  # cell/ring: radius along the long axis; rod: length of its core segment
    width: float  # cell/ring: radius across; rod: half its thickness
    contrast: float  # grey levels above (cell, ring) or below (rod) the background
    nucleus: tuple[float, float, float]  # cell: (dy, dx, radius) in units of its radii
    texture_seed: int

    @property
    def extent(self) -> float:
        """A typical radius, for placing objects next to each other."""
        return self.width + self.length / 4 if self.cls == 2 else (self.length + self.width) / 2

    def draw(self, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
        """(mask (H, W) bool, appearance (H, W) float32) of the object centred at (cy, cx)."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        u = (xx - cx) * cos + (yy - cy) * sin
        v = -(xx - cx) * sin + (yy - cy) * cos
        grain = ndimage.gaussian_filter(np.random.default_rng(self.texture_seed).normal(0, 1, yy.shape), 1.0) * 20
        if self.cls == 2:
            along = np.clip(u, -self.length / 2, self.length / 2)
            rho = np.hypot(u - along, v) / self.width
            look = 70 - self.contrast * (1 - 0.3 * rho**2) + 6 * np.sin(1.3 * u) + 0.5 * grain
        elif self.cls == 1:
            rho = np.hypot(u / self.length, v / self.width)
            dy, dx, radius = self.nucleus
            nucleus = np.hypot(u / self.length - dx, v / self.width - dy) <= radius
            look = 70 + self.contrast * (1 - 0.35 * rho**2) - 40 * (rho > 0.82) - 30 * nucleus + grain
        else:
            rho = np.hypot(u / self.length, v / self.width)
            look = 80 + self.contrast * (rho > 0.7) + 0.5 * grain
        return rho <= 1, look.astype(np.float32)


def _random_object(rng: np.random.Generator, cls: int, scale: float) -> _Object:
    """Size, orientation, contrast and texture of one object of class ``cls`` (sizes × ``scale``)."""
    angle, seed = float(rng.uniform(0, np.pi)), int(rng.integers(2**31))
    if cls == 1:
        radius = rng.uniform(8, 13) * scale
        nucleus = (*rng.uniform(-0.3, 0.3, 2), rng.uniform(0.28, 0.4))
        return _Object(1, angle, radius, radius * rng.uniform(0.7, 1.0), rng.uniform(70, 100), nucleus, seed)
    if cls == 2:
        length, half_width = rng.uniform(18, 32) * scale, rng.uniform(2.2, 3.5) * scale
        return _Object(2, angle, length, half_width, rng.uniform(35, 55), (0.0, 0.0, 0.0), seed)
    radius = rng.uniform(7, 11) * scale
    return _Object(3, angle, radius, radius, rng.uniform(70, 95), (0.0, 0.0, 0.0), seed)


def _coco_annotations(scene: _Scene, image_id: int, first_id: int) -> list[dict]:
    """One COCO annotation (compressed RLE, bbox, area) per visible instance, in drawing order."""
    from pycocotools import mask as mask_utils

    anns = []
    for k, cls in enumerate(scene.classes, start=1):
        mask = scene.ids == k
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        anns.append(
            {
                "id": first_id + k - 1,
                "image_id": image_id,
                "category_id": cls,
                "iscrowd": 0,
                "area": int(mask.sum()),
                "bbox": bbox,
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
            }
        )
    return anns

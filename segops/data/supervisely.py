"""Supervisely projects (the format Dataset Ninja publishes its public datasets in) → label maps,
and ``segops plan``'s detection of them.

A project holds ``meta.json`` (the classes: ``title`` and ``shape``) and one folder per dataset
with ``img/<name>`` and ``ann/<name>.json`` (the image's full file name, then ``.json``). An
annotation lists ``objects``, each with a ``classTitle`` and a ``geometryType``: ``polygon``
(``points.exterior`` [[x, y], …], holes in ``points.interior``), ``rectangle`` (two corners),
``bitmap`` (a base64, zlib-compressed PNG whose nonzero or opaque pixels are the object, placed
at ``bitmap.origin`` [x, y]) or ``alpha_mask`` (the same, opaque above half); points, lines and
graphs are no area and are left out. See :class:`~segops.config.sources.SuperviselyLabels`.
"""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from segops.data.detection import Detection
from segops.data.instances import objects_label
from segops.errors import LabelError

#: Geometry types that cover an area.
AREA_GEOMETRIES = ("polygon", "rectangle", "bitmap", "alpha_mask")
#: Annotation files ``segops plan`` reads for classes and objects (all up to this many, else a spread sample).
PLAN_FILES = 2000


def annotation_index(project: str | Path) -> dict[str, str]:
    """Absolute image path → its annotation file, for every ``<dataset>/ann/<name>.json`` under ``project``."""
    index = {}
    for ann in Path(project).rglob("*.json"):
        if ann.parent.name == "ann" and ann.name != "meta.json":
            image = ann.parent.parent / "img" / ann.name[: -len(".json")]
            index[str(image.resolve())] = str(ann.resolve())
    return index


def project_classes(project: str | Path, annotations: list[str] | None = None) -> dict[str, int]:
    """Class title → class 1..K: the area classes of ``meta.json`` in its order, else every title
    the ``annotations`` use, sorted."""
    meta = Path(project) / "meta.json"
    if meta.is_file():
        try:
            classes = json.loads(meta.read_text(encoding="utf-8")).get("classes", [])
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise LabelError(f"cannot read Supervisely meta {meta}: {type(exc).__name__}: {exc}") from exc
        titles = [str(c["title"]) for c in classes if c.get("shape", "polygon") in (*AREA_GEOMETRIES, "any")]
        if titles:
            return {title: k + 1 for k, title in enumerate(titles)}
    titles = {str(o.get("classTitle")) for a in annotations or [] for o in _objects(a) if _is_area(o)}
    return {title: k + 1 for k, title in enumerate(sorted(titles))}


def supervisely_label(path: str | Path, shape: tuple[int, int], classes: dict[str, int], instances: bool) -> np.ndarray:
    """One annotation file → (H, W) uint8 class map (later objects on top), or with ``instances``
    an int32 instance label map, one instance per object.

    Raises:
        LabelError: unreadable, for another image size, a class ``classes`` lacks, or a shape
            that cannot be drawn.
    """
    doc = _read(path)
    h, w = shape
    size = doc.get("size") or {}
    if size.get("height", h) != h or size.get("width", w) != w:
        raise LabelError(
            f"Supervisely annotation {path} is for a {size.get('width')}x{size.get('height')} image, not {w}x{h}"
        )
    masks, labels = [], []
    for k, obj in enumerate(doc.get("objects") or []):
        if not _is_area(obj):
            continue
        title = str(obj.get("classTitle"))
        if title not in classes:
            raise LabelError(
                f"Supervisely annotation {path} has class {title!r}, which labels.classes {sorted(classes)} lacks"
            )
        if classes[title]:
            masks.append(_object_mask(obj, h, w, f"object {k} ({title!r}) of {path}"))
            labels.append(classes[title])
    return objects_label(masks, labels, (h, w), instances, f"Supervisely annotation {path}")


def _read(path: str | Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LabelError(f"cannot read Supervisely annotation {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("objects", []), list):
        raise LabelError(f"{path} is not a Supervisely annotation (no 'objects' list)")
    return doc


def _objects(path: str | Path) -> list[dict[str, Any]]:
    try:
        return _read(path).get("objects") or []
    except LabelError:
        return []


def _is_area(obj: dict[str, Any]) -> bool:
    return obj.get("geometryType") in AREA_GEOMETRIES


def _object_mask(obj: dict[str, Any], h: int, w: int, where: str) -> np.ndarray:
    kind = obj["geometryType"]
    try:
        if kind in ("bitmap", "alpha_mask"):
            return _bitmap(obj["bitmap"], h, w, alpha=kind == "alpha_mask")
        exterior = [(float(x), float(y)) for x, y in obj["points"]["exterior"]]
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        if kind == "rectangle":
            (x0, y0), (x1, y1) = exterior[:2]
            draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=1)
        elif len(exterior) >= 3:
            draw.polygon(exterior, fill=1, outline=1)
            for hole in obj["points"].get("interior") or []:
                if len(hole) >= 3:
                    draw.polygon([(float(x), float(y)) for x, y in hole], fill=0)
        return np.asarray(canvas, dtype=bool)
    except (KeyError, TypeError, ValueError, OSError, zlib.error) as exc:
        raise LabelError(f"{where}: a {kind} that cannot be drawn: {type(exc).__name__}: {exc}") from exc


def _bitmap(bitmap: dict[str, Any], h: int, w: int, alpha: bool) -> np.ndarray:
    """A Supervisely bitmap (base64 of a zlib-compressed PNG, at ``origin`` [x, y]) on the image."""
    with Image.open(io.BytesIO(zlib.decompress(base64.b64decode(bitmap["data"])))) as img:
        pixels = np.asarray(img)
    if pixels.ndim == 3:
        pixels = pixels[..., 3] if pixels.shape[2] == 4 else pixels.max(axis=2)
    region = pixels > 127 if alpha else pixels > 0
    x0, y0 = (int(v) for v in bitmap["origin"])
    mask = np.zeros((h, w), bool)
    region = region[: max(0, h - y0), : max(0, w - x0)]
    mask[y0 : y0 + region.shape[0], x0 : x0 + region.shape[1]] = region
    return mask


# --------------------------------------------------------------------------- segops plan


def find_supervisely(root: Path, files: list[str], task: str | None = None) -> Detection | None:
    """A Supervisely project (``<dataset>/img/<name>`` with ``<dataset>/ann/<name>.json``) under
    ``root``, or None when fewer than 2 images have their annotation. Classes from ``meta.json``;
    instance task when an image holds two objects of one class."""
    names = set(files)
    pairs = [
        (f, a)
        for f in files
        if PurePosixPath(f).parent.name == "img"
        and (a := str(PurePosixPath(f).parent.parent / "ann" / f"{PurePosixPath(f).name}.json")) in names
    ]
    if len(pairs) < 2:
        return None
    projects = {PurePosixPath(f).parent.parent.parent for f, _ in pairs}
    project = min(projects, key=lambda p: len(p.parts))
    sample = [str(root / a) for _, a in pairs[:: max(1, len(pairs) // PLAN_FILES)]]
    classes = project_classes(root / project, sample)
    if not classes:
        return None
    counts = [Counter(str(o.get("classTitle")) for o in _objects(a) if _is_area(o)) for a in sample]
    crowded = max((n for c in counts for n in c.values()), default=0)
    chosen = task or ("instance" if crowded >= 2 else "semantic")
    labels: dict[str, Any] = {"kind": "supervisely", "path": str(root / project)}
    if chosen == "instance":
        labels["instances"] = True
    datasets = sorted({PurePosixPath(f).parent.parent.name for f, _ in pairs})
    note = (
        f"Supervisely project {project if str(project) != '.' else root.name}: {len(pairs)} images with their "
        f"annotation in {len(datasets)} dataset folder(s) ({', '.join(datasets[:4])}); classes "
        f"{'from meta.json' if (root / project / 'meta.json').is_file() else 'as the files name them'} → "
        f"1..{len(classes)}; up to {crowded} objects of one class per image → {chosen}"
    )
    source = {"kind": "images", "path": str(root / project), "include": ["**/img/**"], "labels": labels}
    return Detection(
        source,
        chosen,
        len(classes) + 1,
        "supervisely",
        "supervisely",
        len(pairs),
        len(pairs),
        {"labels": note},
        class_names={k: title for title, k in classes.items()},
    )

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
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from segops.data.detection import Detection
from segops.data.instances import objects_label
from segops.data.mask_names import is_mask_dir
from segops.data.unannotated import clean_parts
from segops.errors import LabelError

#: Shape types that cover an area (the others, lines and points, are left out).
AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
#: Files ``segops plan`` reads for the class names (all of them up to this many, else a spread sample).
PLAN_FILES = 2000


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
    (``images/x.jpg`` + ``annotations/x.json``), or None when fewer than half of the images under
    the image folder have one. Classes: every label name of an area shape in the files (read all
    up to :data:`PLAN_FILES`, else a spread sample), numbered 1..K in sorted order; instance task
    when an image holds two objects of one name, as for COCO."""
    best = sidecar_pairs(files, pictures, ".json")
    if best is None:
        return None
    under, paired, image_dir, label_dir = best
    few = len(paired) < 0.5 * len(under)  # files for defective parts only (the clean ones need none)?
    if len(paired) < 2 or (few and any(is_mask_dir(part) for f in files for part in PurePosixPath(f).parts[:-1])):
        return None  # a mask folder is there: the masks label the images, not a few stray JSON files
    step = max(1, len(paired) // PLAN_FILES)
    sample = [root / (label_dir + str(PurePosixPath(p).with_suffix(".json"))) for p in paired[::step]]
    try:
        docs = [read_labelme(path) for path in sample[:20]]
    except LabelError:
        return None  # JSON files of another kind
    names = label_names(sample)
    if not names or (few and not all(any(_is_area(s) for s in d["shapes"]) for d in docs)):
        return None
    crowded = max(
        (n for d in docs for n in Counter(str(s.get("label")) for s in d["shapes"] if _is_area(s)).values()),
        default=0,
    )
    chosen = task or ("instance" if crowded >= 2 else "semantic")
    classes = {name: k + 1 for k, name in enumerate(names)}
    labels: dict[str, Any] = {
        "kind": "labelme",
        "path": str(root / label_dir) if label_dir else str(root),
        "pattern": "{rel_stem}.json",
        "classes": classes,
    }
    if chosen == "instance":
        labels["instances"] = True
    read = f"{len(sample)} read" if step > 1 else "all read"
    notes = {
        "labels": (
            f"LabelMe files {f'in {label_dir[:-1]}' if label_dir else 'beside their images'}: {len(paired)} of "
            f"{len(under)} images have one ({read}); "
            f"label names → classes 1..{len(names)} in name order; up to {crowded} shapes of one name per image "
            f"→ {chosen}"
        )
    }
    image_root = root / image_dir if image_dir else root
    n_paired = len(paired) + without_file(root, files, image_root, under, paired, few, labels, notes)
    if note := outside_note(root, files, pictures, image_dir, ".json", "LabelMe"):
        notes["path"] = note
    source = {"kind": "images", "path": str(image_root), "labels": labels}
    return Detection(
        source,
        chosen,
        len(names) + 1,
        "labelme",
        "labelme",
        len(under),
        n_paired,
        notes,
        class_names={k: name for name, k in classes.items()},
    )


def sidecar_pairs(files: list[str], pictures: list[str], ext: str) -> tuple[list[str], list[str], str, str] | None:
    """(the pictures under the image folder, those with an ``ext`` file of their name, the image folder
    and the annotation folder as prefixes) for the folder pair where the most pictures have one:
    beside them ("", "") or in a mask-named sibling folder; None where no pair is possible."""
    sidecars = {f for f in files if f.lower().endswith(ext)}
    best: tuple[list[str], list[str], str, str] | None = None
    for image_dir, label_dir in _folder_pairs(sidecars, pictures):
        under = [p[len(image_dir) :] for p in pictures if p.startswith(image_dir)]
        paired = [p for p in under if label_dir + str(PurePosixPath(p).with_suffix(ext)) in sidecars]
        if best is None or len(paired) > len(best[1]):
            best = (under, paired, image_dir, label_dir)
    return best


def outside_note(root: Path, files: list[str], pictures: list[str], image_dir: str, ext: str, tool: str) -> str | None:
    """A note on the pictures outside ``image_dir`` (a prefix) that have an ``ext`` file of their own
    beside them (MoNuSeg's ``MoNuSegTestData/`` beside the training folder pair): left out, with the
    command that plans them; None where there are none."""
    sidecars = {f for f in files if f.lower().endswith(ext)}
    outside = [
        p for p in pictures if not p.startswith(image_dir) and str(PurePosixPath(p).with_suffix(ext)) in sidecars
    ]
    if not image_dir or not outside:
        return None
    folders = sorted({str(PurePosixPath(p).parent) for p in outside})
    return (
        f"{len(outside)} image(s) outside it have {tool} files of their own ({', '.join(folders[:3])}): left out "
        f"(another split?); plan them with: segops plan {root / folders[0]}"
    )


def without_file(
    root: Path,
    files: list[str],
    image_root: Path,
    under: list[str],
    paired: list[str],
    few: bool,
    labels: dict[str, Any],
    notes: dict[str, str],
    tool: str = "LabelMe",
) -> int:
    """How many images without a ``tool`` file are planned as empty (``empty_when_missing``, set in
    ``labels``): all of them when ``few`` images have a file (fewer than half; each outlining
    something, as :func:`find_labelme` checked: parts labelled only where there is a defect, as in
    DAGM) and they look like the labelled ones, are not named as test data and are not annotated
    elsewhere; else none (unlabelled, said in ``notes``: with most images labelled, the rest are
    more likely not labelled yet)."""
    done = set(paired)
    missing = [p for p in under if p not in done]
    if not missing:
        return 0
    if few and clean_parts(root, files, image_root, paired, missing)[0]:
        labels["empty_when_missing"] = ["**"]
        notes["labels.empty_when_missing"] = (
            f"every sampled {tool} file outlines something, so the {len(missing)} image(s) without one are "
            "the defect-free parts: trained on and scored as empty masks; delete this line if they are "
            "merely not annotated yet"
        )
        return len(missing)
    notes["labels"] += f"; {len(missing)} image(s) have no {tool} file: unlabelled (segmented, never trained on)"
    return 0


def _folder_pairs(sidecars: set[str], pictures: list[str]) -> list[tuple[str, str]]:
    """("", "") and ("<parent>/<image dir>/", "<parent>/<mask-named dir>/") for sibling folders that
    hold the pictures and the annotation files (prefixes, "" for the root)."""
    pairs = {("", "")}
    json_dirs = {PurePosixPath(f).parts[:d] for f in sidecars for d in range(1, len(PurePosixPath(f).parts))}
    for picture in pictures:
        parts = PurePosixPath(picture).parts
        for d in range(len(parts) - 1):
            for dirs in json_dirs:
                if len(dirs) == d + 1 and dirs[:d] == parts[:d] and dirs[d] != parts[d] and is_mask_dir(dirs[d]):
                    pairs.add(("/".join(parts[: d + 1]) + "/", "/".join(dirs) + "/"))
    return sorted(pairs)


def _is_area(shape: dict[str, Any]) -> bool:
    return shape.get("shape_type", "polygon") in AREA_SHAPES

"""Label Studio's JSON exports (``JSON``: the tasks with their annotations; ``JSON-MIN``: one flat
row per task) → the COCO index the label readers draw from, and ``segops plan``'s detection of them.

A task names its image by URL: ``/data/upload/3/8f2a91c3-part_0001.jpg`` (an uploaded file, the
name prefixed with 8 hex digits and ``-``), ``/data/local-files/?d=photos/part_0001.jpg`` (local
storage), ``s3://bucket/part_0001.jpg`` or a plain path; segops finds the image by that name under
the images' folder. Its regions (``result`` of the first annotation that is not cancelled):
``polygonlabels`` (points in percent of the image), ``rectanglelabels`` and ``ellipselabels``
(percent, ``rotation`` in degrees about the top left corner, or the centre for ellipses), and
``brushlabels`` (Label Studio's bit-packed run-length encoding of the RGBA canvas; the alpha
channel is the region). Keypoints, text and choices cover no area and are left out. A region's
first label names its class. See :class:`~segops.config.sources.LabelStudioLabels`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from pycocotools import mask as mask_utils

from segops.data.coco import entry_or_problem, index_entries
from segops.data.detection import Detection, annotation_file_detection, annotation_files_spec, read_annotation_files
from segops.data.seg_layout import common_dir
from segops.errors import LabelError

#: Region types that cover an area, by the key that holds their labels.
AREA_TYPES = ("polygonlabels", "rectanglelabels", "ellipselabels", "brushlabels")
#: A URL or path that names an image file.
IMAGE_URL = re.compile(r"\.(jpe?g|png|tiff?|bmp|gif|webp|ppm)$", re.IGNORECASE)
#: The prefix Label Studio gives an uploaded file's name.
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
#: Points of the polygon an ellipse is drawn as.
ELLIPSE_POINTS = 32


def read_tasks(path: str | Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """(image URL, area regions) of every task in a Label Studio JSON or JSON-MIN export.

    Raises:
        LabelError: unreadable, not JSON, or not a Label Studio export (a list of tasks naming images).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabelError(f"cannot read Label Studio file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, list) or not data or not all(isinstance(t, dict) for t in data):
        raise LabelError(f"{path} is not a Label Studio export (a JSON list of tasks)")
    tasks = []
    for task in data:
        url = _image_url(task["data"] if isinstance(task.get("data"), dict) else task)
        if url is None:
            raise LabelError(f"{path} is not a Label Studio image export: a task without an image ({task.get('id')})")
        tasks.append((url, _regions(task)))
    return tasks


def _image_url(data: dict[str, Any]) -> str | None:
    """A task's image: ``image``, else the first value naming an image file (a labelling config's
    ``$img`` or ``$photo``)."""
    if isinstance(data.get("image"), str):
        return data["image"]
    return next((v for v in data.values() if isinstance(v, str) and IMAGE_URL.search(v)), None)


def _regions(task: dict[str, Any]) -> list[dict[str, Any]]:
    """A task's area regions as ``{type, value, width, height}``: from its first annotation that is
    not cancelled (JSON), or from its flat rows (JSON-MIN: ``{"label": [{points, polygonlabels, …}]}``)."""
    if isinstance(task.get("annotations"), list):
        kept = [a for a in task["annotations"] if isinstance(a, dict) and not a.get("was_cancelled")]
        results = kept[0].get("result", []) if kept else []
        return [
            {
                "type": r["type"],
                "value": r["value"],
                "width": r.get("original_width"),
                "height": r.get("original_height"),
            }
            for r in results
            if isinstance(r, dict) and r.get("type") in AREA_TYPES and isinstance(r.get("value"), dict)
        ]
    regions = []
    for rows in task.values():
        for row in rows if isinstance(rows, list) else []:
            kind = next((k for k in AREA_TYPES if isinstance(row, dict) and k in row), None)
            if kind:
                regions.append(
                    {
                        "type": kind,
                        "value": row,
                        "width": row.get("original_width"),
                        "height": row.get("original_height"),
                    }
                )
    return regions


def image_names(url: str) -> list[str]:
    """The names a task's image URL may have on disk: the local-files path (``?d=``) or the URL's
    file name, and that name without an upload's ``8f2a91c3-`` prefix."""
    parsed = urlparse(url)
    local = parse_qs(parsed.query).get("d")
    name = unquote(local[0]) if local else PurePosixPath(unquote(parsed.path)).name
    bare = UPLOAD_PREFIX.sub("", PurePosixPath(name).name)
    return list(dict.fromkeys([name, bare]))


def label_names(tasks: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    """The first labels of the area regions, in name order."""
    return sorted({_label(r) for _, regions in tasks for r in regions} - {""})


def _label(region: dict[str, Any]) -> str:
    labels = region["value"].get(region["type"]) or [""]
    return str(labels[0])


def index_label_studio(
    files: list[Path], classes: dict[str, int] | None
) -> tuple[dict[str, dict[str, Any]], dict[int, int]]:
    """Label Studio files → (COCO image entries keyed as :func:`segops.data.coco.index_entries` keys
    them, the identity category map of their classes). ``classes``: label → class (0 leaves it out);
    by default every label in the files, 1..K in name order."""
    docs = [(Path(f), read_tasks(f)) for f in files]
    if classes is None:
        classes = {name: k + 1 for k, name in enumerate(label_names([t for _, d in docs for t in d]))}
    per_file = []
    for file, tasks in docs:
        pairs = []
        for n, (url, regions) in enumerate(tasks):
            entry = entry_or_problem(n, f"{file}#task={n}", _entry, file, n, url, regions, classes)
            pairs += [(name, entry) for name in image_names(url)]
        per_file.append((file, pairs))
    return index_entries(per_file), {c: c for c in classes.values()}


def _entry(file: Path, n: int, url: str, regions: list[dict[str, Any]], classes: dict[str, int]) -> dict[str, Any]:
    """One task → a COCO image entry (regions in their order, later on top)."""
    sizes = {(r["width"], r["height"]) for r in regions}
    if len(sizes) > 1 or (sizes and None in next(iter(sizes))):
        raise LabelError(f"task {n} ({url}) in Label Studio file {file}: its regions give no one original_width/height")
    w, h = (int(v) for v in next(iter(sizes))) if sizes else (None, None)  # no region: any size
    annotations = []
    for k, region in enumerate(regions):
        label = _label(region)
        where = f"region {k} ({region['type']}, {label!r}) of task {n} ({url}) in Label Studio file {file}"
        if label not in classes:
            raise LabelError(f"{where}: labels.classes {sorted(classes)} lacks {label!r}; add it (0 leaves it out)")
        if classes[label]:
            segmentation = _segmentation(region, h, w, where)
            annotations.append({"id": k, "category_id": classes[label], "segmentation": segmentation, "iscrowd": 0})
    return {"id": n, "uri": f"{file}#task={n}", "height": h, "width": w, "annotations": annotations}


def _segmentation(region: dict[str, Any], h: int, w: int, where: str) -> Any:
    """A region as a COCO segmentation: a polygon list in pixels, or an RLE for a brush stroke."""
    value, kind = region["value"], region["type"]
    try:
        if kind == "brushlabels":
            return _brush(value, h, w, where)
        if kind == "polygonlabels":
            points = [v for x, y in value["points"] for v in (x * w / 100, y * h / 100)]
            return [points] if len(points) >= 6 else []
        x, y = float(value["x"]) * w / 100, float(value["y"]) * h / 100
        a = math.radians(float(value.get("rotation", 0)))
        if kind == "rectanglelabels":  # turned about its top left corner
            bw, bh = float(value["width"]) * w / 100, float(value["height"]) * h / 100
            corners = [(0.0, 0.0), (bw, 0.0), (bw, bh), (0.0, bh)]
        else:  # ellipse: x, y the centre, turned about it
            rx, ry = float(value["radiusX"]) * w / 100, float(value["radiusY"]) * h / 100
            steps = (2 * math.pi * i / ELLIPSE_POINTS for i in range(ELLIPSE_POINTS))
            corners = [(rx * math.cos(t), ry * math.sin(t)) for t in steps]
        return [
            [
                v
                for dx, dy in corners
                for v in (x + dx * math.cos(a) - dy * math.sin(a), y + dx * math.sin(a) + dy * math.cos(a))
            ]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise LabelError(f"{where}: cannot read its coordinates: {type(exc).__name__}: {exc}") from exc


def _brush(value: dict[str, Any], h: int, w: int, where: str) -> dict[str, Any]:
    """A brush region's RLE → the image's COCO RLE (the decoded canvas' alpha channel)."""
    if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
        raise LabelError(f"{where}: a brush region without its rle list (format {value.get('format')!r})")
    canvas = decode_brush(value["rle"])
    if canvas.size != h * w * 4:
        raise LabelError(f"{where}: its canvas holds {canvas.size} values, the image {w}x{h}x4 = {h * w * 4}")
    mask = canvas.reshape(h, w, 4)[..., 3] > 0
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def decode_brush(rle: list[int]) -> np.ndarray:
    """Label Studio's brush encoding → the flat uint8 RGBA canvas it stores.

    The bytes are read as one bit string, most significant bit first: 32 bits the canvas' length,
    5 bits the value width minus 1, four 4-bit widths minus 1 of run lengths; then blocks until the
    canvas is full: 1 bit (1: one value repeated, 0: values one by one), 2 bits choosing a length
    width, the run length minus 1 in that width, then the value (repeated) or the values."""
    bits = (np.unpackbits(np.asarray(rle, np.uint8)) + ord("0")).tobytes().decode()
    at = 0

    def read(n: int) -> int:
        nonlocal at
        if at + n > len(bits):
            raise LabelError("brush rle ends before its canvas is full")
        at += n
        return int(bits[at - n : at], 2)

    size, word = read(32), read(5) + 1
    widths = [read(4) + 1 for _ in range(4)]
    out = np.zeros(size, np.uint8)
    i = 0
    while i < size:
        repeated = read(1)
        end = min(size, i + 1 + read(widths[read(2)]))
        if repeated:
            out[i:end] = read(word)
        else:
            for k in range(i, end):
                out[k] = read(word)
        i = end
    return out


# --------------------------------------------------------------------------- segops plan


def find_label_studio(root: Path, files: list[str], task: str | None = None) -> Detection | None:
    """Every Label Studio JSON export under ``root`` whose tasks' images are image files there,
    read as one dataset, or None. Classes: the regions' labels, 1..K in name order; instance task
    when an image holds two regions of one label."""
    exports = read_annotation_files(root, files, ".json", read_tasks)
    found = [(f, tasks) for f, tasks in exports if any(regions for _, regions in tasks)]
    if not found:
        return None
    by_name = {PurePosixPath(f).name: f for f in files}
    tasks = [t for _, doc in found for t in doc]
    matched = [
        next((by_name[PurePosixPath(n).name] for n in image_names(url) if PurePosixPath(n).name in by_name), None)
        for url, _ in tasks
    ]
    if 2 * sum(m is not None for m in matched) < len(tasks):
        return None
    labels = label_names(tasks)
    crowded = max((n for _, regions in tasks for n in Counter(map(_label, regions)).values()), default=0)
    chosen = task or ("instance" if crowded >= 2 else "semantic")
    spec = annotation_files_spec("label-studio", root, [f for f, _ in found], chosen)
    regions = sum(len(r) for _, r in tasks)
    note = (
        f"Label Studio export {', '.join(f for f, _ in found[:3])}: {len(tasks)} tasks, {regions} area regions; "
        f"labels → 1..{len(labels)} in name order; up to {crowded} regions of one label per image → {chosen}"
    )
    common = common_dir([m for m in matched if m is not None])
    return annotation_file_detection(root / common if common else root, spec, chosen, labels, len(tasks), note)

"""YOLO segmentation labels (Ultralytics, and Roboflow's default export) → label maps, and
``segops plan``'s detection of them.

One ``.txt`` per image (``images/train/x.jpg`` ↔ ``labels/train/x.txt``; Roboflow:
``train/images/x.jpg`` ↔ ``train/labels/x.txt``), one object per line:
``<class> x1 y1 x2 y2 … xn yn``, a polygon whose coordinates are fractions of the image's width
and height, classes numbered from 0. An empty file is an image without objects (Ultralytics'
background images). A line of 5 numbers is a box (YOLO detection): no outline, a label problem of
its image. Class names come from the dataset's YAML (``data.yaml``: ``names`` as a list or a
mapping). See :class:`~segops.config.sources.YoloLabels`.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageDraw

from segops.data.detection import Detection
from segops.data.instances import objects_label
from segops.data.unannotated import not_annotated, spread
from segops.errors import LabelError, PlanError

log = logging.getLogger(__name__)

#: Label files ``segops plan`` reads for the classes and objects (all up to this many, else a spread sample).
PLAN_FILES = 2000
#: Dataset YAML names Ultralytics and Roboflow use.
DATASET_YAMLS = ("data.yaml", "dataset.yaml", "data.yml")


def read_yolo(path: str | Path) -> list[tuple[int, np.ndarray]]:
    """A YOLO segmentation label file → [(YOLO class, (N, 2) polygon in fractions of width, height)].

    Raises:
        LabelError: unreadable, a line that is not a class and coordinate pairs, a box line
            (5 numbers: detection, not an outline), or a polygon of fewer than 3 points.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read YOLO label file {path}: {type(exc).__name__}: {exc}") from exc
    objects = []
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            cls, coords = int(tokens[0]), np.array([float(t) for t in tokens[1:]], dtype=np.float64)
        except ValueError as exc:
            raise LabelError(f"YOLO label file {path} line {n} is not a class and coordinates: {line[:80]!r}") from exc
        if len(coords) == 4:
            raise LabelError(
                f"YOLO label file {path} line {n} is a box (class cx cy w h: YOLO detection), not an outline; "
                "segmentation needs polygons (YOLO segmentation: class x1 y1 x2 y2 …)"
            )
        if cls < 0 or len(coords) % 2 or len(coords) < 6:
            raise LabelError(
                f"YOLO label file {path} line {n}: expected a class >= 0 and 3 or more x y pairs, got "
                f"{len(coords)} number(s) after class {cls}"
            )
        objects.append((cls, coords.reshape(-1, 2)))
    return objects


def yolo_label(path: str | Path, shape: tuple[int, int], instances: bool) -> np.ndarray:
    """One YOLO file → (H, W) uint8 class map (YOLO class k → class k + 1, later lines on top), or
    with ``instances`` an int32 instance label map, one instance per line.

    Raises:
        LabelError: see :func:`read_yolo`; a class above 254.
    """
    h, w = shape
    masks, classes = [], []
    for cls, polygon in read_yolo(path):
        if cls > 254:
            raise LabelError(f"YOLO label file {path} has class {cls}; at most 254 classes are supported")
        canvas = Image.new("L", (w, h), 0)
        points = [(float(x) * w, float(y) * h) for x, y in polygon]
        ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
        masks.append(np.asarray(canvas, dtype=bool))
        classes.append(cls + 1)
    return objects_label(masks, classes, (h, w), instances, f"YOLO label file {path}")


def yolo_classes(path: str | Path) -> set[int]:
    """The classes (k + 1) a YOLO file's lines name, without drawing them; none for a file that
    cannot be read (decoding lists it as a label problem of its image)."""
    try:
        return {cls + 1 for cls, _ in read_yolo(path)}
    except LabelError:
        return set()


def dataset_names(root: Path, files: list[str]) -> dict[int, str]:
    """YOLO class → name from the dataset YAML nearest the root (``names``: a list or a mapping)."""
    yamls = sorted((f for f in files if PurePosixPath(f).name.lower() in DATASET_YAMLS), key=lambda f: f.count("/"))
    for rel in yamls:
        try:
            doc = yaml.safe_load((root / rel).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        names = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(names, list):
            return {k: str(v) for k, v in enumerate(names)}
        if isinstance(names, dict):
            try:
                return {int(k): str(v) for k, v in names.items()}
            except (TypeError, ValueError):
                continue
    return {}


# --------------------------------------------------------------------------- segops plan


def find_yolo(root: Path, files: list[str], pictures: list[str], task: str | None = None) -> Detection | None:
    """YOLO label files for at least half of the pictures (``images/`` ↔ ``labels/`` with ``.txt``),
    or None. Classes: the dataset YAML's names, else every class the files use (read all up to
    :data:`PLAN_FILES`, else a spread sample), YOLO k → k + 1; instance task when an image holds
    two objects of one class, as for COCO and LabelMe. Images without a file are background (as
    Ultralytics reads them) unless something says they are merely not annotated.

    Raises:
        PlanError: the files hold boxes only (a detection dataset: no outlines to train on).
    """
    txts = {f for f in files if f.lower().endswith(".txt")}
    label_of = {p: lp for p in pictures if (lp := _label_path(p)) is not None and lp in txts}
    if len(label_of) < 2 or len(label_of) < 0.5 * len(pictures):
        return None
    layout = _layout(list(label_of))
    if layout is None:
        return None
    image_dir, labels_path, pattern, include = layout
    under = [p for p in pictures if p.startswith(image_dir) and (not include or "/images/" in "/" + p)]
    paired = [p for p in under if p in label_of]
    step = max(1, len(paired) // PLAN_FILES)
    counts: list[Counter] = []
    boxes = 0
    for p in paired[::step]:
        try:
            counts.append(Counter(cls + 1 for cls, _ in read_yolo(root / label_of[p])))
        except LabelError as exc:
            boxes += "is a box" in str(exc)
    if not counts:
        if boxes:
            raise PlanError(
                f"the YOLO label files under {root} hold boxes (class cx cy w h), not outlines: a detection "
                "dataset; segops trains on masks: export the dataset in YOLO segmentation format (polygons), "
                "COCO with segmentations, or masks"
            )
        return None
    names = dataset_names(root, files)
    used = set().union(*counts)
    n_classes = max([*used, *(k + 1 for k in names)], default=1)
    crowded = max((n for c in counts for n in c.values()), default=0)
    chosen = task or ("instance" if crowded >= 2 else "semantic")
    labels: dict[str, Any] = {"kind": "yolo", "path": str(root / labels_path) if labels_path else str(root)}
    labels["pattern"] = pattern
    if chosen == "instance":
        labels["instances"] = True
    unmasked = [p for p in under if p not in label_of]
    notes = {
        "labels": (
            f"YOLO segmentation files ({pattern}): {len(paired)} of {len(under)} images have one "
            f"({'all' if step == 1 else len(counts)} read); YOLO classes 0..{n_classes - 1} → 1..{n_classes}"
            + (" named in the dataset YAML" if names else "")
            + f"; up to {crowded} objects of one class per image → {chosen}"
        )
    }
    if unmasked:
        elsewhere = not_annotated(root, files, paired, spread(unmasked, 50))
        if elsewhere:
            notes["labels"] += f"; {len(unmasked)} image(s) have no file: unlabelled, as {elsewhere}"
        else:
            labels["empty_when_missing"] = ["**"]
            notes["labels.empty_when_missing"] = (
                f"{len(unmasked)} image(s) have no label file: background images, as Ultralytics reads them "
                "(trained as empty masks); delete this line if they are merely not annotated yet"
            )
    source: dict[str, Any] = {"kind": "images", "path": str(root / image_dir) if image_dir else str(root)}
    if include:
        source["include"] = include
    source["labels"] = labels
    n_paired = len(under) if "empty_when_missing" in labels else len(paired)
    class_names = {k + 1: name for k, name in names.items()}
    return Detection(
        source, chosen, n_classes + 1, "yolo", "yolo", len(under), n_paired, notes, class_names=class_names
    )


def _label_path(picture: str) -> str | None:
    """``a/images/b/x.jpg`` → ``a/labels/b/x.txt`` (the last ``images`` folder), else None."""
    parts = PurePosixPath(picture).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].lower() == "images":
            return str(PurePosixPath(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt"))
    return None


def _layout(paired: list[str]) -> tuple[str, str, str, list[str]] | None:
    """(image folder prefix, label folder, pattern, include) of the paired pictures: one
    ``images/`` folder (Ultralytics: ``images/train``, ``images/val`` ↔ ``labels/…``) read as the
    image root with ``{rel_stem}.txt``; or split folders each holding ``images/`` (Roboflow:
    ``train/images``, ``valid/images``) read from their parent with ``{parent_dir}/labels/{stem}.txt``."""
    tops = {_images_prefix(p) for p in paired}
    if len(tops) == 1:
        (top,) = tops
        base = top[: -len("images/")]
        return top, base + "labels", "{rel_stem}.txt", []
    parents = {PurePosixPath(t).parent.parent for t in tops}
    flat = all(p.count("/") == _images_prefix(p).count("/") for p in paired)
    if len(parents) == 1 and flat:
        (parent,) = parents
        prefix = "" if str(parent) == "." else f"{parent}/"
        return prefix, prefix.rstrip("/"), "{parent_dir}/labels/{stem}.txt", ["*/images/**"]
    log.info("YOLO label files in %d image folders of different depths: not planned", len(tops))
    return None


def _images_prefix(picture: str) -> str:
    """The picture's path up to and including its last ``images/`` folder."""
    parts = PurePosixPath(picture).parts
    i = max(k for k in range(len(parts) - 1) if parts[k].lower() == "images")
    return "/".join(parts[: i + 1]) + "/"

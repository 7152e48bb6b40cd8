"""Finding a Kaggle-style RLE CSV beside an image folder, for ``segops plan``: which CSV, which
columns hold the image id, the encodings and the class, the pixel order, and whether each row is
one object. See :mod:`segops.data.rle_csv`."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from segops.data.detection import Detection
from segops.data.rle_csv import RLE_TEXT, class_numbers, image_keys, is_empty_rle, likely_order

#: CSV rows read to guess the columns (the whole file is read by the resolver at ingest).
SAMPLE_ROWS = 5_000
#: Column names that hold a class.
CLASS_COLUMN = re.compile(r"class|label|categ|type", re.IGNORECASE)


def find_rle_csv(root: Path, files: list[str], images: list[str], task: str | None = None) -> Detection | None:
    """The CSV (two folders deep at most) with a column of run-length encodings whose image ids
    name images under ``root``; None when there is none."""
    keys: dict[str, str] = {}
    for rel in images:
        for key in image_keys(rel):
            keys.setdefault(key, rel)
    for rel in [f for f in files if f.lower().endswith(".csv") and len(PurePosixPath(f).parts) <= 3][:10]:
        found = _columns(root / rel, keys)
        if found is not None:
            return _layout(root, rel, images, keys, found, task)
    return None


def _columns(path: Path, keys: dict[str, str]) -> tuple[str, str, str | None, list[dict[str, str]]] | None:
    """(image column, RLE column, class column or None, sampled rows), or None."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [row for _, row in zip(range(SAMPLE_ROWS), reader)]
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not rows:
        return None

    def values(column: str) -> list[str]:
        return [(r.get(column) or "").strip() for r in rows]

    def share(found: list[str], test) -> float:
        return sum(1 for v in found if test(v)) / len(found) if found else 0.0

    # encodings are judged on non-empty values: most of Airbus' rows list an image with no ship
    rle_share = {c: share([v for v in values(c) if not is_empty_rle(v)], RLE_TEXT.match) for c in header}
    rle = max(header, key=rle_share.__getitem__, default=None)
    if rle is None or rle_share[rle] < 0.8:
        return None
    id_share = {c: share(values(c), keys.__contains__) for c in header if c != rle}
    image = max(id_share, key=id_share.__getitem__, default=None)
    if image is None or id_share[image] == 0:
        return None
    others = [c for c in header if c not in (rle, image) and CLASS_COLUMN.search(c)]
    few = [c for c in others if 1 <= len({r.get(c) for r in rows}) <= 32]
    return image, rle, (few[0] if few else None), rows


def _layout(
    root: Path,
    rel: str,
    images: list[str],
    keys: dict[str, str],
    found: tuple[str, str, str | None, list[dict[str, str]]],
    task: str | None,
) -> Detection:
    image_col, rle_col, class_col, rows = found
    listed = {keys[r[image_col].strip()] for r in rows if r[image_col].strip() in keys}
    folder = Counter(str(PurePosixPath(p).parent) for p in listed).most_common(1)[0][0]
    image_root = root / folder if folder not in ("", ".") else root
    prefix = "" if image_root == root else folder + "/"
    under = [i for i in images if i.startswith(prefix)]
    classes = class_numbers([(r.get(class_col) or "").strip() for r in rows]) if class_col else {"1": 1}
    per_class = Counter(
        (r[image_col], (r.get(class_col) if class_col else "1")) for r in rows if not is_empty_rle(r[rle_col])
    )
    objects = max(per_class.values(), default=0)
    task = task or ("instance" if objects >= 2 else "semantic")
    samples = []
    for r in [r for r in rows if not is_empty_rle(r[rle_col]) and r[image_col].strip() in keys][:20]:
        try:
            with Image.open(root / keys[r[image_col].strip()]) as img:
                samples.append((r[rle_col], (img.height, img.width)))
        except (OSError, UnidentifiedImageError):
            continue
    order = likely_order(samples) if samples else "column-major"
    labels: dict[str, Any] = {"kind": "rle-csv", "path": str(root / rel), "image_column": image_col}
    labels["rle_column"] = rle_col
    if class_col:
        labels["class_column"] = class_col
        if not all(k.isdigit() for k in classes):
            labels["classes"] = classes
    labels["order"] = order
    if task == "instance":
        labels["instances"] = True
    empties = any(is_empty_rle(r[rle_col]) for r in rows)
    unlisted = len(under) - len(listed)
    if unlisted > 0 and not empties:
        labels["empty_when_missing"] = ["**"]
    n_classes = max(classes.values()) + 1
    note = (
        f"RLE CSV {rel}: {len(rows)} rows, {len(listed)} of {len(under)} images listed, column {rle_col!r} "
        f"({order}: the order under which the encodings draw whole blobs)"
        + (f", classes from {class_col!r} ({', '.join(list(classes)[:6])})" if class_col else ", one class")
        + f"; up to {objects} rows of one class per image → {task}"
        + (
            f"; the CSV lists only images with foreground, so the {unlisted} it does not list are empty masks"
            if "empty_when_missing" in labels
            else ""
        )
    )
    source = {"kind": "images", "path": str(image_root), "labels": labels}
    n_paired = len(under) if "empty_when_missing" in labels else len(listed)
    return Detection(source, task, n_classes, "rle-csv", "rle", len(under), n_paired, {"labels": note})

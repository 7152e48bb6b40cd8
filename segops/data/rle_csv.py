"""Masks as run-length encodings in a CSV file: Kaggle's layout (Severstal steel defects, Airbus
ships, TGS salt, SIIM pneumothorax, Sartorius cells, UW-Madison GI tract).

One row per (image, class) or per object: an image id, an optional class, and ``start length``
pairs (1-based starts). Kaggle numbers pixels top to bottom, then left to right (column-major);
some sets number them along rows (row-major). A row whose encoding is empty (NaN, ``-1``, ``""``)
says the image has no foreground. See :class:`~segops.config.sources.RleCsvLabels`.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from scipy import ndimage

from segops.data.instances import stack_instances
from segops.errors import LabelError

Order = Literal["column-major", "row-major"]
#: A run-length encoding: ``start length`` pairs of integers.
RLE_TEXT = re.compile(r"^\s*\d+\s+\d+(\s+\d+\s+\d+)*\s*$")
#: Encodings that mean "no foreground".
EMPTY_RLE = ("", "nan", "-1", "none")


def is_empty_rle(text: str) -> bool:
    return text.strip().lower() in EMPTY_RLE


def decode_rle(text: str, shape: tuple[int, int], order: Order = "column-major") -> np.ndarray:
    """``start length`` pairs (1-based) → (H, W) bool mask.

    Raises:
        LabelError: not pairs of integers, or a run outside the image.
    """
    h, w = shape
    flat = np.zeros(h * w, dtype=bool)
    if is_empty_rle(text):
        return flat.reshape(h, w)
    try:
        numbers = np.asarray(text.split(), dtype=np.int64)
    except ValueError as exc:
        raise LabelError(f"run-length encoding {text[:40]!r} is not 'start length' integers") from exc
    if numbers.size % 2:
        raise LabelError(f"run-length encoding {text[:40]!r} has an odd count of numbers")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if starts.size and (starts.min() < 0 or (starts + lengths).max() > h * w):
        raise LabelError(f"run-length encoding runs past the {w}x{h} image's {h * w} pixels (another image size?)")
    for start, length in zip(starts, lengths):
        flat[start : start + length] = True
    return flat.reshape(w, h).T if order == "column-major" else flat.reshape(h, w)


def encode_rle(mask: np.ndarray, order: Order = "column-major") -> str:
    """(H, W) bool mask → ``start length`` pairs (1-based), the inverse of :func:`decode_rle`."""
    flat = (mask.T if order == "column-major" else mask).ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))


def read_rle_csv(path: Path, image_column: str, rle_column: str, class_column: str | None) -> list[dict[str, str]]:
    """The CSV's rows as ``{"image", "rle", "class"}`` strings.

    Raises:
        LabelError: unreadable, or a named column is missing.
    """
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in (image_column, rle_column, class_column) if c is not None and c not in header]
            if missing:
                raise LabelError(f"RLE CSV {path} has no column {missing[0]!r}; its columns are {header}")
            return [
                {
                    "image": (row[image_column] or "").strip(),
                    "rle": row[rle_column] or "",
                    "class": (row[class_column] or "").strip() if class_column else "1",
                }
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelError(f"cannot read RLE CSV {path}: {type(exc).__name__}: {exc}") from exc


def class_numbers(names: list[str]) -> dict[str, int]:
    """Class of each class-column value: integers as they are (Severstal's 1..4), else names
    numbered 1..K in sorted order (UW-Madison's ``large_bowel``, …)."""
    unique = sorted(set(names))
    if all(re.fullmatch(r"\d+", n) for n in unique):
        return {n: int(n) for n in unique}
    return {n: i + 1 for i, n in enumerate(unique)}


def index_rows(rows: list[dict[str, str]], classes: dict[str, int]) -> dict[str, list[tuple[int, str]]]:
    """Image id → its (class, encoding) pairs; an empty encoding leaves the image listed with none.

    Raises:
        LabelError: an encoding's class value that ``classes`` does not map (its pixels would be lost).
    """
    unmapped = sorted({row["class"] for row in rows if row["class"] not in classes and not is_empty_rle(row["rle"])})
    if unmapped:
        raise LabelError(
            f"RLE CSV rows have class value(s) {unmapped[:10]} that labels.classes ({classes}) does not map; "
            "add them with their class"
        )
    index: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row in rows:
        entries = index[row["image"]]
        if not is_empty_rle(row["rle"]):
            entries.append((classes[row["class"]], row["rle"]))
    return dict(index)


def image_keys(rel_path: str) -> tuple[str, ...]:
    """The ids a CSV may use for an image: its relative path, file name, or either without extension."""
    rel = PurePosixPath(rel_path)
    return (rel_path, rel.name, str(rel.with_suffix("")), rel.stem)


def rle_label(
    entries: list[tuple[int, str]], shape: tuple[int, int], order: Order, instances: bool, where: str
) -> np.ndarray:
    """One image's encodings → (H, W) uint8 class map (the higher class on overlaps), or with
    ``instances`` an int32 instance label map (one object per encoding).

    Raises:
        LabelError: an encoding that does not decode on this image, naming ``where``.
    """
    try:
        masks = [(cls, decode_rle(text, shape, order)) for cls, text in entries]
    except LabelError as exc:
        raise LabelError(f"{where}: {exc}") from exc
    if instances:
        return stack_instances([m for _, m in masks], [c for c, _ in masks], shape)
    label = np.zeros(shape, dtype=np.uint8)
    for cls, mask in sorted(masks, key=lambda cm: cm[0]):
        label[mask] = cls
    return label


def likely_order(samples: list[tuple[str, tuple[int, int]]]) -> Order:
    """The pixel order under which sampled encodings draw fewer separate pieces: read in the wrong
    order, one blob falls apart into a stripe per run."""
    pieces = {"column-major": 0, "row-major": 0}
    for text, shape in samples:
        for order in pieces:
            try:
                pieces[order] += ndimage.label(decode_rle(text, shape, order))[1]
            except LabelError:
                pieces[order] += 10**6
    return "row-major" if pieces["row-major"] < pieces["column-major"] else "column-major"

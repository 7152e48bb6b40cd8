"""Label readers: each label is an (H, W) array aligned with its image.

Semantic sources give uint8 class-index maps: mask images found by path pattern, DICOM SEG
objects matched by referenced SOP Instance UID, COCO JSON annotations matched by file name,
RTSTRUCT contours rasterised onto the slices of the series they reference (see
:mod:`segops.data.rtstruct_labels`), and run-length encodings in a CSV
(:mod:`segops.data.rle_csv`). Instance sources (instance-id images, COCO or RLE CSV with
``instances: true``) give int32 instance label maps (``class * 65536 + k``, see
:mod:`segops.data.instances`). One interface (:class:`LabelResolver`) serves all: a resolver
is built once on the driver (it indexes SEG headers / the COCO or CSV file) and shipped to
decode tasks; it also reports labels that matched no image.
"""

from __future__ import annotations

import logging
import os
import re
import string
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from segops.config.schema import (
    CocoLabels,
    CvatLabels,
    DicomSegLabels,
    InstancePngLabels,
    LabelmeLabels,
    LabelsSpec,
    LabelStudioLabels,
    LidcLabels,
    MaskFolderLabels,
    MaskPngLabels,
    RleCsvLabels,
    RtstructLabels,
    SuperviselyLabels,
    ViaLabels,
    YoloLabels,
)
from segops.config.sources import is_instance_labels
from segops.data.coco import coco_instances, coco_label, index_coco
from segops.data.cvat import index_cvat
from segops.data.globs import path_selected
from segops.data.imagescope import outline_label, outline_names
from segops.data.instances import INSTANCE_STRIDE, class_coded_ids, class_map, encode_instances, label_dtype
from segops.data.label_census import label_counts
from segops.data.label_studio import index_label_studio
from segops.data.lidc import LidcIndex, index_lidc, lidc_label
from segops.data.mask_files import (
    mask_folder_files,
    read_instance_png,
    read_mask_folder,
    read_mask_png,
    spec_mask_with_parts,
    with_class_files,
)
from segops.data.mask_kinds import without_void
from segops.data.mask_names import match_pattern
from segops.data.records import ImageRecord
from segops.data.rle_csv import class_numbers, image_keys, index_rows, read_rle_csv, rle_label
from segops.data.rtstruct_labels import RtstructIndex, declared_rows, index_structure_sets, rtstruct_label
from segops.data.seg_labels import index_segs, seg_label, segment_numbers
from segops.data.supervisely import annotation_index, project_classes, supervisely_label
from segops.data.via import index_via
from segops.data.yolo import yolo_classes, yolo_label
from segops.errors import LabelError

log = logging.getLogger(__name__)


def mask_png_path(
    root: str | Path, pattern: str, rel_path: str, frame: int = 0, replace: Mapping[str, str] | None = None
) -> Path:
    """Where the mask (or mask folder) for input ``rel_path`` lives, per ``pattern`` (see
    ``MaskPngLabels``; ``parent_dir``: the folder above the input's, see ``MaskFolderLabels``),
    after ``replace`` (word → word) on the input's path without its suffix."""
    return Path(root) / match_pattern(pattern, rel_path, replace, frame)


def has_label_masks(spec: LabelsSpec | None) -> bool:
    """Whether the classes of a label spec are in mask files' pixels (mask-png; instance-png class
    masks), so checking them means reading those files; else they are declared (see
    :func:`declared_label_rows`)."""
    return isinstance(spec, MaskPngLabels) or (
        isinstance(spec, InstancePngLabels) and (spec.classes_pattern is not None or spec.class_stride is not None)
    )


def mask_file_counts(spec: MaskPngLabels | InstancePngLabels, rel_path: str) -> tuple[str, list[int], list[int]] | None:
    """(label uri, class values, pixels of each) of the mask of input ``rel_path`` (first page),
    as training would see it (through ``void``, ``values`` / ``threshold``), read without its image; None
    when the input has no mask or its mask cannot be read (decoding then files it as a label
    problem of that case). For instance-png labels with ``classes_pattern``, the class mask's
    nonzero classes (with ``class_stride``, the classes the ids encode), as instance values
    (``class * 65536 + 1``, the layout of :func:`declared_label_rows`), under the class mask's path.
    """
    instance = isinstance(spec, InstancePngLabels)
    coded = instance and spec.class_stride is not None  # the classes are in the instance ids
    pattern = spec.classes_pattern if instance and not coded else spec.pattern
    path = mask_png_path(spec.path, pattern, rel_path, 0, spec.replace)
    if not path.is_file():
        return None
    try:
        if coded:
            stored = without_void(read_instance_png(path, None), spec.void)  # KITTI-MOTS' 10000: ignore
            classes = class_map(
                encode_instances(*class_coded_ids(stored, spec.class_stride, spec.class_values, str(path)))
            )
        elif instance:
            classes = read_mask_png(path, None, values=spec.class_values, void=spec.void)
        else:
            classes = with_class_files(spec, spec_mask_with_parts(spec, path), rel_path)
    except LabelError:
        return None
    values, pixels = label_counts(classes)
    if instance:
        kept = [(v * INSTANCE_STRIDE + 1, n) for v, n in zip(values, pixels) if v > 0]
        values, pixels = [v for v, _ in kept], [n for _, n in kept]
    return str(path.resolve()), values, pixels


def _is_input(mask: Path, record: ImageRecord) -> bool:
    """Whether the mask a pattern names for ``record`` is the record's own file (an image beside its
    masks whose name the pattern leaves unchanged, e.g. ``x_fg.png`` under ``{rel_stem}.png`` with
    ``replace: {rgb: label}``): no file is its own mask."""
    return os.path.realpath(mask) == os.path.realpath(record.source_uri)


#: ``label_uri`` of an empty label given by ``empty_when_missing`` (no file): ``empty:<rel_path>``.
EMPTY_LABEL_PREFIX = "empty:"


def empty_label(
    spec: MaskPngLabels | InstancePngLabels | MaskFolderLabels | LabelmeLabels | YoloLabels | RleCsvLabels,
    rel_path: str,
    shape: tuple[int, int],
    dtype: type,
) -> tuple[np.ndarray, str] | None:
    """An all-background label for an input without a mask file that ``spec.empty_when_missing``
    names (MVTec AD's ``good/**``), else None (the input is unlabelled)."""
    if not spec.empty_when_missing or not path_selected(rel_path, include=spec.empty_when_missing):
        return None
    return np.zeros(shape, dtype), EMPTY_LABEL_PREFIX + rel_path


# --------------------------------------------------------------------------- resolvers


@contextmanager
def _reading(uri: str) -> Iterator[None]:
    """A :class:`LabelError` raised while reading the label ``uri`` names it (``label_uri``)."""
    try:
        yield
    except LabelError as exc:
        if exc.label_uri is None:
            exc.label_uri = uri
        raise


@dataclass
class LabelResolver:
    """Finds the label of a record. Build with :func:`build_resolver`; picklable."""

    spec: LabelsSpec
    seg_index: dict[str, str] = field(default_factory=dict)  # SOPInstanceUID → SEG path
    coco_images: dict[str, dict[str, Any]] = field(default_factory=dict)  # file_name → image + anns
    coco_classes: dict[int, int] = field(default_factory=dict)
    rtstruct: RtstructIndex | None = None  # which series / images each RTSTRUCT references
    lidc: LidcIndex | None = None  # LIDC-IDRI XML outlines by slice, readers by series
    rle_images: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # image id → (class, RLE)
    labelme_classes: dict[str, int] = field(default_factory=dict)  # LabelMe name → class, when not given
    sly_index: dict[str, str] = field(default_factory=dict)  # Supervisely: image path → annotation file
    sly_classes: dict[str, int] = field(default_factory=dict)  # Supervisely class title → class

    def label_for(self, record: ImageRecord) -> tuple[np.ndarray, str] | None:
        """(label, uri) for ``record``, or None if it has no label.

        The label is (H, W) uint8 for semantic sources, int32 for instance sources.

        Raises:
            LabelError: a label exists but cannot be read or does not fit the image.
        """
        shape = record.image.shape[1:]
        if isinstance(self.spec, MaskPngLabels):
            path = mask_png_path(self.spec.path, self.spec.pattern, record.rel_path, record.frame, self.spec.replace)
            if not path.is_file() or _is_input(path, record):
                return empty_label(self.spec, record.rel_path, shape, np.uint8)
            page = _page(self.spec.pattern, record)
            with _reading(uri := str(path.resolve())):
                mask = spec_mask_with_parts(self.spec, path, shape, page)
            return with_class_files(self.spec, mask, record.rel_path, record.frame, page), uri
        if isinstance(self.spec, InstancePngLabels):
            path = mask_png_path(self.spec.path, self.spec.pattern, record.rel_path, record.frame, self.spec.replace)
            if not path.is_file() or _is_input(path, record):
                return empty_label(self.spec, record.rel_path, shape, np.int32)
            with _reading(uri := str(path.resolve())):
                return _instance_png_label(self.spec, path, record, shape), uri
        if isinstance(self.spec, (LabelmeLabels, YoloLabels)):
            path = mask_png_path(self.spec.path, self.spec.pattern, record.rel_path, record.frame)
            if not path.is_file():
                return empty_label(self.spec, record.rel_path, shape, label_dtype(self.spec).type)
            with _reading(uri := str(path.resolve())):
                if isinstance(self.spec, YoloLabels):
                    return yolo_label(path, shape, self.spec.instances), uri
                classes = self.spec.classes or self.labelme_classes
                return outline_label(self.spec.kind, path, shape, classes, self.spec.instances), uri
        if isinstance(self.spec, SuperviselyLabels):
            ann = self.sly_index.get(record.source_uri)
            if ann is None:
                return None
            with _reading(ann):
                return supervisely_label(ann, shape, self.sly_classes, self.spec.instances), ann
        if isinstance(self.spec, MaskFolderLabels):
            folder = mask_png_path(self.spec.path, self.spec.pattern, record.rel_path, record.frame, self.spec.replace)
            if not folder.is_dir():
                return empty_label(self.spec, record.rel_path, shape, label_dtype(self.spec).type)
            with _reading(uri := str(folder.resolve())):
                return _mask_folder_label(self.spec, folder, shape), uri
        if isinstance(self.spec, DicomSegLabels):
            seg_path = self.seg_index.get(record.instance_uid)
            if seg_path is None:
                return None
            frame = record.frame + 1 if record.n_frames > 1 else None
            with _reading(seg_path):
                return seg_label(seg_path, record.instance_uid, frame, shape, self.spec.segments), seg_path
        if isinstance(self.spec, RtstructLabels):
            ignore = self.spec.missing_rois == "ignore"
            return rtstruct_label(self.rtstruct, record, self.spec.rois, self.spec.synonyms, ignore)
        if isinstance(self.spec, LidcLabels):
            uid = record.series_uid or record.group_id
            return lidc_label(self.lidc, uid, record.instance_uid, shape, self.spec.agreement, self.spec.class_id)
        if isinstance(self.spec, RleCsvLabels):
            key = next((k for k in image_keys(record.rel_path) if k in self.rle_images), None)
            if key is None:
                return empty_label(self.spec, record.rel_path, shape, label_dtype(self.spec).type)
            uri = f"{self.spec.path}#image={key}"
            with _reading(uri):
                return rle_label(self.rle_images[key], shape, self.spec.order, self.spec.instances, uri), uri
        keys = (record.source_uri, record.rel_path, PurePosixPath(record.rel_path).name)
        entry = next((self.coco_images[k] for k in keys if k in self.coco_images), None)
        if entry is None:
            return None
        read = coco_instances if self.spec.instances else coco_label
        with _reading(entry["uri"]):
            return read(entry, shape, self.coco_classes), entry["uri"]

    def all_label_keys(self) -> set[str]:
        """Every label this resolver knows, as the ``label_uri`` it gives when matched."""
        if isinstance(self.spec, (LabelmeLabels, YoloLabels)):
            return pattern_files(self.spec.path, self.spec.pattern)
        if isinstance(self.spec, MaskPngLabels):
            # only files the pattern can name: masks may sit beside their images (x.jpg + x.png); with
            # replace, only names holding a replacement (train-labels.tif beside train-volume.tif)
            root, words = Path(self.spec.path).resolve(), [w for w in self.spec.replace.values() if w]
            files = pattern_files(self.spec.path, self.spec.pattern)
            return {f for f in files if not words or any(w in Path(f).relative_to(root).as_posix() for w in words)}
        if isinstance(self.spec, InstancePngLabels):
            return _instance_png_keys(self.spec)
        if isinstance(self.spec, MaskFolderLabels):
            return mask_folder_keys(self.spec)
        if isinstance(self.spec, SuperviselyLabels):
            return set(self.sly_index.values())
        if isinstance(self.spec, DicomSegLabels):
            return set(self.seg_index.values())
        if isinstance(self.spec, RtstructLabels):
            return self.rtstruct.keys()
        if isinstance(self.spec, LidcLabels):
            return self.lidc.keys()
        if isinstance(self.spec, RleCsvLabels):
            return {f"{self.spec.path}#image={key}" for key in self.rle_images}
        return {e["uri"] for e in self.coco_images.values()}


def declared_label_rows(resolver: LabelResolver) -> list[dict[str, Any]]:
    """What the labels of a resolver will hold, known without reading a pixel: one row per label
    (``label_uri``, ``label_values``, ``label_pixels``) in the layout of the records' census
    columns, for COCO (each annotated image: its annotations' categories), DICOM SEG (each object:
    its segment numbers, through ``segments``), instance-png with ``class_id`` alone and YOLO files
    (their lines' classes). Instance labels' values are ``class * 65536 + 1`` (one per class). Pixel
    counts are unknown: 1 each. Mask-png labels and class masks hold their values in their
    pixels: empty here (see :func:`mask_file_counts`).
    """
    spec = resolver.spec
    instance = is_instance_labels(spec)

    def row(uri: str, classes: set[int]) -> dict[str, Any]:
        values = sorted(c * INSTANCE_STRIDE + 1 if instance else c for c in classes if c > 0)
        return {"label_uri": uri, "label_values": values, "label_pixels": [1] * len(values)}

    if isinstance(spec, (CocoLabels, ViaLabels, CvatLabels, LabelStudioLabels)):
        entries = {e["uri"]: e for e in resolver.coco_images.values()}
        return [
            row(uri, {resolver.coco_classes.get(a["category_id"], 0) for a in e["annotations"]})
            for uri, e in entries.items()
            if "problem" not in e  # a task that cannot be drawn is a label problem of its image, not empty
        ]
    if isinstance(spec, DicomSegLabels):
        return [
            row(path, {spec.segments.get(n, 0) if spec.segments else n for n in segment_numbers(path)})
            for path in sorted(set(resolver.seg_index.values()))
        ]
    if isinstance(spec, InstancePngLabels) and spec.classes_pattern is None:
        return [row(uri, {spec.class_id}) for uri in sorted(_instance_png_keys(spec))]
    if isinstance(spec, MaskFolderLabels):
        return [row(uri, {spec.class_id}) for uri in sorted(mask_folder_keys(spec))]
    if isinstance(spec, RtstructLabels):
        return [row(uri, classes) for uri, classes in declared_rows(resolver.rtstruct, spec.rois, spec.synonyms)]
    if isinstance(spec, LidcLabels):
        return [row(resolver.lidc.uri(uid), {spec.class_id}) for uid in sorted(resolver.lidc.files)]
    if isinstance(spec, RleCsvLabels):
        return [row(f"{spec.path}#image={k}", {c for c, _ in e}) for k, e in sorted(resolver.rle_images.items())]
    if isinstance(spec, YoloLabels):
        return [row(uri, yolo_classes(uri)) for uri in sorted(pattern_files(spec.path, spec.pattern))]
    return []


def build_resolver(spec: LabelsSpec) -> LabelResolver:
    """Index the labels once (SEG headers, COCO file) so decode tasks can look them up."""
    if isinstance(spec, DicomSegLabels):
        return LabelResolver(spec, seg_index=index_segs(Path(spec.path)))
    if isinstance(spec, CocoLabels):
        images, classes = index_coco(Path(spec.path), spec.categories, spec.more_files)
        return LabelResolver(spec, coco_images=images, coco_classes=classes)
    if isinstance(spec, SuperviselyLabels):
        index = annotation_index(spec.path)
        return LabelResolver(
            spec, sly_index=index, sly_classes=spec.classes or project_classes(spec.path, list(index.values()))
        )
    if isinstance(spec, (ViaLabels, CvatLabels, LabelStudioLabels)):  # drawn as COCO polygons (and RLE masks)
        files = [Path(spec.path), *spec.more_files]
        via, index = isinstance(spec, ViaLabels), index_cvat if isinstance(spec, CvatLabels) else index_label_studio
        images, classes = index_via(files, spec.attribute, spec.classes) if via else index(files, spec.classes)
        return LabelResolver(spec, coco_images=images, coco_classes=classes)
    if isinstance(spec, RtstructLabels):
        return LabelResolver(spec, rtstruct=index_structure_sets(Path(spec.path)))
    if isinstance(spec, LidcLabels):
        return LabelResolver(spec, lidc=index_lidc(Path(spec.path)))
    if isinstance(spec, RleCsvLabels):
        rows = read_rle_csv(Path(spec.path), spec.image_column, spec.rle_column, spec.class_column)
        return LabelResolver(
            spec, rle_images=index_rows(rows, spec.classes or class_numbers([r["class"] for r in rows]))
        )
    if not Path(spec.path).is_dir():
        raise LabelError(f"label folder {spec.path} does not exist")
    if isinstance(spec, LabelmeLabels) and spec.classes is None:  # every name in the files, 1..K
        names = outline_names(spec.kind, [Path(p) for p in sorted(pattern_files(spec.path, spec.pattern))])
        return LabelResolver(spec, labelme_classes={name: k + 1 for k, name in enumerate(names)})
    return LabelResolver(spec)


def pattern_files(root: str | Path, pattern: str) -> set[str]:
    """Files under ``root`` that ``pattern`` can name (hidden ones left out), resolved."""
    regex = pattern_regex(pattern)
    return {
        str(p.resolve())
        for p in Path(root).rglob("*")
        if p.is_file() and not p.name.startswith(".") and regex.fullmatch(p.relative_to(root).as_posix())
    }


def _page(pattern: str, record: ImageRecord) -> int:
    """Page of a multi-page label file for this record: its frame, unless the pattern names one file per frame."""
    return record.frame if "{frame}" not in pattern else 0


# --------------------------------------------------------------------------- instance-id images


def _instance_png_label(spec: InstancePngLabels, path: Path, record: ImageRecord, shape: tuple[int, int]) -> np.ndarray:
    """Instance-id image (+ class mask) of one record → (H, W) int32 instance label map."""
    ids = without_void(read_instance_png(path, shape, _page(spec.pattern, record)), spec.void)
    if spec.class_stride is not None:
        ids, classes = class_coded_ids(ids, spec.class_stride, spec.class_values, f"instance-id image {path}")
    elif spec.classes_pattern is None:
        classes = {int(i): spec.class_id for i in np.unique(ids) if i != 0}
    else:
        class_path = mask_png_path(spec.path, spec.classes_pattern, record.rel_path, record.frame, spec.replace)
        if not class_path.is_file():
            raise LabelError(f"instance-id image {path} has no class mask: {class_path} does not exist")
        class_mask = read_mask_png(
            class_path, shape, _page(spec.classes_pattern, record), values=spec.class_values, void=spec.void
        )
        classes = _majority_classes(ids, class_mask, where=f"instance-id image {path} (classes {class_path})")
    try:
        return encode_instances(ids, classes)
    except LabelError as exc:
        raise LabelError(f"instance-id image {path}: {exc}") from exc


def _majority_classes(ids: np.ndarray, class_mask: np.ndarray, where: str) -> dict[int, int]:
    """Each instance's most frequent nonzero class under its pixels (ties: the lower class).

    Args:
        ids: (H, W) int64 instance ids, 0 = background.
        class_mask: (H, W) uint8 class indices, 0 = background.
        where: names the label files in error messages.

    Raises:
        LabelError: an instance lies on class 0 only.
    """
    fg = ids != 0
    keys, counts = np.unique(ids[fg] * 256 + class_mask[fg], return_counts=True)
    key_ids, key_classes = keys // 256, keys % 256
    keep = key_classes != 0
    key_ids, key_classes, counts = key_ids[keep], key_classes[keep], counts[keep]
    order = np.lexsort((key_classes, -counts, key_ids))  # by instance, then most pixels first, then lower class
    classes: dict[int, int] = {}
    for inst, cls in zip(key_ids[order].tolist(), key_classes[order].tolist()):
        classes.setdefault(inst, cls)
    missing = sorted(set(np.unique(ids[fg]).tolist()) - classes.keys())
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LabelError(f"{where}: instance {missing[0]}{more} lies only on class 0 (background) in the class mask")
    return classes


# --------------------------------------------------------------------------- mask folders


def _mask_folder_label(spec: MaskFolderLabels, folder: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        return read_mask_folder(spec, folder, shape)
    except LabelError as exc:
        raise LabelError(f"mask folder {folder}: {exc}") from exc


def mask_folder_keys(spec: MaskFolderLabels) -> set[str]:
    """Folders under the root that ``pattern`` can name and that hold a mask file, resolved."""
    root, regex = Path(spec.path), pattern_regex(spec.pattern)
    return {
        str(p.resolve())
        for p in root.rglob("*")
        if p.is_dir()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and regex.fullmatch(p.relative_to(root).as_posix())
        and mask_folder_files(p)
    }


def _instance_png_keys(spec: InstancePngLabels) -> set[str]:
    """Files under the root that ``pattern`` can name, less the class masks ``classes_pattern`` names for them.

    The class masks may sit beside the instance-id images (e.g. ``{rel_stem}.png`` and
    ``{rel_stem}_class.png``), so matching the pattern alone would count them as labels.
    """
    root = Path(spec.path)
    regex = pattern_regex(spec.pattern)
    files = {}
    for p in root.rglob("*"):
        match = regex.fullmatch(p.relative_to(root).as_posix())
        if match and p.is_file() and not p.name.startswith("."):
            files[p.resolve()] = match.groupdict()
    if spec.classes_pattern is not None:
        for fields in list(files.values()):
            rel_stem = fields.get("rel_stem") or "/".join(v for v in (fields.get("rel_dir"), fields.get("stem")) if v)
            if "rel_stem" in fields or "stem" in fields:
                class_path = mask_png_path(root, spec.classes_pattern, rel_stem + ".x", int(fields.get("frame") or 0))
                files.pop(class_path.resolve(), None)
    return {str(p) for p in files}


_FIELD_REGEX = {
    "rel_dir": ".+",
    "parent_dir": ".+",
    "stem": "[^/]+",
    "id": "[^/_. -]+",
    "rel_stem": ".+",
    "frame": "[0-9]+",
    "case": "[^/]+",
    "case_number": "[0-9]*",
    "structure": "[^/]+",
}


@lru_cache(maxsize=64)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Regex that matches the relative paths a label pattern (see ``MaskPngLabels``) produces
    (cached: listings test every file against one pattern).

    Fields become named groups; ``{rel_dir}/`` (and ``{parent_dir}/``) is optional, as an input at
    the top level has an empty ``rel_dir``.
    """
    parts: list[str] = []
    seen: set[str] = set()
    after_dir = False
    for literal, name, _spec, _conv in string.Formatter().parse(pattern.lstrip("/")):
        if after_dir and literal.startswith("/"):
            parts[-1], literal = f"(?:{parts[-1]}/)?", literal[1:]
        parts.append(re.escape(literal))
        after_dir = name in ("rel_dir", "parent_dir")
        if name is not None:
            parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>{_FIELD_REGEX.get(name, '.*')})")
            seen.add(name)
    return re.compile("".join(parts))

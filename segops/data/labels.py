"""Label readers. Labels are (H, W) uint8 class-index maps aligned with their image.

Three sources, one interface (:class:`LabelResolver`): mask images found by path pattern,
DICOM SEG objects matched by referenced SOP Instance UID, and COCO JSON annotations matched
by file name. A resolver is built once on the driver (it indexes SEG headers / the COCO file)
and shipped to decode tasks; it also reports labels that matched no image.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageSequence, UnidentifiedImageError

from segops.config.schema import CocoLabels, DicomSegLabels, MaskPngLabels
from segops.data.records import ImageRecord
from segops.errors import LabelError

log = logging.getLogger(__name__)


def mask_png_path(root: str | Path, pattern: str, rel_path: str, frame: int = 0) -> Path:
    """Where the mask for input ``rel_path`` lives, per ``pattern`` (see ``MaskPngLabels``)."""
    rel = PurePosixPath(rel_path)
    rel_dir = str(rel.parent) if str(rel.parent) != "." else ""
    name = pattern.format(rel_dir=rel_dir, stem=rel.stem, rel_stem=str(rel.with_suffix("")), frame=frame)
    return Path(root) / name.lstrip("/")


def read_mask_png(path: str | Path, shape: tuple[int, int], page: int = 0) -> np.ndarray:
    """Read a class-index mask image (PNG/TIFF; page ``page`` of a multi-page TIFF).

    A binary mask stored as {0, 255} becomes {0, 1}.

    Args:
        shape: (H, W) of the image the mask belongs to.

    Raises:
        LabelError: unreadable, not single-channel, missing page, or of another size than the image.
    """
    try:
        with Image.open(path) as img:
            frames = [np.asarray(p) for p in ImageSequence.Iterator(img)]
    except (UnidentifiedImageError, OSError) as exc:
        raise LabelError(f"cannot read mask {path}: {exc}") from exc
    if page >= len(frames):
        raise LabelError(f"mask {path} has {len(frames)} page(s); page {page} was asked for")
    mask = frames[page]
    if mask.ndim != 2:
        raise LabelError(f"mask {path} has shape {mask.shape}; expected a single-channel (H, W) image")
    return _checked(mask, shape, str(path))


def _checked(mask: np.ndarray, shape: tuple[int, int], where: str) -> np.ndarray:
    if mask.shape != tuple(shape):
        raise LabelError(f"mask {where} is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}")
    values = np.unique(mask)
    if values.max(initial=0) == 255 and set(values.tolist()) <= {0, 255}:
        mask = mask // 255
    if values.max(initial=0) > 255:
        raise LabelError(f"mask {where} has class index {values.max()} (> 255)")
    return mask.astype(np.uint8)


# --------------------------------------------------------------------------- resolvers


@dataclass
class LabelResolver:
    """Finds the label of a record. Build with :func:`build_resolver`; picklable."""

    spec: MaskPngLabels | DicomSegLabels | CocoLabels
    seg_index: dict[str, str] = field(default_factory=dict)  # SOPInstanceUID → SEG path
    coco_images: dict[str, dict[str, Any]] = field(default_factory=dict)  # file_name → image + anns
    coco_classes: dict[int, int] = field(default_factory=dict)

    def label_for(self, record: ImageRecord) -> tuple[np.ndarray, str] | None:
        """(label, uri) for ``record``, or None if it has no label.

        Raises:
            LabelError: a label exists but cannot be read or does not fit the image.
        """
        shape = record.image.shape[1:]
        if isinstance(self.spec, MaskPngLabels):
            path = mask_png_path(self.spec.path, self.spec.pattern, record.rel_path, record.frame)
            if not path.is_file():
                return None
            page = record.frame if "{frame}" not in self.spec.pattern else 0
            return read_mask_png(path, shape, page), str(path.resolve())
        if isinstance(self.spec, DicomSegLabels):
            seg_path = self.seg_index.get(record.instance_uid)
            if seg_path is None:
                return None
            frame = record.frame + 1 if record.n_frames > 1 else None
            return _seg_label(seg_path, record.instance_uid, frame, shape, self.spec.segments), seg_path
        entry = self.coco_images.get(record.rel_path) or self.coco_images.get(PurePosixPath(record.rel_path).name)
        if entry is None:
            return None
        return _coco_label(entry, shape, self.coco_classes), f"{self.spec.path}#image={entry['id']}"

    def all_label_keys(self) -> set[str]:
        """Every label this resolver knows, as the ``label_uri`` it gives when matched."""
        if isinstance(self.spec, MaskPngLabels):
            root = Path(self.spec.path)
            return {str(p.resolve()) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}
        if isinstance(self.spec, DicomSegLabels):
            return set(self.seg_index.values())
        return {f"{self.spec.path}#image={e['id']}" for e in self.coco_images.values()}


def build_resolver(spec: MaskPngLabels | DicomSegLabels | CocoLabels) -> LabelResolver:
    """Index the labels once (SEG headers, COCO file) so decode tasks can look them up."""
    if isinstance(spec, DicomSegLabels):
        return LabelResolver(spec, seg_index=_index_segs(Path(spec.path)))
    if isinstance(spec, CocoLabels):
        images, classes = _index_coco(Path(spec.path), spec.categories)
        return LabelResolver(spec, coco_images=images, coco_classes=classes)
    if not Path(spec.path).is_dir():
        raise LabelError(f"label folder {spec.path} does not exist")
    return LabelResolver(spec)


# --------------------------------------------------------------------------- DICOM SEG


def _index_segs(root: Path) -> dict[str, str]:
    """SOPInstanceUID of each referenced source image → path of the SEG that labels it."""
    if not root.is_dir():
        raise LabelError(f"DICOM SEG folder {root} does not exist")
    index: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # not a DICOM file: not a label, say so and go on
            log.warning("ignoring %s in the SEG folder: %s", path, exc)
            continue
        if getattr(ds, "Modality", "") != "SEG":
            log.warning("ignoring %s in the SEG folder: modality %r, not SEG", path, getattr(ds, "Modality", ""))
            continue
        for sop in _seg_sources(ds):
            index[sop] = str(path.resolve())
    return index


def _seg_sources(ds: pydicom.Dataset) -> set[str]:
    sources = set()
    for series in getattr(ds, "ReferencedSeriesSequence", []):
        for inst in getattr(series, "ReferencedInstanceSequence", []):
            sources.add(str(inst.ReferencedSOPInstanceUID))
    for frame in getattr(ds, "PerFrameFunctionalGroupsSequence", []):
        for deriv in getattr(frame, "DerivationImageSequence", []):
            for src in getattr(deriv, "SourceImageSequence", []):
                sources.add(str(src.ReferencedSOPInstanceUID))
    return sources


_SEG_CACHE: OrderedDict[str, Any] = OrderedDict()


def _read_seg(path: str) -> Any:
    """highdicom Segmentation, cached: consecutive slices of a series share one SEG file."""
    import highdicom as hd

    if path not in _SEG_CACHE:
        _SEG_CACHE[path] = hd.seg.segread(path)
        while len(_SEG_CACHE) > 2:
            _SEG_CACHE.popitem(last=False)
    return _SEG_CACHE[path]


def _seg_label(
    path: str, sop_uid: str, frame: int | None, shape: tuple[int, int], segments: dict[int, int] | None
) -> np.ndarray:
    """Label map of one source image (or one frame, 1-based, of a multi-frame source)."""
    try:
        seg = _read_seg(path)
        if frame is None:
            pixels = seg.get_pixels_by_source_instance([sop_uid], combine_segments=True, skip_overlap_checks=True)
        else:
            pixels = seg.get_pixels_by_source_frame(sop_uid, [frame], combine_segments=True, skip_overlap_checks=True)
    except Exception as exc:
        raise LabelError(f"cannot read SEG frames for {sop_uid} from {path}: {type(exc).__name__}: {exc}") from exc
    label = np.asarray(pixels[0]).astype(np.int64)
    if segments:
        mapped = np.zeros_like(label)
        for number, cls in segments.items():
            mapped[label == number] = cls
        label = mapped
    return _checked(label.astype(np.uint16), shape, f"SEG {path}")


# --------------------------------------------------------------------------- COCO


def _index_coco(path: Path, categories: dict[int, int] | None) -> tuple[dict[str, dict[str, Any]], dict[int, int]]:
    try:
        data = json.loads(path.read_text())
        images, anns = data["images"], data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabelError(f"cannot read COCO file {path}: {type(exc).__name__}: {exc}") from exc
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in anns:
        by_image[ann["image_id"]].append(ann)
    entries = {}
    for image in images:
        entry = {"id": image["id"], "height": image.get("height"), "width": image.get("width"),
                 "annotations": by_image.get(image["id"], [])}  # fmt: skip
        entries[str(image["file_name"])] = entry
        entries.setdefault(PurePosixPath(str(image["file_name"])).name, entry)
    if categories is None:
        ids = sorted({c["id"] for c in data.get("categories", [])} | {a["category_id"] for a in anns})
        categories = {cid: rank + 1 for rank, cid in enumerate(ids)}
    return entries, categories


def _coco_label(entry: dict[str, Any], shape: tuple[int, int], classes: dict[int, int]) -> np.ndarray:
    h, w = shape
    if entry["height"] not in (None, h) or entry["width"] not in (None, w):
        raise LabelError(f"COCO image {entry['id']} is {entry['width']}x{entry['height']} but its image is {w}x{h}")
    label = np.zeros((h, w), dtype=np.uint8)
    for ann in entry["annotations"]:
        mask = coco_segmentation_mask(ann["segmentation"], h, w)
        label[mask] = classes.get(ann["category_id"], 0)
    return label


def coco_segmentation_mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    """Polygon list or RLE (compressed or not) → (H, W) bool mask."""
    if isinstance(segmentation, list):
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon in segmentation:
            if len(polygon) >= 6:
                draw.polygon(list(map(float, polygon)), fill=1, outline=1)
        return np.asarray(canvas, dtype=bool)
    from pycocotools import mask as mask_utils

    rle = segmentation
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, h, w)
    return mask_utils.decode(rle).astype(bool)

"""DICOM SEG objects as labels: which SEG labels each source image (by SOPInstanceUID), its
frames as a class map, and the segment numbers a SEG declares. Used by
:class:`segops.data.labels.LabelResolver`."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from segops.data.mask_files import class_map
from segops.errors import LabelError

log = logging.getLogger(__name__)


def segment_numbers(path: str) -> set[int]:
    """The SegmentNumbers a DICOM SEG declares (header only)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {int(item.SegmentNumber) for item in getattr(ds, "SegmentSequence", [])}


def index_segs(root: Path) -> dict[str, str]:
    """SOPInstanceUID of each referenced source image → path of the SEG that labels it."""
    if not root.is_dir():
        raise LabelError(f"DICOM SEG folder {root} does not exist")
    index: dict[str, str] = {}
    ignored, beside = [], 0  # images beside the SEGs (TCIA's series folders) are expected: counted, not warned
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # not a DICOM file: not a label, say so and go on
            ignored.append(f"{path} ({type(exc).__name__})")
            continue
        if getattr(ds, "Modality", "") != "SEG":
            beside += 1
            continue
        for sop in _seg_sources(ds):
            index[sop] = str(path.resolve())
    if ignored:
        log.warning("ignored %d file(s) in the SEG folder that are not DICOM, e.g. %s", len(ignored), ignored[0])
    if beside:
        log.info("%d other DICOM file(s) beside the SEG objects under %s (not labels)", beside, root)
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


def seg_label(
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
    return class_map(label.astype(np.uint16), shape, f"SEG {path}")

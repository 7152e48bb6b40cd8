"""What sampled mask files hold, from their raw stored values: the mask-kind guess behind ``segops plan``.

- binary: at most two values; ``{0, 255}`` reads as 0/1 as stored, another pair gets ``values``;
  also ``{0, 1, 255}`` where no mask holds both 1 and 255 (files saved 0/1 and 0/255 by two tools
  or sources, merged): both are the foreground.
- anti-aliased: more than two values, but ≥ 98 % of pixels are 0 or the maximum and ≥ 90 % of
  the others lie on an edge → ``threshold`` at the midpoint (128 for 0/255); JPEG masks the
  same when ≥ 98 % of pixels lie within 1/16 of the range (at least 2 levels) of 0 or of the
  stored foreground value, the nonzero value covering the most pixels (block noise is not only
  on edges; 0/1 JPEG masks are binarised at 1). A gray mask stored as RGB is read from one channel; a float mask as
  integers (:func:`integral`).
- instance ids: 16-bit storage with two or more ids in a mask, more than
  :data:`MAX_GUESSED_CLASSES` values in one mask, or the layout of per-image ids (PennFudan's
  ``PedMasks``): ≥ 90 % of masks number their objects 1..k with no gap, k differing between
  masks (at least 3 different counts, up to 3 or more); and ≥ 80 % of (mask, value) pairs are
  one connected blob → ``instance-png``, task instance. Class maps rarely look like that: a
  mask lacking class 2 but holding class 3 breaks the 1..k numbering, and most classes are not
  one blob in every image.
- multi-class otherwise: values 0..K are class indices, other value sets get a ``values`` map.
- colour-coded (most sampled masks are colour images): ``colors``, in :mod:`segops.data.mask_colours`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from segops.data.array_masks import is_array_mask, read_array_layout
from segops.errors import LabelError, PlanError

log = logging.getLogger(__name__)

MAX_GUESSED_CLASSES = 10
#: Strides of class-coded instance ids (id = class x stride + object), tried in this order: the bound
#: every object number (id mod stride) stays under, and the datasets that code ids so.
CODED_STRIDES = {
    1000: (250, "Cityscapes' and KITTI-MOTS' instanceIds"),
    256: (128, "Mapillary Vistas' instances"),  # half the stride: busy streets
}


def coded_stride(values: list[int]) -> int | None:
    """The stride of :data:`CODED_STRIDES` that the stored ``values`` are class-coded ids of: some values
    at or above it, more of them than the classes they encode (several objects of a class), at most 255
    classes, and every object number (value mod stride) under the stride's bound; else None. Values
    coded by one stride have object numbers all over the range of the other (4867 = 19 x 256 + 3 is
    4 x 1000 + 867)."""
    for stride, (limit, _) in CODED_STRIDES.items():
        big = [v for v in values if v >= stride]
        classes = {v // stride for v in big}
        if big and len(big) > len(classes) and max(classes) <= 255 and max(v % stride for v in big) < limit:
            return stride
    return None


#: Mask files whose values carry compression noise: binarised at the midpoint when nearly binary.
LOSSY_MASK_EXTS = (".jpg", ".jpeg")
#: Most a gray mask stored as a colour image may differ between its channels (JPEG's rounding).
GRAY_TOLERANCE = 8


def as_single_channel(array: np.ndarray, soft: bool = True) -> np.ndarray | None:
    """A stored mask as (H, W): as stored when 2-D; the first channel of a gray image stored as
    RGB/RGBA (colour channels equal within :data:`GRAY_TOLERANCE`, as masks saved by OpenCV or
    as JPEG are) or as gray + alpha; the alpha channel of one colour painted on a transparent
    layer; None for a colour image (e.g. colour-coded classes). Values as :func:`integral`."""
    if array.ndim == 2:
        return integral(array, soft)
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        return None
    if array.shape[2] in (2, 4) and _drawn_in_alpha(array):
        return integral(np.ascontiguousarray(array[..., -1]), soft)
    if array.shape[2] == 2:
        return integral(array[..., 0], soft)
    colour = array[..., :3].astype(np.int32)
    if np.abs(colour - colour[..., :1]).max(initial=0) > GRAY_TOLERANCE:
        return None
    return integral(np.ascontiguousarray(array[..., 0]), soft)


def _drawn_in_alpha(array: np.ndarray) -> bool:
    """A mask painted as opacity on a transparent layer: one colour everywhere (black strokes), the
    alpha channel varying. Read from the colour, it would be empty."""
    colour, alpha = array[..., :-1], array[..., -1]
    return bool((colour == colour[0, 0]).all() and alpha.min() != alpha.max())  # one colour, e.g. red (255, 0, 0)


def integral(mask: np.ndarray, soft: bool = True) -> np.ndarray:
    """A mask's stored values as integers: 1-bit (bool) as 0/1; a float mask (32-bit TIFF from a
    scientific pipeline) with whole values as the narrowest unsigned type that holds them; a soft
    float mask within [0, 1] (probabilities) as round(255 p), which the planner then binarises at
    128 as it does an anti-aliased mask (not with ``soft`` False: instance ids). Other float
    masks are returned as stored."""
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if mask.dtype.kind != "f" or not np.isfinite(mask).all():
        return mask
    low, high = float(mask.min(initial=0)), float(mask.max(initial=0))
    if low >= 0 and np.array_equal(mask, np.round(mask)) and high <= np.iinfo(np.uint16).max:
        return mask.astype(np.uint8 if high <= 255 else np.uint16)
    if soft and low >= 0 and high <= 1:
        return np.round(mask * 255).astype(np.uint8)
    return mask


def without_void(mask: np.ndarray, void: int | None) -> np.ndarray:
    """``mask`` with its ``void`` pixels (Pascal VOC's 255 borders) set to 0 (background)."""
    if void is None:
        return mask
    return np.where(mask == void, np.zeros((), mask.dtype), mask)


@dataclass(frozen=True)
class MaskCensus:
    """Raw stored values of the sampled masks.

    Attributes:
        values: stored value → (masks holding it, pixels).
        bits: 16 when any mask is stored with more than 8 bits.
        max_values_per_mask: most distinct nonzero values in one mask.
        edge_share: share of pixels valued neither 0 nor the maximum that lie on an edge
            (a 3x3 neighbourhood with two values); 1.0 when there are none.
        blob_share: share of (mask, nonzero value) pairs forming one connected component.
        id_layout_share: share of masks with foreground whose nonzero values are 1..k, no gap.
        id_counts: how many different k those masks have.
        lossy: some masks are JPEG files (compression noise around every edge and block).
        void: the stored value of void borders (:func:`void_value`), left out of the other cues.
        with_foreground: masks holding any nonzero value (all of them: masks were drawn only
            where there is something to segment, as DAGM's and Severstal's are).
        stacked: masks stored as a stack of one binary mask per object (NumPy files, as WGISD's):
            objects by the file's layout.
        id_single_share: share of the masks numbered 1..k that hold k = 1 (one region).
        touching_share: share of masks with two or more nonzero values where two of them touch
            (4-neighbours): classes drawn side by side or nested (a tumour in its organ), where
            regions numbered per mask lie apart.
    """

    masks: int
    values: dict[int, tuple[int, int]]
    bits: int
    max_values_per_mask: int
    edge_share: float
    blob_share: float
    id_layout_share: float = 0.0
    id_counts: int = 0
    lossy: bool = False
    void: int | None = None
    with_foreground: int = 0
    stacked: int = 0
    id_single_share: float = 0.0
    touching_share: float = 0.0


def _read_raw(path: Path) -> tuple[np.ndarray | None, bool]:
    """(the stored values, None where unreadable or colour; whether stored as one binary mask per object)."""
    try:
        if is_array_mask(path):
            return read_array_layout(path)
        with Image.open(path) as img:
            array = as_single_channel(np.asarray(img))
    except (UnidentifiedImageError, OSError, LabelError) as exc:
        log.warning("cannot read mask %s: %s", path, exc)
        return None, False
    if array is None:
        log.warning("mask %s is a colour image; class masks are read from one channel", path)
    return array, False


def mask_census(paths: list[Path]) -> MaskCensus:
    """Stored values of ``paths`` (as stored, no rescaling), and the shape cues of :func:`classify_masks`."""
    values: dict[int, list[int]] = {}
    bits, most, off_total, off_edge, blobs, pairs, n = 8, 0, 0, 0, 0, 0, 0
    numbered: list[int] = []  # k of each mask whose nonzero values are 1..k
    with_foreground, several, touching = 0, 0, 0
    read = [(p, *_read_raw(p)) for p in paths]
    arrays = [(p, a) for p, a, _ in read if a is not None and a.ndim == 2]
    void = void_value([a for _, a in arrays])
    top = max((int(a.max(initial=0)) for _, a in arrays), default=0)
    for i, (_, stored) in enumerate(arrays):
        mask = without_void(stored, void)  # the cues below are about classes and objects: void pixels are neither
        n += 1
        bits = max(bits, 16 if mask.dtype.itemsize > 1 else 8)
        uniq, counts = np.unique(mask, return_counts=True)
        for v, c in zip(uniq.tolist(), counts.tolist()):
            entry = values.setdefault(int(v), [0, 0])
            entry[0], entry[1] = entry[0] + 1, entry[1] + int(c)
        most = max(most, int((uniq != 0).sum()))
        nonzero = uniq[uniq != 0]
        if nonzero.size:
            with_foreground += 1
            if nonzero[0] == 1 and nonzero[-1] == nonzero.size:  # sorted and distinct: 1..k exactly
                numbered.append(int(nonzero.size))
        if nonzero.size >= 2:
            several += 1
            touching += _values_touch(mask)
        off = (mask != 0) & (mask != top)
        if off.any():
            edge = ndimage.maximum_filter(mask, 3) != ndimage.minimum_filter(mask, 3)
            off_total, off_edge = off_total + int(off.sum()), off_edge + int((off & edge).sum())
        if i < 20:  # connected components are the costly cue: 20 masks, 50 values each
            for v in uniq[uniq != 0][:50]:
                pairs += 1
                blobs += ndimage.label(mask == v)[1] == 1
    return MaskCensus(
        n,
        {v: (f, p) for v, (f, p) in sorted(values.items())},
        bits,
        most,
        off_edge / off_total if off_total else 1.0,
        blobs / pairs if pairs else 0.0,
        len(numbered) / with_foreground if with_foreground else 0.0,
        len(set(numbered)),
        any(p.suffix.lower() in LOSSY_MASK_EXTS for p, _ in arrays),
        void,
        with_foreground,
        sum(stacked for _, a, stacked in read if a is not None and a.ndim == 2),
        numbered.count(1) / len(numbered) if numbered else 0.0,
        touching / several if several else 0.0,
    )


def _values_touch(mask: np.ndarray) -> bool:
    """Whether two different nonzero values of ``mask`` are 4-neighbours somewhere."""
    for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
        if ((a != b) & (a != 0) & (b != 0)).any():
            return True
    return False


#: The stored value datasets use for "void" borders (Pascal VOC, Cityscapes' ignore).
VOID_CANDIDATE = 255
#: How close to another value (px) a void pixel lies: VOC's borders are ~5 px wide.
VOID_REACH = 3


def void_value(masks: list[np.ndarray]) -> int | None:
    """255 when it marks thin borders between other values, as Pascal VOC's void: present with
    nonzero values below 128 (class indices, not a run of ids reaching 255), and >= 90 % of its
    pixels within :data:`VOID_REACH` px of another value (an object coloured 255 has an interior);
    else None. 20 masks at most are looked at."""
    near, total, with_others = 0, 0, 0
    for mask in [m for m in masks if (m == VOID_CANDIDATE).any()][:20]:
        others = np.unique(mask[(mask != VOID_CANDIDATE) & (mask != 0)])
        if others.size == 0 or others.max() >= 128:  # 255 apart from small class indices, not one id of a run
            continue
        with_others += 1
        is_void = mask == VOID_CANDIDATE
        close = ndimage.maximum_filter((~is_void).astype(np.uint8), size=2 * VOID_REACH + 1).astype(bool)
        near, total = near + int((is_void & close).sum()), total + int(is_void.sum())
    return VOID_CANDIDATE if with_others and total and near / total >= 0.9 else None


def classify_masks(
    census: MaskCensus,
    task: Literal["semantic", "instance"] | None = None,
    foreground_value: int | None = None,
) -> tuple[dict[str, Any], str, int, str, str]:
    """Labels spec fields (``kind``, ``values``/``threshold``, ``void``), task, classes, mask kind and why.

    Args:
        census: stored values and shape cues of the sampled masks (:func:`mask_census`); its
            values and cues already leave void pixels out.
        task: the user's ``--task``, winning over the instance-id cues.
        foreground_value: the user's ``--foreground-value``: that stored value is class 1, every other 0.
    """
    fields, task_, classes, kind, why = _classify(census, task, foreground_value)
    if census.void is not None and foreground_value != census.void:
        fields = {**fields, "void": census.void}
        why += f"; {census.void} on thin borders between them is void (no class or object)"
    return fields, task_, classes, kind, why


def _classify(
    census: MaskCensus,
    task: Literal["semantic", "instance"] | None,
    foreground_value: int | None,
) -> tuple[dict[str, Any], str, int, str, str]:
    vals = sorted(census.values)
    top = vals[-1] if vals else 0
    if foreground_value is not None:
        v = foreground_value
        return (
            {"kind": "mask-png", "values": {x: int(x == v) for x in sorted(set(vals) | {v})}},
            "semantic",
            2,
            "binary",
            f"--foreground-value {v}: stored {v} is the foreground",
        )
    main = sum(census.values.get(x, (0, 0))[1] for x in {0, top})
    total = sum(p for _, p in census.values.values()) or 1
    # JPEG noise: values within 1/16 of the range (at least 2 levels) of 0 or of the stored foreground,
    # the nonzero value covering the most pixels (255 of 0/255 masks; 1 of 0/1 masks, whose noise reaches 2)
    peak = max((v for v in vals if v), key=lambda v: (census.values[v][1], v), default=top) if census.lossy else top
    tol = max(2, peak // 16) if census.lossy else top // 16
    near = sum(p for v, (_, p) in census.values.items() if v <= tol or abs(v - peak) <= tol)
    # thin structures (cracks, vessels) saved as JPEG: every pixel is near an edge, so the noise spreads
    # over more than 1/16 of the range; still, nearly all pixels within 1/8 of either end and many values
    tol_wide = max(2, peak // 8)
    near_wide = sum(p for v, (_, p) in census.values.items() if v <= tol_wide or abs(v - peak) <= tol_wide)
    aliased = len(vals) > 2 and (
        (main / total >= 0.98 and census.edge_share >= 0.9)
        or (census.lossy and near / total >= 0.98)
        or (census.lossy and len(vals) > MAX_GUESSED_CLASSES and near_wide / total >= 0.95)
    )
    numbered = census.id_layout_share >= 0.9 and census.id_counts >= 3 and census.max_values_per_mask >= 3
    # 16-bit storage says ids only where a mask holds two or more: one value per mask reads the same either way
    wide = census.bits == 16 and census.max_values_per_mask >= 2
    instance_cue = wide or census.max_values_per_mask > MAX_GUESSED_CLASSES or numbered
    stride = coded_stride(vals) if census.bits == 16 and not numbered and task != "semantic" else None
    if stride is not None:  # Cityscapes' instanceIds: 26001 is car (26) number 1; Mapillary's 4867 is 19 x 256 + 3
        coded = sorted({v // stride for v in vals if v >= stride})
        return (
            {"kind": "instance-png", "class_stride": stride, "class_values": {c: k for k, c in enumerate(coded, 1)}},
            "instance",
            len(coded) + 1,
            "instance-id",
            f"class-coded instance ids (class x {stride} + object, as {CODED_STRIDES[stride][1]}): classes {coded} "
            f"→ 1..{len(coded)}, up to {census.max_values_per_mask} values per mask; values below {stride} "
            "(stuff, crowds) are no object",
        )
    stacks = 2 * census.stacked > census.masks  # one binary mask per object: objects however shaped (occluded)
    if task == "instance" or (task is None and (stacks or (not aliased and instance_cue and census.blob_share >= 0.8))):
        return (
            {"kind": "instance-png"},
            "instance",
            2,
            "instance-id",
            f"instance ids: up to {census.max_values_per_mask} ids per mask, {census.bits}-bit"
            + (f", numbered 1..k in {census.id_layout_share:.0%} of masks" if numbered else "")
            + (f", {census.stacked} of {census.masks} stored as one binary mask per object" if stacks else ""),
        )
    if vals == [0, 1, 255] and census.max_values_per_mask == 1:
        # masks merged from two sources: 0/1 in some files, 0/255 in others, never both in one
        return (
            {"kind": "mask-png", "values": {0: 0, 1: 1, 255: 1}},
            "semantic",
            2,
            "binary",
            "binary masks stored two ways, 0/1 in some files and 0/255 in others (never both in one): "
            "1 and 255 are both the foreground",
        )
    if _numbered_regions(census, numbered and task is None):
        return (
            {"kind": "mask-png", "threshold": 1},
            "semantic",
            2,
            "binary",
            f"values 1..k number each mask's regions (k up to {census.max_values_per_mask}, one region in "
            f"{census.id_single_share:.0%} of masks, the regions apart from each other): a mask's first, second … "
            "region, not classes → one foreground class (stored >= 1); --task instance keeps them apart as objects",
        )
    if 0 not in vals and 2 <= len(vals) <= MAX_GUESSED_CLASSES:  # no 0 stored: background by coverage
        background = max(vals, key=lambda v: (census.values[v][1], -v))
        order = [background] + [v for v in vals if v != background]
        why = f"no value 0: {background}, the most pixels, is background (Oxford-IIIT Pet's trimaps 1/2/3)"
        kind = "binary" if len(vals) == 2 else "multi-class"
        return {"kind": "mask-png", "values": {v: order.index(v) for v in vals}}, "semantic", len(vals), kind, why
    if len(vals) <= 2:
        fields = {} if set(vals) <= {0, 1} or set(vals) <= {0, 255} else {"values": {0: 0, top: 1}}
        return {"kind": "mask-png", **fields}, "semantic", 2, "binary", f"binary masks (values {vals})"
    if aliased:
        t = max(1, (peak + 1) // 2) if census.lossy else (top + 1) // 2
        exact = sum(census.values.get(x, (0, 0))[1] for x in {0, peak})
        share = 100 * (1 - (exact if census.lossy else main) / total)
        return (
            {"kind": "mask-png", "threshold": t},
            "semantic",
            2,
            "anti-aliased",
            (
                f"JPEG masks: {share:.2f} % of pixels neither 0 nor {peak} (compression noise), binarised at {t}"
                if census.lossy
                else f"anti-aliased: {share:.2f} % of pixels between 0 and {top} on edges, binarised at {t}"
            ),
        )
    if len(vals) > 256:
        raise PlanError(
            f"masks hold {len(vals)} distinct values; expected at most 256 classes (instance ids? give --task instance)"
        )
    fields = {} if vals == list(range(len(vals))) else {"values": {v: i for i, v in enumerate(vals)}}
    return (
        {"kind": "mask-png", **fields},
        "semantic",
        len(vals),
        "multi-class",
        f"{len(vals)} classes (values {vals[:12]})",
    )


def _numbered_regions(census: MaskCensus, numbered: bool) -> bool:
    """Whether the masks number their own regions 1..k rather than store classes: VisA's
    ``Masks/Anomaly`` store a part's first listed defect as 1 and its second as 2, so a 2 names no kind
    of defect. Cues: (nearly) every mask with foreground holds exactly 1..k, some hold more than one
    value, regions of different values touch in at most 1 mask in 10 (classes lie side by side or
    nested, a tumour inside its organ), and most masks hold one region (a second is the exception) or,
    where the plan decides the task alone, the counts vary as per-image ids do (``numbered``; regions
    not one blob each, else they are objects). A user's ``--task semantic`` on ids numbered so keeps
    them as classes (vertebrae or teeth numbered in order are). JPEG masks are left out: their noise
    around a 0/1 edge reads as 2."""
    return (
        census.id_layout_share >= 0.9
        and census.max_values_per_mask >= 2
        and census.touching_share <= 0.1
        and (numbered or census.id_single_share > 0.5)
        and not census.lossy
    )

"""Label census and the check of label values against a model's classes.

Each record carries the distinct values of its label and their pixel counts (columns
``label_values`` and ``label_pixels``, computed where the label is decoded: see
:func:`label_counts`). From these rows alone, without re-reading any label, this module builds
the census table ingest writes (``labels.parquet``), the ingest warning about masks that look
anti-aliased, and the check that train and segment run on the driver before any worker starts:
a value that is not a class of the model is one clear :class:`~segops.errors.LabelValueError`
with the fix, not a traceback from a loss function minutes later.

Pure pandas/numpy: the callers read the rows from datasets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segops.config.sources import IGNORE_LABEL
from segops.data.instances import INSTANCE_STRIDE
from segops.errors import LabelValueError

#: Masks whose values all lie below this are read as class indices at ingest (no warning).
PLAUSIBLE_CLASSES = 32
#: Suggested ``labels.threshold`` for masks that look anti-aliased (half of 8-bit white).
SUGGESTED_THRESHOLD = 128
#: Label paths an error message names at most.
EXAMPLES = 10

SEMANTIC_COLUMNS = ["value", "records", "files", "pixels"]
INSTANCE_COLUMNS = ["class", "instances", "records", "files", "pixels"]


def label_counts(label: np.ndarray) -> tuple[list[int], list[int]]:
    """Distinct values of one label and the pixels (voxels) of each, for the record's census columns.

    Args:
        label: (H, W) or (Z, H, W) class map (uint8) or instance label map (int32); empty for
            an unlabelled record.

    Returns:
        (values ascending, pixel counts), as plain ints.
    """
    if label.size == 0:
        return [], []
    values, counts = np.unique(label, return_counts=True)
    return [int(v) for v in values], [int(c) for c in counts]


def _long(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (record, label value): ``record`` (position in ``rows``), ``label_uri``, ``value``, ``pixels``."""
    n = np.array([len(v) for v in rows["label_values"]], dtype=np.int64)
    empty = np.zeros(0, np.int64)
    columns = {
        "record": np.repeat(np.arange(len(rows)), n),
        "label_uri": np.repeat(rows["label_uri"].astype(str).to_numpy(), n),
        "value": np.concatenate([np.asarray(v, np.int64) for v in rows["label_values"]] or [empty]),
        "pixels": np.concatenate([np.asarray(p, np.int64) for p in rows["label_pixels"]] or [empty]),
    }
    return pd.DataFrame(columns)


def label_census(rows: pd.DataFrame, instance: bool = False) -> pd.DataFrame:
    """The census of labels as training sees them (after ``values``/``threshold``).

    Args:
        rows: labelled records with ``label_uri``, ``label_values`` and ``label_pixels``.
        instance: labels are instance label maps (``class * 65536 + k``).

    Returns:
        Semantic: per value ``value, records, files, pixels``. Instance: per class
        ``class, instances, records, files, pixels`` (class 0 is background, 0 instances).
        ``files`` counts distinct label files (a SEG or a multi-page TIFF labels many records).
    """
    long = _long(rows)
    key = "class" if instance else "value"
    long[key] = long["value"] // INSTANCE_STRIDE if instance else long["value"]
    columns = INSTANCE_COLUMNS if instance else SEMANTIC_COLUMNS
    if long.empty:
        return pd.DataFrame({c: pd.Series(dtype=np.int64) for c in columns})
    long["instance"] = (long["value"] % INSTANCE_STRIDE != 0).astype(np.int64)
    table = long.groupby(key).agg(
        instances=("instance", "sum"),
        records=("record", "nunique"),
        files=("label_uri", "nunique"),
        pixels=("pixels", "sum"),
    )
    return table.reset_index()[columns].astype(np.int64)


def check_label_values(rows: pd.DataFrame, classes: int, instance: bool = False, ignore: bool = False) -> None:
    """Fail when a label value is not a class of the model (semantic: value >= ``classes``;
    instance: class part ``value // 65536`` >= ``classes``).

    Args:
        rows: labelled records with ``label_uri``, ``label_values`` and ``label_pixels``.
        classes: ``model.classes`` (background included).
        ignore: the labels mark ignored pixels with :data:`~segops.config.sources.IGNORE_LABEL`
            (mask-png ``ignore_void``): that value is no class, and fits every model.

    Raises:
        LabelValueError: the offending values, how many label files carry them, up to 10 of
            their paths, and the fix (``labels.threshold`` for anti-aliased masks, else a
            ``labels.values`` mapping or ``model.classes``).
    """
    long = _long(rows)
    if ignore and not instance:
        long = long[long["value"] != IGNORE_LABEL]
    if instance:
        _check_instance_classes(long)
    cls = long["value"] // INSTANCE_STRIDE if instance else long["value"]
    bad = long[cls >= classes]
    if bad.empty:
        return
    bad_values = sorted(set((cls[cls >= classes]).tolist()))
    files = list(dict.fromkeys(bad["label_uri"]))
    what = "class(es) (value // 65536 of instance labels)" if instance else "value(s)"
    fix = (
        _instance_fix(bad_values)
        if instance
        else _semantic_fix(long[long["record"].isin(bad["record"])], long, classes)
    )
    raise LabelValueError(
        f"label {what} {_few(bad_values)} are not classes of this model (model.classes: {classes}, so "
        f"0..{classes - 1}): "
        f"{len(files)} of {long['label_uri'].nunique()} label file(s) carry them, e.g. "
        f"{', '.join(files[:EXAMPLES])}. {fix}"
    )


def _check_instance_classes(long: pd.DataFrame) -> None:
    """Every instance of an instance label map has a class of at least 1 (``value >= 65536``).

    A value below that is an instance without a class, which segops' label readers never
    write: a dataset ingested by a segops older than the 16-bit layout (``class * 1000 + k``).
    """
    bad = long[(long["value"] > 0) & (long["value"] < INSTANCE_STRIDE)]
    if bad.empty:
        return
    files = list(dict.fromkeys(bad["label_uri"]))
    raise LabelValueError(
        f"instance label value(s) {_few(sorted(set(bad['value'].tolist())))} carry no class: segops' instance "
        f"label maps hold class * {INSTANCE_STRIDE} + k, and {len(files)} label file(s) were stored otherwise, "
        f"e.g. {', '.join(files[:EXAMPLES])}. A dataset ingested by an older segops (class * 1000 + k) is read "
        "wrongly by this one: run the ingest step again (a new run folder, or a workflow without the old "
        "dataset in train.extra_datasets)"
    )


def unusual_labels_warning(rows: pd.DataFrame, ignore: bool = False) -> str | None:
    """The ingest warning for class-map labels whose values are neither {0, 1}, {0, 255} nor
    class indices (all below :data:`PLAUSIBLE_CLASSES`), with the fix; None when there are none.
    ``ignore``: :data:`~segops.config.sources.IGNORE_LABEL` marks ignored pixels, not a value to warn of.

    Such masks are still ingested: whether a value is a class is checked against the model
    when a step trains or scores on them.
    """
    long = _long(rows)
    if ignore:
        long = long[long["value"] != IGNORE_LABEL]
    if long.empty:
        return None
    per_record = long.groupby("record")["value"].agg(lambda v: frozenset(v.tolist()))
    unusual = per_record[[not (s <= {0, 1} or s <= {0, 255} or max(s) < PLAUSIBLE_CLASSES) for s in per_record]]
    if unusual.empty:
        return None
    first = long[long["record"] == unusual.index[0]]
    return (
        f"{len(unusual)} of {len(per_record)} label(s) hold values that are neither {{0, 1}}, {{0, 255}} nor class "
        f"indices below {PLAUSIBLE_CLASSES}, e.g. {first['label_uri'].iloc[0]} holds "
        f"{_few(first['value'].tolist(), 8)}. "
        f"{_semantic_fix(long[long['record'].isin(unusual.index)], long, None)} "
        "They are ingested as they are; a train or segment step stops if a value is not a class of its model."
    )


def looks_antialiased(long: pd.DataFrame) -> bool:
    """Values like those of anti-aliased, resized or JPEG-compressed binary masks: at least 3
    values other than 0/255 that each cover under 1 % of the pixels (edge pixels), or more
    than 16 distinct values. Grey levels that encode a few classes each cover their regions."""
    pixels = long.groupby("value")["pixels"].sum()
    if len(pixels) > 16:
        return True
    rare = pixels[(~pixels.index.isin([0, 255])) & (pixels < 0.01 * pixels.sum())]
    return len(rare) >= 3


def _semantic_fix(offending: pd.DataFrame, long: pd.DataFrame, classes: int | None) -> str:
    """What to change for class-map labels: a threshold, a value mapping, or ``model.classes``."""
    if looks_antialiased(offending):
        return (
            f"They look anti-aliased, resized or JPEG-compressed ({offending['value'].nunique()} distinct "
            "values, most of "
            f"them on a few edge pixels): binarise them with labels.threshold: {SUGGESTED_THRESHOLD} on the "
            "mask-png labels."
        )
    values = sorted(set(long["value"].tolist()))
    if values == list(range(len(values))):
        return f"They look like class indices 0..{len(values) - 1}: set model.classes: {len(values)}."
    mapping = ", ".join(f"{v}: {i}" for i, v in enumerate(values))
    more = f" and set model.classes: {len(values)}" if classes is not None and len(values) > classes else ""
    return (
        f"Map the stored values to classes with labels.values: {{{mapping}}} on the mask-png labels{more} "
        "(dicom-seg: labels.segments; coco: labels.categories)" + ("." if more else ", or raise model.classes.")
    )


def _instance_fix(bad_classes: list[int]) -> str:
    top = max(bad_classes)
    return (
        f"Set model.classes: {top + 1} (background and classes 1..{top}), or give the instances classes the model has "
        "(instance-png: labels.class_id or labels.classes_pattern; coco: labels.categories)."
    )


def _few(values: list[int], n: int = 20) -> str:
    """``[1, 2, 3]``, or the first ``n`` and how many in all."""
    shown = ", ".join(str(v) for v in values[:n])
    return f"[{shown}]" if len(values) <= n else f"[{shown}, …] ({len(values)} in all)"

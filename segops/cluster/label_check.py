"""Label values checked against a model's classes, on the driver and in seconds, before any
worker starts (train and segment steps call these): a written dataset's from its label census
columns, a folder source's from its masks alone or the classes its labels declare."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from segops.cluster.datasets import mask_label_rows
from segops.config.schema import DicomSource, ImageSource
from segops.config.sources import ignores_void
from segops.data.label_census import check_label_values, label_counts
from segops.data.labels import build_resolver, declared_label_rows, has_label_masks
from segops.data.records import LABEL_COUNT_COLUMNS, STATUS_OK, dataset_meta

log = logging.getLogger(__name__)


def check_labels_fit(labelled: pd.DataFrame, classes: int, instance: bool, ignore: bool = False) -> None:
    """Fail when a label value is not a class of the model.

    Args:
        labelled: labelled ``ok`` rows from :func:`segops.data.records.dataset_meta` of one or
            more datasets, with a ``dataset`` column (their folder). Rows of datasets written
            before the census columns existed get them by scanning those datasets' label column
            in batches.
        classes: the model's ``classes``.
        instance: labels are instance label maps (``class * 65536 + k``).
        ignore: the labels mark ignored pixels (mask-png ``ignore_void``): that value is no class.

    Raises:
        LabelValueError: see :func:`segops.data.label_census.check_label_values`.
    """
    rows = labelled.reset_index(drop=True)
    if "label_values" not in rows:
        rows["label_values"] = rows["label_pixels"] = None
    filled: dict[int, tuple[list[int], list[int]]] = {}
    for dataset, part in rows[rows["label_values"].isna()].groupby("dataset"):
        counts = _scan_label_counts(Path(dataset), set(part["case_id"]))
        filled |= {i: counts.get(cid, ([], [])) for i, cid in zip(part.index, part["case_id"])}
    for k, column in enumerate(("label_values", "label_pixels")):
        rows[column] = [filled[i][k] if i in filled else v for i, v in zip(rows.index, rows[column])]
    uri = rows["label_uri"].astype(str)
    rows["label_uri"] = uri.where(
        uri != "", rows["dataset"].astype(str) + ":" + rows["rel_path"].astype(str)
    )  # volumes
    check_label_values(rows, classes, instance, ignore)


def check_dataset_labels(dataset_dir: str | Path, classes: int, instance: bool, ignore: bool = False) -> None:
    """:func:`check_labels_fit` for every labelled record of one dataset (nothing if it has no labels)."""
    meta = dataset_meta(dataset_dir)
    labelled = meta[(meta["status"] == STATUS_OK) & meta["has_label"]]
    if not labelled.empty:
        check_labels_fit(labelled.assign(dataset=str(dataset_dir)), classes, instance, ignore)


def check_source_labels(source: DicomSource | ImageSource, classes: int, instance: bool = False) -> None:
    """:func:`check_labels_fit` for a folder source a segment step decodes as it goes, before any
    actor starts: mask-png files are read once in Ray tasks (masks only, no image decoded); COCO,
    DICOM SEG and instance-png (``class_id``) labels declare their classes without a pixel read
    (:func:`segops.data.labels.declared_label_rows`); instance-png class masks
    (``classes_pattern``) are read like mask-png files."""
    if source.labels is None:
        return
    if has_label_masks(source.labels):
        rows = mask_label_rows(source)
    else:
        rows = pd.DataFrame(declared_label_rows(build_resolver(source.labels)), columns=list(LABEL_COUNT_COLUMNS))
    if not rows.empty:
        check_label_values(rows, classes, instance, ignores_void(source.labels))


def _scan_label_counts(dataset: Path, case_ids: set[str]) -> dict[str, tuple[list[int], list[int]]]:
    """Census columns of ``case_ids`` from the label tensors of a dataset without them, 64 rows at a
    time (the tensor columns are Ray Data's Arrow extension types, registered by importing
    :mod:`segops.cluster.datasets`)."""
    log.info("%s has no label census columns (written by an older segops): scanning its labels", dataset)
    counts = {}
    scan = pads.dataset(str(dataset), format="parquet").to_batches(columns=["case_id", "label"], batch_size=64)
    for batch in scan:
        for cid, label in zip(batch.column("case_id").to_pylist(), batch.column("label").to_numpy()):
            if cid in case_ids:
                counts[cid] = label_counts(np.asarray(label))
    return counts

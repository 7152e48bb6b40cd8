"""``ingest``: decode a source into a Parquet dataset of records, plus quarantine and census.

Also writes, for DICOM, a per-series geometry report (and volume records on request), a table
of labels that matched no image, so every file and every label is accounted for, and the label
census (files and pixels per label value). Train and segment steps check label values against
their model here (:func:`check_labels_fit`) before any worker starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from segops.cluster.datasets import mask_label_rows, read_source, write_dataset, write_volumes
from segops.config.schema import DicomSource, ImageSource, IngestStep
from segops.data.instances import is_instance_labels
from segops.data.label_census import check_label_values, label_census, label_counts, unusual_labels_warning
from segops.data.labels import build_resolver, declared_label_rows, has_label_masks
from segops.data.records import META_COLUMNS, STATUS_OK, STATUS_QUARANTINED, STATUS_SKIPPED
from segops.data.series import assemble_series, series_table, volume_affine
from segops.outputs.reports import write_table
from segops.steps.context import RunContext

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ["source_uri", "rel_path", "case_id", "status", "stage", "error_type", "error", "transfer_syntax"]
CENSUS_KEYS = ["modality", "transfer_syntax", "photometric", "channels", "height", "width"]


def run(step: IngestStep, ctx: RunContext) -> dict[str, Any]:
    dataset_dir = ctx.run_dir / "dataset"
    write_dataset(read_source(step.source), dataset_dir)
    meta = dataset_meta(dataset_dir)
    ok = meta[meta["status"] == STATUS_OK]
    tables = {
        "quarantine": meta[meta["status"] != STATUS_OK][QUARANTINE_COLUMNS].reset_index(drop=True),
        "census": census_table(ok),
    }
    if step.source.labels is not None:
        tables["unmatched-labels"] = unmatched_labels(step, ok)
        tables["labels"] = labels_table(step, ok)
    outputs: dict[str, Any] = {"dataset": str(dataset_dir)}
    if isinstance(step.source, DicomSource) and not ok.empty:
        series = assemble_series(ok)
        tables["series"] = series_table(series)
        regular = [s for s in series if s.is_volume]
        if step.volumes and regular:
            by_case = ok.set_index("case_id")
            geometry = {}
            for s in regular:
                first = by_case.loc[s.case_ids[0]]
                affine = volume_affine(
                    first["orientation"], first["position"], (first["spacing_y"], first["spacing_x"]), s.spacing
                )
                geometry[s.series_uid] = {"spacing_z": s.spacing, "affine": affine.ravel().tolist()}
            write_volumes(dataset_dir, {s.series_uid: s.case_ids for s in regular}, geometry, ctx.run_dir / "volumes")
            outputs["volumes"] = str(ctx.run_dir / "volumes")
            ctx.state["volumes"] = ctx.run_dir / "volumes"
    for name, table in tables.items():
        parquet, csv = write_table(table, ctx.run_dir / name)
        outputs[name] = str(parquet)
        ctx.tracker.log_artifact(csv, "ingest")

    metrics = ingest_metrics(meta, tables)
    ctx.tracker.log_metrics(metrics)
    if len(tables["quarantine"]):
        log.warning(
            "%d file(s) not ingested (quarantined or skipped); see %s", len(tables["quarantine"]), outputs["quarantine"]
        )
    ctx.state |= {"source": step.source, "dataset": dataset_dir, "census": tables["census"]}
    return outputs | metrics


def ingest_metrics(meta: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    ok = meta[meta["status"] == STATUS_OK]
    metrics = {
        "ingest_files": float(meta["source_uri"].nunique()),
        "ingest_records": float(len(ok)),
        "ingest_labelled": float(ok["has_label"].sum()),
        "ingest_unlabelled": float((~ok["has_label"]).sum()),
        "ingest_quarantined": float((meta["status"] == STATUS_QUARANTINED).sum()),
        "ingest_skipped_no_pixels": float((meta["status"] == STATUS_SKIPPED).sum()),
    }
    if "unmatched-labels" in tables:
        metrics["ingest_unmatched_labels"] = float(len(tables["unmatched-labels"]))
    if "series" in tables:
        metrics["ingest_series"] = float(len(tables["series"]))
        metrics["ingest_series_with_problems"] = float((~tables["series"]["is_volume"]).sum())
    return metrics


def dataset_meta(dataset_dir: str | Path) -> pd.DataFrame:
    """All rows of a written dataset without pixel columns (cheap: a column projection).

    A dataset written by an older segops lacks the newer columns (``label_values``, …): they
    are left out, not an error.
    """
    dataset = pads.dataset(str(dataset_dir), format="parquet")
    columns = [c for c in META_COLUMNS if c in dataset.schema.names]
    return dataset.to_table(columns=columns).to_pandas()


def labels_table(step: IngestStep, ok: pd.DataFrame) -> pd.DataFrame:
    """The label census of an ingest; logs one warning when class-map labels look anti-aliased."""
    labelled = ok[ok["has_label"]]
    if not is_instance_labels(step.source.labels):
        warning = unusual_labels_warning(labelled)
        if warning:
            log.warning("%s", warning)
    return label_census(labelled, instance=is_instance_labels(step.source.labels))


def check_labels_fit(labelled: pd.DataFrame, classes: int, instance: bool) -> None:
    """Fail, on the driver and in seconds, when a label value is not a class of the model.

    Args:
        labelled: labelled ``ok`` rows from :func:`dataset_meta` of one or more datasets, with a
            ``dataset`` column (their folder). Rows of datasets written before the census
            columns existed get them by scanning those datasets' label column in batches.
        classes: the model's ``classes``.
        instance: labels are instance label maps (``class * 1000 + k``).

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
    check_label_values(rows, classes, instance)


def check_dataset_labels(dataset_dir: str | Path, classes: int, instance: bool) -> None:
    """:func:`check_labels_fit` for every labelled record of one dataset (nothing if it has no labels)."""
    meta = dataset_meta(dataset_dir)
    labelled = meta[(meta["status"] == STATUS_OK) & meta["has_label"]]
    if not labelled.empty:
        check_labels_fit(labelled.assign(dataset=str(dataset_dir)), classes, instance)


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
        rows = pd.DataFrame(
            declared_label_rows(build_resolver(source.labels)), columns=["label_uri", "label_values", "label_pixels"]
        )
    if not rows.empty:
        check_label_values(rows, classes, instance)


def _scan_label_counts(dataset: Path, case_ids: set[str]) -> dict[str, tuple[list[int], list[int]]]:
    """Census columns of ``case_ids`` from the label tensors of a dataset without them, 64 rows at a time."""
    log.info("%s has no label census columns (written by an older segops): scanning its labels", dataset)
    counts = {}
    scan = pads.dataset(str(dataset), format="parquet").to_batches(columns=["case_id", "label"], batch_size=64)
    for batch in scan:
        for cid, label in zip(batch.column("case_id").to_pylist(), batch.column("label").to_numpy()):
            if cid in case_ids:
                counts[cid] = label_counts(np.asarray(label))
    return counts


def census_table(ok: pd.DataFrame) -> pd.DataFrame:
    """Counts per modality × transfer syntax (file format for images) × photometric × shape."""
    if ok.empty:
        return pd.DataFrame(columns=[*CENSUS_KEYS, "records"])
    counts = ok.groupby(CENSUS_KEYS, dropna=False).size().reset_index(name="records")
    return counts.sort_values(["records", *CENSUS_KEYS], ascending=[False] + [True] * len(CENSUS_KEYS)).reset_index(
        drop=True
    )


def unmatched_labels(step: IngestStep, ok: pd.DataFrame) -> pd.DataFrame:
    """Labels that matched no decoded image (a typo in a pattern shows up here, not silently)."""
    known = build_resolver(step.source.labels).all_label_keys()
    unmatched = sorted(known - set(ok["label_uri"]))
    return pd.DataFrame({"label_uri": unmatched})


def restore(step: IngestStep, outputs: dict[str, Any], ctx: RunContext) -> None:
    """Put a finished ingest's dataset back in the run context (resume)."""
    ctx.state |= {
        "source": step.source,
        "dataset": Path(outputs["dataset"]),
        "census": pd.read_parquet(outputs["census"]),
    }
    if "volumes" in outputs:
        ctx.state["volumes"] = Path(outputs["volumes"])

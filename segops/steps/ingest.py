"""``ingest``: decode a source into a Parquet dataset of records, plus quarantine and census.

Also writes, for DICOM and volume files, a per-series (per-case) geometry report (and volume
records on request), a table of labels that matched no image, so every file and every label is
accounted for, and the label census (files and pixels per label value), from which train and
segment steps check label values against their model (:mod:`segops.cluster.label_check`) before
any worker starts.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from segops.cluster.datasets import read_source, write_dataset, write_volumes
from segops.config.schema import DicomSource, ImageSource, IngestStep, RtstructLabels, VolumeLabels, VolumeSource
from segops.config.sources import GROUP_WORDS, ignores_void, is_instance_labels
from segops.data.decode import label_reader
from segops.data.images import image_group
from segops.data.label_census import label_census, unusual_labels_warning
from segops.data.labels import LabelResolver
from segops.data.records import (
    STATUS_OK,
    STATUS_QUARANTINED,
    STATUS_SKIPPED,
    STATUS_UNLABELLED,
    dataset_meta,
    label_problems,
    quarantine_table,
)
from segops.data.rtstruct_labels import CENSUS_COLUMNS, contour_census
from segops.data.series import SeriesGeometry, assemble_series, series_table, volume_affine
from segops.data.slice_planes import file_order_geometry
from segops.data.volume_labels import DicomSliceLabels, volume_label_files
from segops.errors import StepError
from segops.outputs.reports import write_table
from segops.steps.context import RunContext
from segops.steps.results import IngestResult

log = logging.getLogger(__name__)

CENSUS_KEYS = ["modality", "transfer_syntax", "photometric", "channels", "height", "width"]


def run(step: IngestStep, ctx: RunContext) -> IngestResult:
    dataset_dir = ctx.run_dir / "dataset"
    # indexed once (an LIDC or RTSTRUCT folder's files are read to index them): decode and the tables share it
    labels = label_reader(step.source.labels) if step.source.labels is not None else None
    write_dataset(read_source(step.source, labels=labels), dataset_dir)
    meta = dataset_meta(dataset_dir)
    ok = meta[meta["status"] == STATUS_OK]
    tables = {
        "quarantine": quarantine_table(meta),
        "census": census_table(ok),
    }
    if step.source.labels is not None:
        tables["unmatched-labels"] = unmatched_labels(step, ok, labels)
        tables["labels"] = labels_table(step, ok)
    if isinstance(step.source.labels, RtstructLabels):
        tables["rtstruct-contours"] = rtstruct_contours(step, ok, labels)
    volumes = None
    if isinstance(step.source, DicomSource | VolumeSource) and not ok.empty:
        series = assemble_series(ok)
        tables["series"] = series_table(series)
        regular = [s for s in series if s.is_volume]
        if step.volumes and regular:
            if isinstance(step.source, VolumeSource):
                order, geometry = file_order_geometry(ok, regular)
            else:
                order, geometry = series_order_geometry(ok, regular)
            write_volumes(dataset_dir, order, geometry, ctx.run_dir / "volumes")
            volumes = ctx.run_dir / "volumes"
    paths = {}
    for name, table in tables.items():
        parquet, csv = write_table(table, ctx.run_dir / name)
        paths[name] = parquet
        ctx.tracker.log_artifact(csv, "ingest")

    if isinstance(step.source, ImageSource) and step.source.group_by not in GROUP_WORDS:
        check_group_pattern(step.source.group_by, ok)
    metrics = ingest_metrics(meta, tables)
    ctx.tracker.log_metrics(metrics)
    if metrics["ingest_skipped_by_selection"]:
        reasons = meta[skipped_by_selection(meta)]["error"].str.split(";").str[0].value_counts()
        log.info(
            "%d DICOM image(s) left out as the source's skip / modalities say: %s; listed in %s",
            int(metrics["ingest_skipped_by_selection"]),
            "; ".join(f"{n} × {why}" for why, n in reasons.head(3).items()),
            paths["quarantine"],
        )
    unread = int(metrics["ingest_label_problems"])
    not_ingested = len(tables["quarantine"]) - unread - int(metrics["ingest_skipped_by_selection"])
    if not_ingested:
        log.warning(
            "%d file(s) not ingested (quarantined or skipped); see %s",
            not_ingested,
            paths["quarantine"],
        )
    if unread:
        first = tables["quarantine"][tables["quarantine"]["status"] == STATUS_UNLABELLED].iloc[0]
        log.warning(
            "%d image(s) kept without their label, which could not be read or does not fit (e.g. %s: %s): they are "
            "segmented but neither trained on nor scored; fix the labels and run again; all are listed in %s",
            unread,
            first["rel_path"],
            first["error"],
            paths["quarantine"],
        )
    if len(tables.get("rtstruct-contours", ())):
        counts = tables["rtstruct-contours"]["reason"].value_counts().sort_index()
        log.warning(
            "RTSTRUCT contours not drawn on any slice: %s; see %s",
            ", ".join(f"{n} {reason}" for reason, n in counts.items()),
            paths["rtstruct-contours"],
        )
    return IngestResult(step.source, dataset_dir, paths, volumes, metrics)


def check_group_pattern(pattern: str, ok: pd.DataFrame) -> None:
    """A ``group_by`` regular expression that matches none of the decoded images' paths is an error
    (every image would be its own group, as ``group_by: file``, while the workflow says otherwise);
    one that misses some is a warning naming them (each stays its own group).

    Raises:
        StepError: the pattern matched no image's path.
    """
    paths = sorted(set(ok["rel_path"]))
    missed = [p for p in paths if image_group(p, pattern) is None]
    if not missed:
        return
    examples = ", ".join(missed[:3]) + (", ..." if len(missed) > 3 else "")
    if len(missed) == len(paths):
        raise StepError(
            f"source.group_by {pattern!r} matched none of the {len(paths)} images' paths (e.g. {examples}), so "
            "nothing would be kept together in the split; the expression is searched in each path relative to "
            "source.path and its one capture group names the unit: fix it, or use group_by: folder or file"
        )
    log.warning(
        "source.group_by %r matched %d of %d images' paths; the other %d are each their own split group (%s)",
        pattern,
        len(paths) - len(missed),
        len(paths),
        len(missed),
        examples,
    )


def series_order_geometry(
    ok: pd.DataFrame, regular: list[SeriesGeometry]
) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """DICOM series: slices along the normal (see :func:`segops.data.series.assemble_series`), the
    affine of the first slice's geometry and the median slice spacing."""
    by_case = ok.set_index("case_id")
    geometry = {}
    for s in regular:
        first = by_case.loc[s.case_ids[0]]
        affine = volume_affine(
            first["orientation"], first["position"], (first["spacing_y"], first["spacing_x"]), s.spacing
        )
        geometry[s.series_uid] = {"spacing_z": s.spacing, "affine": affine.ravel().tolist()}
    return {s.series_uid: s.case_ids for s in regular}, geometry


def skipped_by_selection(meta: pd.DataFrame) -> pd.Series:
    """Rows of images the source chose not to read (stage ``select``: see :mod:`segops.data.dicom_roles`)."""
    return (meta["status"] == STATUS_SKIPPED) & (meta["stage"] == "select")


def ingest_metrics(meta: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    ok = meta[meta["status"] == STATUS_OK]
    metrics = {
        "ingest_files": float(meta["source_uri"].nunique()),
        "ingest_records": float(len(ok)),
        "ingest_labelled": float(ok["has_label"].sum()),
        "ingest_unlabelled": float((~ok["has_label"]).sum()),
        "ingest_quarantined": float((meta["status"] == STATUS_QUARANTINED).sum()),
        "ingest_label_problems": float(label_problems(meta).sum()),
        "ingest_skipped_no_pixels": float(((meta["status"] == STATUS_SKIPPED) & ~skipped_by_selection(meta)).sum()),
        # images the source's skip / modalities leaves out: localizers, secondary captures, other modalities
        "ingest_skipped_by_selection": float(skipped_by_selection(meta).sum()),
    }
    if "unmatched-labels" in tables:
        metrics["ingest_unmatched_labels"] = float(len(tables["unmatched-labels"]))
    if "rtstruct-contours" in tables:
        metrics["ingest_rtstruct_not_drawn"] = float(len(tables["rtstruct-contours"]))
    if "series" in tables:
        metrics["ingest_series"] = float(len(tables["series"]))
        metrics["ingest_series_with_problems"] = float((~tables["series"]["is_volume"]).sum())
    return metrics


def labels_table(step: IngestStep, ok: pd.DataFrame) -> pd.DataFrame:
    """The label census of an ingest; logs one warning when class-map labels look anti-aliased."""
    labelled = ok[ok["has_label"]]
    if not is_instance_labels(step.source.labels):
        warning = unusual_labels_warning(labelled, ignores_void(step.source.labels))
        if warning:
            log.warning("%s", warning)
    return label_census(labelled, instance=is_instance_labels(step.source.labels))


def census_table(ok: pd.DataFrame) -> pd.DataFrame:
    """Counts per modality × transfer syntax (file format for images) × photometric × shape."""
    if ok.empty:
        return pd.DataFrame(columns=[*CENSUS_KEYS, "records"])
    counts = ok.groupby(CENSUS_KEYS, dropna=False).size().reset_index(name="records")
    return counts.sort_values(["records", *CENSUS_KEYS], ascending=[False] + [True] * len(CENSUS_KEYS)).reset_index(
        drop=True
    )


def unmatched_labels(step: IngestStep, ok: pd.DataFrame, labels: LabelResolver | DicomSliceLabels) -> pd.DataFrame:
    """Labels that matched no decoded image (a typo in a pattern shows up here, not silently);
    ``labels``: the reader decode used."""
    spec = step.source.labels
    known = volume_label_files(spec) if isinstance(spec, VolumeLabels) else labels.all_label_keys()
    unmatched = sorted(known - set(ok["label_uri"]))
    return pd.DataFrame({"label_uri": unmatched})


def rtstruct_contours(step: IngestStep, ok: pd.DataFrame, labels: LabelResolver) -> pd.DataFrame:
    """RTSTRUCT contours no ingested slice drew (open, between or off the slices, of ROIs no rule
    matches), one row each with the RTSTRUCT, ROI name and reason (see
    :func:`segops.data.rtstruct_labels.contour_census`)."""
    spec = step.source.labels
    rows = contour_census(labels.rtstruct, ok.to_dict("records"), spec.rois, spec.synonyms)
    return pd.DataFrame(rows, columns=list(CENSUS_COLUMNS))


def reload(step: IngestStep, outputs: dict[str, Any], ctx: RunContext) -> IngestResult:
    """A finished ingest's result, from its manifest outputs (resume)."""
    return IngestResult.from_manifest(outputs, step.source)

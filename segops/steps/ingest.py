"""``ingest``: decode a source into a Parquet dataset of records, plus quarantine and census."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import pyarrow.dataset as pads

from segops.cluster.datasets import read_source, write_dataset
from segops.config.schema import IngestStep
from segops.data.records import STATUS_OK, STATUS_QUARANTINED, STATUS_SKIPPED
from segops.outputs.reports import write_table
from segops.steps.context import RunContext

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ["source_uri", "rel_path", "case_id", "status", "stage", "error_type", "error"]


def run(step: IngestStep, ctx: RunContext) -> dict[str, Any]:
    dataset_dir = ctx.run_dir / "dataset"
    write_dataset(read_source(step.source), dataset_dir)
    meta = dataset_meta(dataset_dir)
    quarantine = meta[meta["status"] != STATUS_OK][QUARANTINE_COLUMNS].reset_index(drop=True)
    quarantine_path, _ = write_table(quarantine, ctx.run_dir / "quarantine")
    census = census_table(meta[meta["status"] == STATUS_OK])
    census_path, _ = write_table(census, ctx.run_dir / "census")

    ok = meta[meta["status"] == STATUS_OK]
    metrics = {
        "ingest_files": float(meta["source_uri"].nunique()),
        "ingest_records": float(len(ok)),
        "ingest_labelled": float(ok["has_label"].sum()),
        "ingest_unlabelled": float((~ok["has_label"]).sum()),
        "ingest_quarantined": float((meta["status"] == STATUS_QUARANTINED).sum()),
        "ingest_skipped_no_pixels": float((meta["status"] == STATUS_SKIPPED).sum()),
    }
    ctx.tracker.log_metrics(metrics)
    ctx.tracker.log_artifact(quarantine_path.with_suffix(".csv"), "ingest")
    ctx.tracker.log_artifact(census_path.with_suffix(".csv"), "ingest")
    if len(quarantine):
        log.warning("%d file(s) quarantined; see %s", len(quarantine), quarantine_path)
    ctx.state |= {"source": step.source, "dataset": dataset_dir}
    return {"dataset": str(dataset_dir), "quarantine": str(quarantine_path), "census": str(census_path), **metrics}


def dataset_meta(dataset_dir) -> pd.DataFrame:
    """All rows of a written dataset without pixel columns (cheap: a column projection)."""
    columns = [
        "case_id", "group_id", "source_uri", "rel_path", "frame", "modality", "height", "width",
        "channels", "transfer_syntax", "photometric", "has_label", "status", "stage", "error_type", "error",
    ]  # fmt: skip
    return pads.dataset(str(dataset_dir), format="parquet").to_table(columns=columns).to_pandas()


def census_table(ok: pd.DataFrame) -> pd.DataFrame:
    """Counts per modality × transfer syntax × photometric × shape."""
    keys = ["modality", "transfer_syntax", "photometric", "channels", "height", "width"]
    if ok.empty:
        return pd.DataFrame(columns=[*keys, "records"])
    return ok.groupby(keys, dropna=False).size().reset_index(name="records").sort_values("records", ascending=False)

"""Per-case reports (Parquet + CSV) and their summary metrics."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from segops.metrics import summarize
from segops.outputs.atomic import atomic_write, atomic_write_bytes

#: One row per labelled input.
REPORT_COLUMNS = (
    "case_id",
    "split",
    "source_uri",
    "rel_path",
    "frame",
    "modality",
    "dice",
    "iou",
    "fg_fraction",
    "label_fg_fraction",
    "mask_path",
)
#: One row per input that got a mask, labelled or not.
OUTPUT_COLUMNS = (
    "case_id", "source_uri", "rel_path", "frame", "has_label", "fg_fraction", "mask_path", "seg_path", "mask_sha256", "model",
)  # fmt: skip


def write_table(df: pd.DataFrame, stem: Path) -> tuple[Path, Path]:
    """Write ``df`` atomically as ``<stem>.parquet`` and ``<stem>.csv``."""
    parquet = atomic_write(stem.with_suffix(".parquet"), lambda tmp: df.to_parquet(tmp, index=False))
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    csv = atomic_write_bytes(stem.with_suffix(".csv"), buf.getvalue().encode())
    return parquet, csv


def build_outputs(results: pd.DataFrame) -> pd.DataFrame:
    """The outputs table: which mask was written for which input."""
    return results[list(OUTPUT_COLUMNS)].sort_values(["rel_path", "frame"]).reset_index(drop=True)


def build_report(results: pd.DataFrame, val_groups: set[str] | None) -> pd.DataFrame:
    """Labelled cases only, each marked ``train``/``val`` (``-`` when no split is known)."""
    df = results[results["has_label"].astype(bool)].copy()
    if val_groups is None:
        df["split"] = "-"
    else:
        df["split"] = ["val" if g in val_groups else "train" for g in df["group_id"]]
    return df[list(REPORT_COLUMNS)].sort_values(["rel_path", "frame"]).reset_index(drop=True)


def report_metrics(report: pd.DataFrame) -> dict[str, float]:
    """Aggregate Dice/IoU of a report, overall and on the held-out (``val``) split.

    Keys: ``dice_mean``/``_median``/``_p5`` (all labelled), ``heldout_dice_mean`` … (val only),
    ``heldout_fg_dice_mean`` (val cases whose ground truth is not empty), the same for IoU,
    and counts.
    """
    labelled = report
    heldout = labelled[labelled["split"] == "val"]
    metrics: dict[str, float] = {
        "labelled_cases": float(len(labelled)),
        "heldout_cases": float(len(heldout)),
    }
    for name, part in (("", labelled), ("heldout_", heldout)):
        metrics |= summarize(part["dice"], f"{name}dice") | summarize(part["iou"], f"{name}iou")
    metrics |= summarize(heldout[heldout["label_fg_fraction"] > 0]["dice"], "heldout_fg_dice")
    return metrics

"""The per-case result row of inference (defined once here), the reports built from it (Parquet +
CSV) and their summary metrics."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from segops.data.records import RECORD_SCHEMA
from segops.engine.cases import MATCH_SCORES
from segops.engine.risk import RISK_COLUMNS, RISK_FLAG_COLUMNS, RISK_FLOAT_COLUMNS, RISK_TEXT_COLUMNS
from segops.metrics import summarize
from segops.metrics.risk_quality import risk_quality
from segops.outputs.atomic import atomic_write, atomic_write_bytes

#: Record columns every result row carries over; the problem columns among them make a failed
#: case's row its quarantine row (:data:`segops.data.records.QUARANTINE_COLUMNS`).
RESULT_RECORD_COLUMNS = (
    "case_id",
    "group_id",
    "source_uri",
    "rel_path",
    "frame",
    "modality",
    "has_label",
    "label_uri",
    "status",
    "stage",
    "error_type",
    "error",
    "transfer_syntax",
)
#: Per-image matched-instance scores at IoU >= 0.5 (instance models; NaN for semantic ones).
INSTANCE_COLUMNS = ("n_instances", *MATCH_SCORES)
_NAN = float("nan")
#: What inference adds to a case's row: (name, Arrow type, value until written or scored).
_RESULT_FIELDS = (
    ("mask_path", pa.string(), ""),
    ("seg_path", pa.string(), ""),
    ("instance_path", pa.string(), ""),
    ("coco_path", pa.string(), ""),
    ("probabilities_path", pa.string(), ""),  # with outputs: [probabilities]
    ("mask_sha256", pa.string(), ""),
    ("model", pa.string(), ""),  # the model's digest (OutputConfig.model_digest)
    ("fg_fraction", pa.float64(), _NAN),
    ("label_fg_fraction", pa.float64(), _NAN),
    ("dice", pa.float64(), _NAN),
    ("iou", pa.float64(), _NAN),
    ("dice_per_class", pa.string(), ""),  # JSON {class: Dice}
    ("label_classes", pa.string(), ""),  # JSON [classes the ground truth holds]
    ("pixel_error", pa.float64(), _NAN),
    ("rand_error", pa.float64(), _NAN),  # NaN unless the step sets boundary_class
    *((name, pa.float64(), _NAN) for name in INSTANCE_COLUMNS),
    ("eval_json", pa.string(), ""),  # a labelled instance case's ground truth and detections as COCO RLE, for mask AP
    # per-case risk (segops.engine.risk): score, signals, flags, reasons in words
    *((name, pa.float64(), _NAN) for name in RISK_FLOAT_COLUMNS),
    *((name, pa.bool_(), False) for name in RISK_FLAG_COLUMNS),
    *((name, pa.string(), "") for name in RISK_TEXT_COLUMNS),
    ("embedding_distance", pa.float64(), _NAN),  # from the training cases' encoder embeddings (drift)
    ("measurements", pa.string(), ""),  # JSON per-case totals (segops.metrics.measurements): meas_* columns
    ("components", pa.string(), ""),  # JSON object rows: measurements.parquet
)
#: The per-case result row of inference: one row per input, in the parts and in ``results``.
RESULT_SCHEMA = pa.schema(
    [RECORD_SCHEMA.field(name) for name in RESULT_RECORD_COLUMNS] + [(name, kind) for name, kind, _ in _RESULT_FIELDS]
)
RESULT_COLUMNS = tuple(RESULT_SCHEMA.names)


def result_defaults(model: str) -> dict[str, Any]:
    """The inference columns of a case's result row before anything is written or scored."""
    return {name: value for name, _, value in _RESULT_FIELDS} | {"model": model}


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
    "dice_per_class",
    "label_classes",
    "pixel_error",
    "rand_error",
    "fg_fraction",
    "label_fg_fraction",
    "mask_path",
    "risk",
    "risk_reasons",
)
#: Scores added after the first release: NaN where a resumed run's earlier parts lack them.
OPTIONAL_SCORES = ("pixel_error", "rand_error", "risk")
#: One row per input that got a mask, labelled or not.
OUTPUT_COLUMNS = (
    "case_id",
    "source_uri",
    "rel_path",
    "frame",
    "has_label",
    "fg_fraction",
    "mask_path",
    "seg_path",
    "instance_path",
    "coco_path",
    "probabilities_path",
    "mask_sha256",
    "model",
    *RISK_COLUMNS,
    "embedding_distance",
)
#: Result columns a resumed run's older parts may lack, with the value they stand for.
_LATER_COLUMNS = ("probabilities_path", *RISK_COLUMNS, "embedding_distance", "measurements", "components")


def write_table(df: pd.DataFrame, stem: Path) -> tuple[Path, Path]:
    """Write ``df`` atomically as ``<stem>.parquet`` and ``<stem>.csv``."""
    parquet = atomic_write(stem.with_suffix(".parquet"), lambda tmp: df.to_parquet(tmp, index=False))
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    csv = atomic_write_bytes(stem.with_suffix(".csv"), buf.getvalue().encode())
    return parquet, csv


def build_outputs(results: pd.DataFrame) -> pd.DataFrame:
    """The outputs table: which mask was written for which input, each case's risk, and its
    measurement totals as ``meas_*`` columns (:func:`segops.metrics.measurements.total_columns`;
    a column another case lacks, e.g. ``_true`` of an unlabelled one, is NaN there)."""
    defaults = result_defaults("")
    missing = {name: defaults[name] for name in _LATER_COLUMNS if name not in results.columns}
    if missing:  # result parts of an older segops (resumed runs)
        results = results.assign(**missing)
    table = results[list(OUTPUT_COLUMNS)].reset_index(drop=True)
    totals = pd.DataFrame([json.loads(m) if m else {} for m in results["measurements"]], index=table.index)
    return pd.concat([table, totals], axis=1).sort_values(["rel_path", "frame"]).reset_index(drop=True)


def component_chunks(frames: Iterable[pd.DataFrame], rows: int = 65536) -> Iterator[list[dict[str, Any]]]:
    """:func:`component_rows` of result frames (e.g. one per part file,
    :func:`segops.cluster.infer.iter_parts`), yielded about ``rows`` objects at a time for
    :func:`segops.outputs.measurements.write_measurement_chunks`: an untrained model's specks, 200
    measured per case, are millions of rows in a large run, too many to hold as dicts at once."""
    pending: list[dict[str, Any]] = []
    for frame in frames:
        pending += component_rows(frame)
        if len(pending) >= rows:
            yield pending
            pending = []
    if pending:
        yield pending


def component_rows(results: pd.DataFrame) -> list[dict[str, Any]]:
    """Every measured object of ``results`` (their ``components`` JSON) with its case's identifiers:
    the rows of ``measurements.parquet`` (:mod:`segops.outputs.measurements`)."""
    rows: list[dict[str, Any]] = []
    for case_id, source_uri, components in zip(results["case_id"], results["source_uri"], results["components"]):
        ids = {"case_id": str(case_id), "source_uri": str(source_uri)}
        rows += [ids | row for row in json.loads(components or "[]")]
    return rows


@dataclass(frozen=True)
class SplitGroups:
    """The group ids of a training split (``split.json``), as the reports mark them.

    ``test``: held out from everything until the segment step (the held-out figures); ``val``:
    chose the checkpoint and postprocessing (the validation figures); ``train``: trained on, or
    None when unknown (then every group outside ``val`` and ``test`` counts as trained on).
    """

    val: frozenset[str]
    test: frozenset[str] = frozenset()
    train: frozenset[str] | None = None


#: ``split`` of a report row whose group the split does not know (or when there is no split).
UNKNOWN_SPLIT = "-"


def build_report(results: pd.DataFrame, split: SplitGroups | None, instances: bool = False) -> pd.DataFrame:
    """Labelled cases only, each marked ``train``/``val``/``test`` by its group (see :func:`split_column`).

    ``instances``: add the matched-instance columns (instance models).
    """
    df = results[results["has_label"].astype(bool)].copy()
    df["split"] = split_column(df, split)
    for column in OPTIONAL_SCORES:  # absent from result parts written by an older segops (resumed runs)
        if column not in df.columns:
            df[column] = float("nan")
    if "risk_reasons" not in df.columns:
        df["risk_reasons"] = ""
    for column in ("dice_per_class", "label_classes"):  # result parts written by an older segops
        if column not in df.columns:
            df[column] = ""
    columns = list(REPORT_COLUMNS) + (list(INSTANCE_COLUMNS) if instances else [])
    return df[columns].sort_values(["rel_path", "frame"]).reset_index(drop=True)


def split_column(df: pd.DataFrame, split: SplitGroups | None) -> list[str]:
    """``test``/``val``/``train`` per row by its ``group_id``; ``-`` for a group the split does not
    hold (a source that was not part of the training data), and for every row when no split is known."""
    if split is None:
        return [UNKNOWN_SPLIT] * len(df)

    def part(group: str) -> str:
        if group in split.test:
            return "test"
        if group in split.val:
            return "val"
        return "train" if split.train is None or group in split.train else UNKNOWN_SPLIT

    return [part(g) for g in df["group_id"]]


#: Metric-name prefix of each scored part of a report: all labelled cases, the held-out test cases,
#: the validation cases.
REPORT_PARTS = (("", None), ("heldout_", "test"), ("val_", "val"))


def report_metrics(report: pd.DataFrame) -> dict[str, float]:
    """Aggregate Dice/IoU of a report: over all labelled cases, the held-out (``test``) and the
    validation (``val``) cases.

    Keys: ``dice_mean``/``_median``/``_p5`` (all labelled), ``heldout_dice_mean`` … (test only),
    ``val_dice_mean`` … (val only), ``fg_dice_mean`` / ``heldout_fg_dice_mean`` / ``val_fg_dice_mean``
    (cases whose ground truth is not empty: on mostly empty data the plain mean is dominated by empty
    cases), the same for IoU, pixel error and (where scored) Rand error, the image-level
    ``empty_flagged`` / ``fg_missed`` (:func:`image_level`), and the counts
    ``labelled_cases``, ``heldout_cases`` and ``val_cases``. A part without cases gets its count
    (0) and nothing else: with no test set there are no ``heldout_`` figures, and validation cases
    never stand in for them. Each part with Dice and risk also gets
    :func:`segops.metrics.risk_quality.risk_quality`'s figures (``heldout_risk_auroc`` …): how
    well the risk ranks that part's bad masks.
    """
    metrics: dict[str, float] = {"labelled_cases": float(len(report))}
    for prefix, name in REPORT_PARTS:
        part = report if name is None else report[report["split"] == name]
        if name is not None:
            metrics[f"{prefix}cases"] = float(len(part))
        if part.empty:
            continue
        metrics |= summarize(part["dice"], f"{prefix}dice") | summarize(part["iou"], f"{prefix}iou")
        metrics |= summarize(part["pixel_error"], f"{prefix}pixel_error")
        metrics |= summarize(part["rand_error"], f"{prefix}rand_error")  # NaN unless boundary_class is set
        metrics |= summarize(part[part["label_fg_fraction"] > 0]["dice"], f"{prefix}fg_dice")
        metrics |= image_level(part, prefix)
        metrics |= class_dice(part, prefix)
        if "risk" in part.columns and part["risk"].notna().any():
            metrics |= {f"{prefix}{k}": v for k, v in risk_quality(part["risk"], part["dice"]).items()}
        if "matched_dice" in report.columns:
            metrics |= summarize(part["matched_dice"], f"{prefix}matched_dice") | _detection_counts(part, prefix)
    return metrics


def class_dice(part: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """Each foreground class's mean Dice (``class_<c>_dice_mean``) and case count (``class_<c>_cases``)
    over the cases whose truth or prediction holds it, as nnU-Net's summary counts them: a case with
    neither says nothing about the class. Where there are two or more foreground classes only: their
    plain mean can look fine while one class is never found. Empty for reports without
    ``label_classes`` (written by an older segops)."""
    if "label_classes" not in part.columns:
        return {}
    scores: dict[int, list[float]] = {}
    classes = 0
    for per_class, present in part[["dice_per_class", "label_classes"]].itertuples(index=False):
        if not per_class or not present:
            continue
        truth, dice_of = set(json.loads(present)), json.loads(per_class)
        classes = max(classes, len(dice_of))
        for c, dice in dice_of.items():
            if int(c) in truth or dice < 1.0:  # absent from the truth and Dice 1: absent from both
                scores.setdefault(int(c), []).append(float(dice))
    if classes < 2:
        return {}
    out: dict[str, float] = {}
    for c, values in sorted(scores.items()):
        out[f"{prefix}class_{c}_dice_mean"] = float(np.mean(values))
        out[f"{prefix}class_{c}_cases"] = float(len(values))
    return out


def image_level(part: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """Whole-image calls, the figures an inspection line is judged by, which no Dice mean shows:
    ``empty_flagged``, the share of cases with an empty ground truth (defect-free parts) given any
    foreground, and ``fg_missed``, the share of cases with foreground given none. Each only where
    the part has such cases."""
    empty, fg = part["label_fg_fraction"] == 0, part["label_fg_fraction"] > 0
    out = {}
    if empty.any():
        out[f"{prefix}empty_flagged"] = float((part.loc[empty, "fg_fraction"] > 0).mean())
    if fg.any():
        out[f"{prefix}fg_missed"] = float((part.loc[fg, "fg_fraction"] == 0).mean())
    return out


def _detection_counts(part: pd.DataFrame, prefix: str) -> dict[str, float]:
    """Instance TP/FP/FN summed over cases, and the precision/recall/F1 they give."""
    tp, fp, fn = (float(part[c].sum()) for c in ("tp", "fp", "fn"))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {
        f"{prefix}instances_tp": tp,
        f"{prefix}instances_fp": fp,
        f"{prefix}instances_fn": fn,
        f"{prefix}instance_precision": precision,
        f"{prefix}instance_recall": recall,
        f"{prefix}instance_f1": f1,
    }

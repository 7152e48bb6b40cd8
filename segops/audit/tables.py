"""What an audit is made of: its sections, pictures and sides, number formatting, and per-case tables.

The same :class:`Section` objects become rich tables in the terminal and HTML tables in the page, so
both always say the same thing. Per-case tables are paired by :func:`segops.compare.pair_by_case`,
the pairing the evaluate step's gate uses, and a case counts as changed by the gate's tolerance.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table

from segops.compare import TOLERANCE, pair_by_case
from segops.errors import AuditError
from segops.metrics import HEADLINE_METRICS

if TYPE_CHECKING:  # plain dataclasses; importing segops.tracking at run time would load MLflow
    from segops.tracking import RunDetails

log = logging.getLogger(__name__)

COLOUR_A = "#1f9bff"  # blue and orange: told apart with the common colour-vision deficiencies
COLOUR_B = "#ff7f0e"
#: Run metrics the terminal shows (the HTML page shows every metric): the one list, in segops.metrics.
HEADLINE = HEADLINE_METRICS
#: Columns of each side a comparison keeps; the image columns are merged into one (see :func:`pair_cases`).
_PAIRED_COLUMNS = ("dice", "iou", "mask_path", "source_uri", "rel_path", "frame", "modality")
_IMAGE_COLUMNS = ("source_uri", "rel_path", "frame", "modality")


@dataclass(frozen=True)
class Section:
    """A titled table, for the terminal (rich) and the HTML page alike. Values are already text."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    note: str = ""
    terminal: bool = True  # False: too long for a terminal; the page has it


@dataclass(frozen=True)
class Picture:
    """A PNG in the report folder: ``path`` relative to it."""

    path: str
    caption: str
    group: str = "Plots"


@dataclass(frozen=True)
class Side:
    """One side of a comparison: what was named, the run behind it, and its per-case table.

    ``cases``: one row per case with at least ``case_id`` and ``dice`` (see :func:`load_cases`).
    """

    key: str  # "A" or "B"
    ref: str
    label: str
    run: RunDetails
    cases: pd.DataFrame
    table: str  # runs:/<id>/<artifact>
    why: str
    model: tuple[str, str] | None = None  # (name, version) when a model version was named


@dataclass
class Report:
    """An audit written to ``folder``: its page, the sections the terminal prints, and its numbers."""

    folder: Path
    index: Path
    sections: list[Section]
    summary: dict[str, Any]
    mlflow_metrics: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- plain helpers


def slug(text: str) -> str:
    """File- and run-name-safe form of ``text``: letters, digits, ``.``, ``_``, ``-`` (at most 80)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "x"


def fmt(value: Any) -> str:
    """Numbers for people: 4 decimals, whole numbers ≥ 2 without; NaN/None as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 2 else f"{value:.4f}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def when(ms: int | None) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def to_rich(section: Section) -> Table | str:
    """A section as a rich table (numbers right-aligned); one line when it has no rows."""
    if not section.rows:
        return f"[bold]{escape(section.title)}[/]: {escape(section.note or 'none')}"
    # values are data, not rich markup: a "[bold]" in a run name or a reason is printed as is
    table = Table(title=escape(section.title), caption=escape(section.note) or None, caption_justify="left")
    for index, column in enumerate(section.columns):
        numeric = all(_looks_numeric(row[index]) for row in section.rows)
        short = max(len(row[index]) for row in section.rows) <= 28  # kept whole; long text folds instead
        table.add_column(escape(column), overflow="fold", no_wrap=short, justify="right" if numeric else "left")
    for row in section.rows:
        table.add_row(*(escape(value) for value in row))
    return table


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)|-", text)) and text != ""


# --------------------------------------------------------------------------- per-case tables


def load_cases(path: str | Path, uri: str = "", heldout_only: bool = True) -> tuple[pd.DataFrame, str]:
    """Read a per-case table; a segment report is cut to its held-out rows when it has any.

    Training cases would flatter the model that trained on them, and validation cases the model they
    chose, so with ``heldout_only`` a report with ``split == "test"`` rows keeps only those. A report
    without test rows (no test set, or written before segops split three ways, when ``val`` was the
    held-out part) keeps its ``val`` rows, and the note says so. Duplicate case ids keep their first row.

    Returns:
        (table, a note saying which rows were kept).

    Raises:
        AuditError: unreadable, or no ``case_id`` / ``dice`` column.
    """
    name = uri or str(path)
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise AuditError(f"cannot read per-case table {name}: {exc}") from exc
    missing = sorted({"case_id", "dice"} - set(df.columns))
    if missing:
        raise AuditError(f"per-case table {name} has no {', '.join(missing)} column; it has {', '.join(df.columns)}")
    total = len(df)
    note = f"all {total} rows"
    split = df["split"] if "split" in df.columns else None
    if heldout_only and split is not None and (split == "test").any():
        df = df[split == "test"]
        note = f"held-out rows (split = test): {len(df)} of {total}"
    elif heldout_only and split is not None and (split == "val").any():
        df = df[split == "val"]
        note = f"no test rows: validation rows (split = val, they chose the checkpoint): {len(df)} of {total}"
    if df["case_id"].duplicated().any():
        note += f"; {int(df['case_id'].duplicated().sum())} duplicate case id(s) dropped"
        df = df.drop_duplicates("case_id")
    return df.reset_index(drop=True), note


def pair_cases(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Cases present in both tables, by ``case_id``: ``dice_a``, ``dice_b``, ``delta`` (= b − a), the
    masks of each side (``mask_path_a``/``_b``) and the case's image (``source_uri``, ``rel_path``…),
    sorted by ``delta`` (largest drop first)."""
    paired = pair_by_case(a, b, _PAIRED_COLUMNS).drop(columns="delta_iou", errors="ignore")
    for column in _IMAGE_COLUMNS:
        present = [s for s in (f"{column}_a", f"{column}_b") if s in paired.columns]
        if present:
            paired[column] = paired[present[0]]
            if len(present) == 2:
                paired[column] = paired[column].where(paired[column].notna(), paired[present[1]])
            paired = paired.drop(columns=present)
    paired["delta"] = paired.pop("delta_dice")
    return paired.sort_values(["delta", "case_id"], na_position="last").reset_index(drop=True)


def paired_stats(a: pd.DataFrame, b: pd.DataFrame, paired: pd.DataFrame) -> dict[str, Any]:
    """The comparison's numbers (``summary.json["paired"]``)."""
    delta = paired["delta"].dropna()
    stats = {
        "cases_a": len(a),
        "cases_b": len(b),
        "cases": len(paired),
        "only_in_a": int((~a["case_id"].isin(b["case_id"])).sum()),
        "only_in_b": int((~b["case_id"].isin(a["case_id"])).sum()),
        "dice_mean_a": float(paired["dice_a"].mean()),
        "dice_mean_b": float(paired["dice_b"].mean()),
        "dice_median_a": float(paired["dice_a"].median()),
        "dice_median_b": float(paired["dice_b"].median()),
        "delta_mean": float(delta.mean()),
        "delta_median": float(delta.median()),
        "better_in_b": int((delta > TOLERANCE).sum()),
        "worse_in_b": int((delta < -TOLERANCE).sum()),
        "unchanged": int((delta.abs() <= TOLERANCE).sum()),
    }
    if "iou_a" in paired.columns and "iou_b" in paired.columns:
        stats |= {"iou_mean_a": float(paired["iou_a"].mean()), "iou_mean_b": float(paired["iou_b"].mean())}
    return stats

"""Audit reports: which model segmented which case, trained on what, and why it replaced another.

Pure rendering from plain data; the questions to the tracking store are asked by
:class:`segops.tracking.AuditReader`, which hands over :class:`~segops.tracking.RunDetails` and
downloaded per-case tables. One audit is a folder: ``index.html`` (every table, escaped, and the
plots), ``summary.json`` (the numbers), PNG plots and the tables it was built from. Every file is
written atomically. The same :class:`Section` objects become rich tables in the terminal and HTML
tables in the page, so both always say the same thing.
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

from segops.errors import AuditError, SegopsError
from segops.outputs.atomic import atomic_write, atomic_write_text

if TYPE_CHECKING:  # plain dataclasses; importing segops.tracking at run time would load MLflow
    from matplotlib.figure import Figure as MplFigure

    from segops.tracking import RunDetails, VersionInfo

log = logging.getLogger(__name__)

COLOUR_A = "#1f9bff"  # blue and orange: told apart with the common colour-vision deficiencies
COLOUR_B = "#ff7f0e"
#: Run metrics the terminal shows (the HTML page shows every metric).
HEADLINE = (
    "best_val_dice",
    "best_val_mask_ap",
    "segment_heldout_dice_mean",
    "segment_heldout_fg_dice_mean",
    "segment_heldout_iou_mean",
    "segment_heldout_mask_ap50",
    "segment_dice_mean",
    "segment_outputs",
    "segment_failed",
    "evaluate_cases",
    "evaluate_champion_dice_mean",
    "evaluate_challenger_dice_mean",
    "evaluate_dice_gain",
    "evaluate_dice_gain_ci_low",
    "evaluate_dice_gain_ci_high",
    "promote_passed",
)
#: The few run metrics a model-version listing shows, with short headers.
_VERSION_METRICS = {
    "best_val_dice": "val Dice",
    "best_val_mask_ap": "val mask AP",
    "segment_heldout_dice_mean": "held-out Dice",
    "segment_heldout_mask_ap50": "held-out AP50",
    "evaluate_challenger_dice_mean": "eval Dice",
    "evaluate_dice_gain": "gain vs champion",
}
_NONE = ("", "none", "None", "null", "()", "[]")  # how "not set" was written into params and tags
_IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_UNCHANGED = 1e-6  # |Δ Dice| below this counts as unchanged


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


def _json_safe(value: Any) -> Any:
    """NaN → None, numpy scalars → Python, recursively (``summary.json`` is strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


# --------------------------------------------------------------------------- model versions


def versions_section(versions: list[VersionInfo]) -> Section:
    """Registered model versions: aliases, promotion outcome, lineage and the source run's headline metrics."""
    metric_keys = [k for k in _VERSION_METRICS if any(k in v.metrics for v in versions)]
    headers = [_VERSION_METRICS[k] for k in metric_keys]
    columns = ("model", "version", "aliases", "created", "promotion", "run", "parent", *headers)
    rows = []
    for v in versions:
        promotion = v.tags.get("segops.promotion", "")
        if v.tags.get("segops.replaced_version") not in (None, *_NONE):
            promotion += f", replaced v{v.tags['segops.replaced_version']}"
        if v.tags.get("segops.rejected_reasons"):
            promotion += f": {v.tags['segops.rejected_reasons']}"
        run = f"{v.run_id[:8]} {v.run_name}".strip() or "-"
        rows.append(
            (
                v.name,
                v.version,
                ", ".join(v.aliases) or "-",
                when(v.created_ms)[:16],
                promotion or "-",
                run,
                _parent(None, v),
                *(fmt(v.metrics.get(k)) for k in metric_keys),
            )
        )
    note = "created: UTC; metrics of the run that logged the version: " + ", ".join(
        f"{_VERSION_METRICS[k]} = {k}" for k in metric_keys
    )
    return Section("registered model versions", columns, rows, note=note)


# --------------------------------------------------------------------------- per-case tables


def load_cases(path: str | Path, uri: str = "", heldout_only: bool = True) -> tuple[pd.DataFrame, str]:
    """Read a per-case table; a segment report is cut to its held-out rows when it has any.

    Training cases would flatter the model that trained on them, so with ``heldout_only`` a report
    with ``split == "val"`` rows keeps only those. Duplicate case ids keep their first row.

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
    if heldout_only and "split" in df.columns and (df["split"] == "val").any():
        df = df[df["split"] == "val"]
        note = f"held-out rows (split = val): {len(df)} of {total}"
    if df["case_id"].duplicated().any():
        note += f"; {int(df['case_id'].duplicated().sum())} duplicate case id(s) dropped"
        df = df.drop_duplicates("case_id")
    return df.reset_index(drop=True), note


def pair_cases(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Cases present in both tables, by ``case_id``: ``dice_a``, ``dice_b``, ``delta`` (= b − a), the
    masks of each side (``mask_path_a``/``_b``) and the case's image (``source_uri``, ``rel_path``…),
    sorted by ``delta`` (largest drop first)."""
    keep = ["case_id", "dice", "iou", "mask_path", "source_uri", "rel_path", "frame", "modality"]
    paired = a[[c for c in keep if c in a.columns]].merge(
        b[[c for c in keep if c in b.columns]], on="case_id", suffixes=("_a", "_b")
    )
    for column in ("source_uri", "rel_path", "frame", "modality"):
        sides = [f"{column}_a", f"{column}_b"]
        present = [s for s in sides if s in paired.columns]
        if present:
            paired[column] = paired[present[0]]
            if len(present) == 2:
                paired[column] = paired[column].where(paired[column].notna(), paired[present[1]])
            paired = paired.drop(columns=present)
    paired["delta"] = paired["dice_b"] - paired["dice_a"]
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
        "better_in_b": int((delta > _UNCHANGED).sum()),
        "worse_in_b": int((delta < -_UNCHANGED).sum()),
        "unchanged": int((delta.abs() <= _UNCHANGED).sum()),
    }
    if "iou_a" in paired.columns and "iou_b" in paired.columns:
        stats |= {"iou_mean_a": float(paired["iou_a"].mean()), "iou_mean_b": float(paired["iou_b"].mean())}
    return stats


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float) -> MplFigure:
    # the object API renders with Agg and touches no global pyplot state (safe in any thread, no display)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: MplFigure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_scatter(paired: pd.DataFrame, labels: tuple[str, str], path: Path, highlight: int = 0) -> Path:
    """Per-case Dice, A on x and B on y, with the diagonal; the first ``highlight`` rows (the largest
    drops) ringed and numbered as their overlays are."""
    fig = _new_figure(5.6, 5.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="no change")
    ax.scatter(paired["dice_a"], paired["dice_b"], s=22, alpha=0.75, color="#4c4c9d", label=f"{len(paired)} cases")
    top = paired.head(highlight)
    if len(top):
        ax.scatter(top["dice_a"], top["dice_b"], s=90, facecolors="none", edgecolors="#d62728", label="largest drops")
        for rank, (x, y) in enumerate(zip(top["dice_a"], top["dice_b"]), start=1):
            ax.annotate(str(rank), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color="#d62728")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel=f"Dice A: {labels[0]}", ylabel=f"Dice B: {labels[1]}")
    ax.set_aspect("equal")
    ax.set_title("per-case Dice (above the line: better in B)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_histograms(series: list[tuple[str, pd.Series, str]], path: Path, title: str = "Dice per case") -> Path:
    """Dice histograms on the same 20 bins over [0, 1]; ``series``: (label, values, colour)."""
    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    for label, values, colour in series:
        values = pd.to_numeric(values, errors="coerce").dropna()
        ax.hist(
            values, bins=bins, alpha=0.45, color=colour, label=f"{label} (n={len(values)}, mean {values.mean():.3f})"
        )
        ax.hist(values, bins=bins, histtype="step", color=colour, linewidth=1.2)
    ax.set(xlim=(0, 1), xlabel="Dice", ylabel="cases")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def display_image(source_uri: str, rel_path: str, case_id: str, frame: int = 0, modality: str = "") -> np.ndarray:
    """Re-decode a case's image for display: (H, W) or (H, W, 3) float in [0, 1] (1st–99th percentile).

    Raises:
        FileNotFoundError: the source file is not on this machine.
        AuditError: it no longer decodes, or holds no such case.
    """
    from segops.config.schema import DicomSource, ImageSource
    from segops.data.decode import decode_file
    from segops.data.records import STATUS_OK

    path = Path(source_uri)
    if not path.is_file():
        raise FileNotFoundError(f"image {source_uri} is not on this machine")
    is_image = modality == "XC" or path.suffix.lower() in _IMAGE_SUFFIXES
    source = ImageSource(kind="images", path=path.parent) if is_image else DicomSource(kind="dicom", path=path.parent)
    rows = decode_file(str(path), rel_path or path.name, source)
    ok = [r for r in rows if r["status"] == STATUS_OK]
    row = next((r for r in ok if r["case_id"] == case_id), None) or next((r for r in ok if r["frame"] == frame), None)
    if row is None:
        reason = rows[0]["error"] if rows and rows[0]["status"] != STATUS_OK else f"no case {case_id}"
        raise AuditError(f"cannot show {source_uri}: {reason}")
    image = np.asarray(row["image"], dtype=np.float32)  # (C, H, W)
    lo, hi = np.percentile(image, [1, 99])
    scaled = np.clip((image - lo) / max(float(hi - lo), 1e-6), 0, 1)
    return scaled[0] if scaled.shape[0] == 1 else np.moveaxis(scaled[:3], 0, -1)


def plot_overlay(image: np.ndarray, masks: list[tuple[np.ndarray | None, str, str]], title: str, path: Path) -> Path:
    """An image with mask outlines; ``masks``: (class map (H, W) or None if missing, colour, label)."""
    from matplotlib.lines import Line2D

    height, width = image.shape[:2]
    fig = _new_figure(5.2, 5.2 * height / width + 0.5)
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    handles = []
    for mask, colour, label in masks:
        if mask is not None and (mask > 0).any():
            ax.contour((mask > 0).astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.4)
        suffix = " (mask missing)" if mask is None else (" (empty)" if not (mask > 0).any() else "")
        handles.append(Line2D([], [], color=colour, linewidth=2, label=label + suffix))
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.85)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return _save(fig, path)


def write_overlays(
    paired: pd.DataFrame, labels: tuple[str, str], folder: Path, worst: int
) -> list[tuple[str | None, str]]:
    """Overlay PNGs of the first ``worst`` paired cases (largest drop first) under ``folder/overlays``.

    Returns:
        per case, (path relative to ``folder`` or None when skipped, a note: why skipped, or what is missing).
    """
    from segops.data.labels import read_mask_png

    out_dir = folder / "overlays"
    for stale in out_dir.glob("*.png") if out_dir.is_dir() else []:
        stale.unlink()  # an earlier audit into this folder: its overlays are not this one's
    results: list[tuple[str | None, str]] = []
    for rank, row in enumerate(paired.head(worst).to_dict("records"), start=1):
        try:
            image = display_image(
                str(row.get("source_uri", "")),
                str(row.get("rel_path", "")),
                str(row["case_id"]),
                int(row.get("frame", 0) or 0),
                str(row.get("modality", "")),
            )
        except (FileNotFoundError, AuditError) as exc:
            results.append((None, f"skipped: {exc}"))
            continue
        masks, missing = [], []
        for side, colour, label in (("a", COLOUR_A, labels[0]), ("b", COLOUR_B, labels[1])):
            mask_path = str(row.get(f"mask_path_{side}") or "")
            mask = None
            if mask_path.lower().endswith((".png", ".tif", ".tiff")) and Path(mask_path).is_file():
                try:
                    mask = read_mask_png(mask_path, image.shape[:2])
                except SegopsError as exc:
                    missing.append(f"{side.upper()} mask unreadable ({exc})")
            else:
                missing.append(f"{side.upper()} mask not on this machine ({mask_path or 'no path'})")
            masks.append((mask, colour, f"{side.upper()}: {label}"))
        if all(m is None for m, _, _ in masks):
            results.append((None, "skipped: " + "; ".join(missing)))
            continue
        title = f"#{rank} {row.get('rel_path', '')}  Dice A {row['dice_a']:.3f} → B {row['dice_b']:.3f}"
        stem = slug(str(row.get("rel_path") or row["case_id"]))[:48]
        name = f"overlays/{rank:02d}_{stem}_{slug(str(row['case_id']))[-8:]}.png"
        plot_overlay(image, masks, title, folder / name)
        results.append((name, "; ".join(missing)))
    return results


# --------------------------------------------------------------------------- compare


def write_compare_report(folder: Path, a: Side, b: Side, worst: int = 6, tracking_uri: str = "") -> Report:
    """Write the comparison of ``a`` and ``b`` into ``folder``: ``index.html``, ``summary.json``,
    ``scatter.png``, ``histogram.png``, ``overlays/`` (the ``worst`` largest Dice drops B − A) and
    ``paired_cases.csv``.

    Raises:
        AuditError: the two tables share no case id (they were scored on different cases).
    """
    paired = pair_cases(a.cases, b.cases)
    if paired.empty:
        raise AuditError(
            f"no case is in both tables: {a.table} ({len(a.cases)} cases) and {b.table} ({len(b.cases)} cases) "
            "were scored on different cases, so there is nothing to pair; compare runs that segmented the same archive"
        )
    folder.mkdir(parents=True, exist_ok=True)
    labels = (a.label, b.label)
    stats = paired_stats(a.cases, b.cases, paired)
    plot_scatter(paired, labels, folder / "scatter.png", highlight=worst)
    plot_histograms(
        [(f"A: {a.label}", paired["dice_a"], COLOUR_A), (f"B: {b.label}", paired["dice_b"], COLOUR_B)],
        folder / "histogram.png",
        "Dice per paired case (same bins)",
    )
    overlays = write_overlays(paired, labels, folder, worst)
    atomic_write_text(folder / "paired_cases.csv", paired.to_csv(index=False))
    pictures = [Picture("scatter.png", "per-case Dice, A vs B"), Picture("histogram.png", "Dice histograms, A and B")]
    for rank, ((path, _), r) in enumerate(zip(overlays, paired.to_dict("records")), start=1):
        caption = f"#{rank} {r.get('rel_path', '')} ({r['case_id']}): Dice {r['dice_a']:.3f} → {r['dice_b']:.3f}"
        pictures += [Picture(path, caption, "Largest Dice drops (B − A)")] if path else []
    sections = [
        compared_section(a, b),
        paired_section(stats),
        metrics_section(
            a.run.metrics, b.run.metrics, [k for k in HEADLINE if k in a.run.metrics or k in b.run.metrics]
        ),
        metrics_section(a.run.metrics, b.run.metrics, None),
        worst_section(paired, overlays),
        *decision_sections([(a.key, a.run), (b.key, b.run)]),
    ]
    summary = {
        "kind": "compare",
        "created": when(int(datetime.now(UTC).timestamp() * 1000)),
        "tracking_uri": tracking_uri,
        "a": _side_summary(a),
        "b": _side_summary(b),
        "paired": stats,
        "worst": [
            {
                "case_id": r["case_id"],
                "rel_path": r.get("rel_path"),
                "dice_a": r["dice_a"],
                "dice_b": r["dice_b"],
                "delta": r["delta"],
                "overlay": p,
                "note": n,
            }
            for r, (p, n) in zip(paired.head(worst).to_dict("records"), overlays)
        ],
        "metrics": {
            k: {"a": a.run.metrics.get(k), "b": b.run.metrics.get(k)}
            for k in sorted(set(a.run.metrics) | set(b.run.metrics))
        },
        "decisions": {
            s.key: s.run.documents["promote/decision.json"]
            for s in (a, b)
            if "promote/decision.json" in s.run.documents
        },
    }
    title = f"Audit: {a.label} vs {b.label}"
    index = write_page(folder, title, f"A = {a.ref}, B = {b.ref}", sections, pictures, summary)
    metrics = {
        "paired_cases": float(stats["cases"]),
        "dice_mean_a": stats["dice_mean_a"],
        "dice_mean_b": stats["dice_mean_b"],
        "dice_delta_mean": stats["delta_mean"],
    }
    return Report(folder, index, sections, summary, metrics)


def _side_summary(side: Side) -> dict[str, Any]:
    return {
        "ref": side.ref,
        "label": side.label,
        "run_id": side.run.run_id,
        "table": side.table,
        "rows": side.why,
        "model": {"name": side.model[0], "version": side.model[1]} if side.model else None,
        "cases": len(side.cases),
        "dice_mean": float(side.cases["dice"].mean()),
    }


def _version_of(side: Side) -> VersionInfo | None:
    if side.model is None:
        return None
    return next((v for v in side.run.models if (v.name, v.version) == side.model), None)


def compared_section(a: Side, b: Side) -> Section:
    """Who is A and who is B: model, run, data trained on, lineage and which per-case table is used."""
    rows = []
    fields = (
        ("named", lambda s: s.ref),
        ("model", lambda s: s.label),
        ("run registered", lambda s: ", ".join(_version_label(v) for v in s.run.models) or "-"),
        ("MLflow run", lambda s: f"{s.run.run_id} ({s.run.run_name})" if s.run.run_name else s.run.run_id),
        ("workflow", lambda s: s.run.tags.get("segops.workflow", "-")),
        ("started", lambda s: when(s.run.start_ms)),
        ("git commit", lambda s: s.run.tags.get("segops.git_commit", "-")),
        ("trained on", lambda s: _datasets_text(s.run, "training")),
        ("validated on", lambda s: _datasets_text(s.run, "validation")),
        ("evaluated on", lambda s: _datasets_text(s.run, "evaluation")),
        (
            "train / val cases",
            lambda s: f"{s.run.params.get('train.cases', '-')} / {s.run.params.get('val.cases', '-')}",
        ),
        ("warm start from", lambda s: _parent(s.run, _version_of(s))),
        ("promotion", lambda s: _promotion(_version_of(s))),
        ("per-case table", lambda s: s.table),
        ("cases used", lambda s: s.why),
    )
    for name, get in fields:
        rows.append((name, get(a), get(b)))
    return Section("compared", ("", "A", "B"), rows)


def _version_label(v: VersionInfo) -> str:
    return f"{v.name} v{v.version}" + "".join(f" @{a}" for a in v.aliases)


def _datasets_text(run: RunDetails, context: str) -> str:
    found = [d for d in run.datasets if d.get("context") == context]
    return (
        "; ".join(f"{d.get('name')} @{str(d.get('digest', ''))[:12]} ({source_text(d.get('source'))})" for d in found)
        or "-"
    )


def source_text(source: Any) -> str:
    """A dataset source as MLflow stores it (JSON such as ``{"uri": "/data/ct"}``) as its URI or path."""
    try:
        parsed = json.loads(source) if isinstance(source, str) else source
    except ValueError:
        return str(source)
    if isinstance(parsed, dict):
        return str(next((parsed[k] for k in ("uri", "path", "url") if parsed.get(k)), json.dumps(parsed)))
    return str(source if source is not None else "")


def _parent(run: RunDetails | None, version: VersionInfo | None) -> str:
    """The warm-start parent: the version's ``segops.parent_model`` tag, else the run's params."""
    candidates = [version.tags.get("segops.parent_model") if version else None]
    candidates += [run.params.get(k) for k in ("train.parent_model", "init_from")] if run else []
    return next((c for c in candidates if c not in (None, *_NONE)), "-")


def _promotion(version: VersionInfo | None) -> str:
    if version is None:
        return "-"
    tags = version.tags
    text = tags.get("segops.promotion", "-")
    if tags.get("segops.replaced_version") not in (None, *_NONE):
        text += f", replaced v{tags['segops.replaced_version']}"
    if tags.get("segops.rejected_reasons"):
        text += f" ({tags['segops.rejected_reasons']})"
    if tags.get("segops.promotion_run"):
        text += f", decided in run {tags['segops.promotion_run'][:8]}"
    aliases = f"aliases {', '.join(version.aliases)}" if version.aliases else ""
    return "; ".join(t for t in (text if text != "-" else "", aliases) if t) or "-"


def paired_section(stats: dict[str, Any]) -> Section:
    rows = [
        ("cases in table", fmt(stats["cases_a"]), fmt(stats["cases_b"]), ""),
        ("cases paired by case id", fmt(stats["cases"]), fmt(stats["cases"]), ""),
        ("mean Dice (paired)", fmt(stats["dice_mean_a"]), fmt(stats["dice_mean_b"]), fmt(stats["delta_mean"])),
        ("median Dice (paired)", fmt(stats["dice_median_a"]), fmt(stats["dice_median_b"]), ""),
    ]
    if "iou_mean_a" in stats:
        diff = stats["iou_mean_b"] - stats["iou_mean_a"]
        rows.append(("mean IoU (paired)", fmt(stats["iou_mean_a"]), fmt(stats["iou_mean_b"]), fmt(diff)))
    note = (
        f"B better on {stats['better_in_b']}, worse on {stats['worse_in_b']}, unchanged on {stats['unchanged']} "
        f"case(s); only in A: {stats['only_in_a']}, only in B: {stats['only_in_b']}"
    )
    return Section("per-case Dice", ("", "A", "B", "B − A"), rows, note)


def metrics_section(a: dict[str, float], b: dict[str, float], keys: list[str] | None) -> Section:
    """Run metrics side by side; ``keys=None``: every metric (page only), else these (terminal too)."""
    names = sorted(set(a) | set(b)) if keys is None else keys
    rows = []
    for k in names:
        diff = b[k] - a[k] if k in a and k in b else None
        rows.append((k, fmt(a.get(k)), fmt(b.get(k)), fmt(diff)))
    title = "run metrics (all, latest value)" if keys is None else "run metrics"
    return Section(title, ("metric", "A", "B", "B − A"), rows, terminal=keys is not None)


def worst_section(paired: pd.DataFrame, overlays: list[tuple[str | None, str]]) -> Section:
    rows = []
    for rank, (row, (path, note)) in enumerate(zip(paired.head(len(overlays)).to_dict("records"), overlays), start=1):
        rows.append(
            (
                str(rank),
                str(row["case_id"]),
                str(row.get("rel_path", "")),
                str(row.get("modality", "") or ""),
                fmt(row["dice_a"]),
                fmt(row["dice_b"]),
                fmt(row["delta"]),
                path or "-",
                note,
            )
        )
    columns = ("#", "case id", "path", "modality", "Dice A", "Dice B", "B − A", "overlay", "note")
    return Section("largest Dice drops (B − A)", columns, rows, note="overlays: A outline blue, B outline orange")


def decision_sections(runs: list[tuple[str, RunDetails]]) -> list[Section]:
    """Per distinct run: its evaluation (``evaluate/comparison.json`` scalars) and its promotion decision
    (``promote/decision.json``: outcome, reasons, the models, each gate check), read defensively."""
    sections, seen = [], set()
    for key, run in runs:
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        where = f"run {run.run_id[:8]} ({key})"
        comparison = run.documents.get("evaluate/comparison.json")
        if isinstance(comparison, dict):
            rows = [(k, fmt(v)) for k, v in comparison.items() if isinstance(v, (int, float, str)) or v is None]
            sections.append(Section(f"evaluation recorded by {where}", ("", "value"), rows, "evaluate/comparison.json"))
        decision = run.documents.get("promote/decision.json")
        if isinstance(decision, dict):
            sections += _decision(decision, where)
    return sections


def _decision(decision: dict[str, Any], where: str) -> list[Section]:
    reasons = decision.get("reasons")
    rows = [
        ("passed", fmt(decision.get("passed"))),
        ("reasons", ("; ".join(map(str, reasons)) or "-") if isinstance(reasons, list) else fmt(reasons)),
        *((role, _model_text(decision.get(role))) for role in ("challenger", "champion")),
    ]
    rows += [
        (k, fmt(v)) for k, v in decision.items() if k not in ("passed", "reasons", "checks", "challenger", "champion")
    ]
    sections = [Section(f"promotion decision recorded by {where}", ("", "value"), rows, "promote/decision.json")]
    checks = decision.get("checks")
    if isinstance(checks, dict):  # {name: {...}} rather than [{"name": ...}]
        checks = [(v if isinstance(v, dict) else {"value": v}) | {"name": k} for k, v in checks.items()]
    if isinstance(checks, list) and checks:
        columns = ("check", "rule", "value", "threshold", "passed")
        checks = [c if isinstance(c, dict) else {"name": c} for c in checks]
        rows = [tuple(fmt(c.get(k)) for k in ("name", "rule", "value", "threshold", "passed")) for c in checks]
        sections.append(Section(f"gate checks ({where})", columns, rows))
    return sections


def _model_text(model: Any) -> str:
    if isinstance(model, dict) and "name" in model:
        extra = {k: v for k, v in model.items() if k not in ("name", "version")}
        return f"{model['name']} v{model.get('version', '?')}" + (f" {fmt(extra)}" if extra else "")
    return fmt(model)


# --------------------------------------------------------------------------- one run


def write_run_report(
    folder: Path, run: RunDetails, cases: pd.DataFrame | None = None, cases_note: str = "", tracking_uri: str = ""
) -> Report:
    """Write what one run recorded: its data, its models, its outputs (and its decision, if any) into
    ``folder`` (``index.html``, ``summary.json``, ``histogram.png`` when it has a per-case table)."""
    folder.mkdir(parents=True, exist_ok=True)
    headline = [(k, fmt(run.metrics[k])) for k in HEADLINE if k in run.metrics]
    sections = [
        run_section(run),
        datasets_section(run),
        data_section(run),
        models_section(run),
        outputs_section(run),
        steps_section(run),
        Section("headline metrics", ("metric", "value"), headline),
        Section(
            "metrics (all, latest value)",
            ("metric", "value"),
            [(k, fmt(v)) for k, v in sorted(run.metrics.items())],
            terminal=False,
        ),
        Section("params", ("param", "value"), sorted(run.params.items()), terminal=False),
        *decision_sections([("this run", run)]),
    ]
    pictures, case_stats = [], {}
    if cases is not None and len(cases):
        split = cases["split"] if "split" in cases.columns else pd.Series(["-"] * len(cases), index=cases.index)
        dice = cases["dice"].groupby(split)
        case_stats = {
            str(k): {"cases": len(d), "dice_mean": float(d.mean()), "dice_median": float(d.median())} for k, d in dice
        }
        rows = [(k, fmt(v["cases"]), fmt(v["dice_mean"]), fmt(v["dice_median"])) for k, v in case_stats.items()]
        sections.append(Section("per-case Dice by split", ("split", "cases", "mean", "median"), rows, note=cases_note))
        series = [
            (f"split {k}", cases.loc[split == k, "dice"], c)
            for k, c in zip(case_stats, (COLOUR_A, COLOUR_B, "#2ca02c"))
        ]
        plot_histograms(series, folder / "histogram.png", "Dice per case, by split")
        pictures.append(Picture("histogram.png", "Dice per case, by split"))
    summary = {
        "kind": "run",
        "created": when(int(datetime.now(UTC).timestamp() * 1000)),
        "tracking_uri": tracking_uri,
        "run_id": run.run_id,
        "run_name": run.run_name,
        "experiment": run.experiment,
        "status": run.status,
        "tags": run.tags,
        "params": run.params,
        "metrics": run.metrics,
        "datasets": [{k: v for k, v in d.items() if k != "profile"} for d in run.datasets],
        "models": [
            {"name": v.name, "version": v.version, "aliases": list(v.aliases), "tags": v.tags} for v in run.models
        ],
        "artifacts": [{"path": p, "bytes": n} for p, n in run.artifacts],
        "cases": case_stats,
        "decision": run.documents.get("promote/decision.json"),
    }
    title = f"Audit: run {run.run_id[:8]}" + (f" ({run.run_name})" if run.run_name else "")
    index = write_page(
        folder, title, f"MLflow run {run.run_id} in experiment {run.experiment!r}", sections, pictures, summary
    )
    return Report(folder, index, sections, summary, {"artifacts": float(len(run.artifacts))})


def run_section(run: RunDetails) -> Section:
    packages = ", ".join(f"{k[4:]} {v}" for k, v in sorted(run.tags.items()) if k.startswith("pkg."))
    rows = [
        ("MLflow run", run.run_id),
        ("run name", run.run_name or "-"),
        ("experiment", run.experiment),
        ("status", run.status),
        ("started", when(run.start_ms)),
        ("ended", when(run.end_ms)),
        ("segops run id", run.tags.get("segops.run_id", "-")),
        ("workflow", run.tags.get("segops.workflow", "-")),
        ("spec hash", run.tags.get("segops.spec_hash", "-")),
        ("git commit", run.tags.get("segops.git_commit", "-")),
        ("packages", packages or "-"),
    ]
    return Section("run", ("", "value"), rows)


def datasets_section(run: RunDetails) -> Section:
    rows = [
        (d.get("context") or "-", d.get("name", ""), d.get("digest", ""), source_text(d.get("source")))
        for d in run.datasets
    ]
    note = "" if rows else "this run logged no dataset inputs"
    return Section("dataset inputs (mlflow.data)", ("context", "name", "digest", "source"), rows, note)


def data_section(run: RunDetails) -> Section:
    """Case counts, the train/val split and the folders the workflow read."""
    rows = [(k, run.params[k]) for k in ("train.cases", "val.cases") if k in run.params]
    split = run.documents.get("train/split.json")
    if isinstance(split, dict):
        rows += [
            (f"{k} groups (train/split.json)", fmt(len(v)) if isinstance(v, list) else fmt(v)) for k, v in split.items()
        ]
    for key in ("train.datasets", "extra_datasets", "train.parent_model", "init_from"):
        if run.params.get(key) not in (None, *_NONE):
            rows.append((key, run.params[key]))
    for index, step in enumerate(_workflow_steps(run)):
        source = step.get("source")
        if isinstance(source, dict):
            labels = source.get("labels") if isinstance(source.get("labels"), dict) else {}
            text = f"{source.get('kind', '?')}: {source.get('path', '?')}" + (
                f" (labels {labels.get('kind', '?')}: {labels.get('path', '?')})" if labels else ""
            )
            rows.append((f"steps[{index}] {step.get('step', '?')} source", text))
    return Section("data", ("", "value"), rows, note="" if rows else "nothing recorded")


def models_section(run: RunDetails) -> Section:
    """Models this run registered, and the models its steps used (from the workflow file and decision)."""
    rows = []
    for v in run.models:
        detail = _promotion(v) if "segops.promotion" in v.tags else ", ".join(f"@{a}" for a in v.aliases)
        rows.append(("registered by this run", f"models:/{v.name}/{v.version}", detail or "-"))
        if _parent(None, v) != "-":
            rows.append(("  warm-started from", _parent(None, v), f"parent of v{v.version}"))
    own = "this run's trained model" + "".join(f" (models:/{v.name}/{v.version})" for v in run.models[-1:])
    digests = {}
    for step in _manifest_steps(run):
        if isinstance(step.get("outputs"), dict) and step["outputs"].get("model_digest"):
            digests[step.get("index")] = step["outputs"]["model_digest"]
    for index, step in enumerate(_workflow_steps(run)):
        for key in ("model", "champion", "challenger", "init_from"):
            if key == "model" and step.get("step") != "segment":
                continue
            if key in step or (key == "model" and step.get("step") == "segment"):
                value = step.get(key) or (own if key in ("model", "challenger") else "-")
                digest = f"weights sha256 {digests[index]}" if index in digests else ""
                rows.append((f"steps[{index}] {step.get('step')}.{key}", str(value), digest or "-"))
    decision = run.documents.get("promote/decision.json")
    if isinstance(decision, dict):
        rows += [(f"promote: {role}", _model_text(decision.get(role)), "") for role in ("challenger", "champion")]
    return Section("models", ("role", "model", "detail"), rows, note="" if rows else "no model recorded")


def outputs_section(run: RunDetails) -> Section:
    """Artifacts by folder: file count and size."""
    folders: dict[str, list[int]] = {}
    for path, size in run.artifacts:
        folder = path.rsplit("/", 1)[0] if "/" in path else "."
        entry = folders.setdefault(folder, [0, 0])
        entry[0] += 1
        entry[1] += size
    rows = [(f, fmt(n), _size(b)) for f, (n, b) in sorted(folders.items())]
    files = [p for p, _ in run.artifacts if p.count("/") <= 1 and not p.startswith("workflow/")]
    note = "files: " + ", ".join(files[:20]) + (" …" if len(files) > 20 else "") if files else "no artifacts"
    return Section("outputs (MLflow artifacts)", ("folder", "files", "size"), rows, note)


def steps_section(run: RunDetails) -> Section:
    rows = []
    for step in _manifest_steps(run):
        outputs = step.get("outputs") if isinstance(step.get("outputs"), dict) else {}
        shown = {k: v for k, v in outputs.items() if not isinstance(v, (int, float)) or k.startswith("best_")}
        rows.append(
            (
                str(step.get("index", "")),
                str(step.get("step", "")),
                str(step.get("state", "")),
                str(step.get("finished") or "-"),
                fmt(shown) if shown else "-",
            )
        )
    note = "" if rows else "no workflow/manifest.json (it is logged when a run finishes)"
    return Section("steps (workflow/manifest.json)", ("#", "step", "state", "finished", "outputs"), rows, note)


def _workflow_steps(run: RunDetails) -> list[dict[str, Any]]:
    doc = run.documents.get("workflow/workflow.yaml")
    steps = doc.get("steps") if isinstance(doc, dict) else None
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _manifest_steps(run: RunDetails) -> list[dict[str, Any]]:
    doc = run.documents.get("workflow/manifest.json")
    steps = doc.get("steps") if isinstance(doc, dict) else None
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# --------------------------------------------------------------------------- the page

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1240px; padding: 0 1em; color: #222 }
table { border-collapse: collapse; margin: .4em 0 1.6em } th, td { border: 1px solid #ccc; padding: 3px 8px;
text-align: left; vertical-align: top; font-size: 13px } th { background: #f2f2f2 }
.note { color: #555; font-size: 13px }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top } figcaption { font-size: 12px; color: #555 }
img { max-width: 560px; border: 1px solid #ddd } code { font-size: 12px }
</style></head>
<body>
<h1>{{ title }}</h1>
<p class="note">{{ subtitle }}<br>written {{ created }}{% if tracking_uri %}
from <code>{{ tracking_uri }}</code>{% endif %};
the numbers are in <a href="summary.json">summary.json</a>.</p>
{% for s in sections %}
{% if loop.index0 == lead %}{{ pictures(plots) }}{% endif %}
<h2>{{ s.title }}</h2>
{% if s.note %}<p class="note">{{ s.note }}</p>{% endif %}
{% if s.rows %}<table><thead><tr>{% for c in s.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for row in s.rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>{% endif %}
{% endfor %}
{% if lead >= sections|length %}{{ pictures(plots) }}{% endif %}
{{ pictures(others) }}
</body></html>
"""
_PICTURES = """{% macro pictures(groups) %}{% for group, pics in groups %}
<h2>{{ group }}</h2>
{% for p in pics %}<figure><a href="{{ p.path }}"><img src="{{ p.path }}" alt="{{ p.caption }}"></a>
<figcaption>{{ p.caption }}</figcaption></figure>{% endfor %}
{% endfor %}{% endmacro %}
"""


def render_html(
    title: str, subtitle: str, sections: list[Section], pictures: list[Picture], summary: dict[str, Any], lead: int = 2
) -> str:
    """The report page; every value is HTML-escaped (jinja2 autoescape). The "Plots" group follows the
    first ``lead`` sections; other picture groups (overlays) come last."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    groups: dict[str, list[Picture]] = {}
    for picture in pictures:
        groups.setdefault(picture.group, []).append(picture)
    plots = [(g, p) for g, p in groups.items() if g == "Plots"]
    others = [(g, p) for g, p in groups.items() if g != "Plots"]
    return env.from_string(_PICTURES + _PAGE).render(
        title=title,
        subtitle=subtitle,
        sections=sections,
        plots=plots,
        others=others,
        lead=lead,
        created=summary.get("created", ""),
        tracking_uri=summary.get("tracking_uri", ""),
    )


def write_page(
    folder: Path, title: str, subtitle: str, sections: list[Section], pictures: list[Picture], summary: dict[str, Any]
) -> Path:
    """Write ``summary.json`` and ``index.html`` (atomically, the page last); returns the page's path."""
    summary = _json_safe(summary | {"files": sorted(["index.html", "summary.json", *(p.path for p in pictures)])})
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return atomic_write_text(folder / "index.html", render_html(title, subtitle, sections, pictures, summary))

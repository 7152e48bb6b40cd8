"""The two audit reports: a comparison of two runs or model versions, and what one run recorded.

Pure rendering from plain data; the questions to the tracking store are asked by
:class:`segops.tracking.AuditReader`, which hands over :class:`~segops.tracking.RunDetails` and
downloaded per-case tables. One audit is a folder: ``index.html`` (every table, escaped, and the
plots), ``summary.json`` (the numbers), PNG plots and the tables it was built from. Every file is
written atomically.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from segops.audit.html import write_page
from segops.audit.images import write_overlays
from segops.audit.plots import plot_histograms, plot_scatter
from segops.audit.sections import (
    compared_section,
    data_section,
    datasets_section,
    decision_sections,
    metrics_section,
    models_section,
    outputs_section,
    paired_section,
    run_section,
    steps_section,
    worst_section,
)
from segops.audit.tables import (
    COLOUR_A,
    COLOUR_B,
    HEADLINE,
    Picture,
    Report,
    Section,
    Side,
    fmt,
    pair_cases,
    paired_stats,
    when,
)
from segops.errors import AuditError
from segops.outputs.atomic import atomic_write_text

if TYPE_CHECKING:  # plain dataclasses; importing segops.tracking at run time would load MLflow
    from segops.tracking import RunDetails


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


#: The order a run report lists a segment report's splits in: held-out first, then validation.
_SPLIT_ORDER = ("test", "val", "train")
_SPLIT_NOTE = "test: held out from training and checkpoint choice; val: chose the checkpoint; train: trained on"


def _split_stats(dice: pd.Series, split: pd.Series) -> dict[str, dict[str, float]]:
    """Per split value: cases, mean and median Dice; ``test``, ``val``, ``train``, then any other."""
    found = set(split.astype(str))
    order = [k for k in _SPLIT_ORDER if k in found] + sorted(found - set(_SPLIT_ORDER))
    parts = {k: dice[split.astype(str) == k] for k in order}
    return {
        k: {"cases": len(d), "dice_mean": float(d.mean()), "dice_median": float(d.median())} for k, d in parts.items()
    }


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
        case_stats = _split_stats(cases["dice"], split)
        rows = [(k, fmt(v["cases"]), fmt(v["dice_mean"]), fmt(v["dice_median"])) for k, v in case_stats.items()]
        note = f"{cases_note}; {_SPLIT_NOTE}" if cases_note else _SPLIT_NOTE
        sections.append(Section("per-case Dice by split", ("split", "cases", "mean", "median"), rows, note=note))
        series = [
            (f"split {k}", cases.loc[split == k, "dice"], c)
            for k, c in zip(case_stats, (COLOUR_A, COLOUR_B, "#2ca02c", "#7f7f7f"))
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

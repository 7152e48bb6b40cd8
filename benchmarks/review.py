"""Does the review queue's ``risk`` find the bad masks? AUROC of risk for Dice < 0.5 on whole runs.

    .venv/bin/python benchmarks/review.py                 # every row (run from the repository root)
    .venv/bin/python benchmarks/review.py --rows quickstart quickstart-short
    .venv/bin/python benchmarks/review.py --quick         # tiny data, 1-2 epochs: a smoke run

Each row is a segops workflow run end to end as a user runs it (ingest → Ray Train → segment, by
``segops.workflows.run_workflow``, as ``quality.py`` does); every figure is read from the run's own
``report.parquet`` (Dice, split, ``risk``) and ``outputs.parquet`` (the risk's signals), never from
logs, and scored by segops' :mod:`segops.metrics.risk_quality`. Rows:

- ``quickstart``: ``workflows/quickstart.yaml`` unchanged (24 epochs) on ``segops synth ct --seed 0``
  (6 series x 20 slices; 1 series held out as test, 1 validation), plus a second segment step over
  a fresh labelled archive from the same generator (``--seed 1``, 6 x 20 slices: new scans the model
  never saw, the review queue's real use);
- ``quickstart-short``: the same with ``--short-epochs`` (default 4 of 24): an under-trained model,
  so that some masks are bad. The risk ranking matters most when masks are bad; the recipe's
  model may leave no held-out case below Dice 0.5 (then the target is "below the median Dice");
- ``isbi``: ``workflows/isbi2012.yaml`` (its unlabelled challenge segment step dropped, as in
  ``quality.py``) on ``../shared/datasets/isbi2012-membrane``;
- ``isbi-half``: the same recipe with ``split.test_fraction: 0.5`` (15 held-out slices, 12 train,
  3 validation): the recipe holds out 5 slices, over which an AUROC means next to nothing.

Parts of each run: ``test`` (held out by the split), ``val`` (validation slices; with ``select:
last`` they chose nothing and are as unseen as the test ones, with ``select: best`` they chose the
checkpoint), ``test+val``, and for the quickstart rows ``new`` (the fresh archive) and ``new, lesion``
(its slices whose truth has a lesion). Target: Dice < 0.5 where a case of the part is below it, else
below the part's median Dice (``segops.metrics.risk_quality.error_threshold``). Beside ``risk``, the
AUROC of each single signal of ``outputs.parquet`` against the same target (a missing value counts
0, as in the risk's rule). JSON: ``benchmarks/out/review.json`` (``--quick``: ``review-quick.json``).

``--quick`` (rows ``quickstart`` and ``isbi``, runs under ``benchmarks/out/review-quick/``): the
quickstart on 4 series x 6 slices (fresh archive 2 x 6) for 2 epochs, ISBI on a copy of its first
8 slices (1 test, 1 validation) for 1 epoch of 1 patch per slice. It checks that every step and
table is there, not the figures. A finished run of the same workflow is resumed (``--new-run``:
retrained), so a row can be rerun alone with ``--rows``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isbi_heldout import WORKFLOW as ISBI_WORKFLOW  # noqa: E402
from _isbi_heldout import derive, load_recipe, run_segops, step_of  # noqa: E402
from _quickstart import QUICKSTART  # noqa: E402

from segops.metrics.risk_quality import error_threshold, risk_auroc, risk_quality  # noqa: E402

log = logging.getLogger("review")

ROWS = ("quickstart", "quickstart-short", "isbi", "isbi-half")
QUICK_ROWS = ("quickstart", "isbi")
GOAL = 0.8
#: Single signals of ``outputs.parquet``, as (label, column, transform to "higher = riskier").
SIGNALS = (
    ("entropy_fg", "entropy_fg", lambda x: x),
    ("entropy_boundary", "entropy_boundary", lambda x: x),
    ("doubt", "doubt", lambda x: x),
    ("1-member_dice", "member_dice", lambda x: 1.0 - x),
    ("|area_z|", "area_z", np.abs),
    ("small_fragments", "small_fragments", lambda x: x),
    ("intensity_outside", "intensity_outside", lambda x: x),
    ("embedding_distance", "embedding_distance", lambda x: x),
    ("1-expected_dice", "expected_dice", lambda x: 1.0 - x),  # --probabilities only (not a segops signal)
)
#: segops' own risk metrics for a part (the segment step's ``segment_<prefix>risk_*``), to check ours against.
SEGOPS_PREFIX = {"test": "heldout_", "val": "val_", "new": ""}


# --------------------------------------------------------------------------- workflows


def _archive(root: Path, series: int, slices: int, seed: int) -> Path:
    """``segops synth ct ROOT --series S --slices N --seed K`` (same function), once."""
    from segops.synth import make_ct_archive

    if not (root / "images").is_dir():
        make_ct_archive(root, series=series, slices=slices, seed=seed)
    return root.resolve()


def quickstart_doc(out: Path, name: str, epochs: int | None, quick: bool) -> dict[str, Any]:
    """``workflows/quickstart.yaml`` on its archive (seed 0), plus a segment step over a fresh one (seed 1).

    ``epochs``: None keeps the recipe's. ``quick``: 4 series x 6 slices, fresh 2 x 6.
    """
    series, slices, fresh_series = (4, 6, 2) if quick else (6, 20, 6)
    archive = _archive(out / "data" / f"ct-{series}x{slices}-seed0", series, slices, 0)
    fresh = _archive(out / "data" / f"ct-{fresh_series}x{slices}-seed1", fresh_series, slices, 1)
    doc = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    ingest = step_of(doc, "ingest")
    ingest["source"]["path"] = str(archive / "images")
    ingest["source"]["labels"]["path"] = str(archive / "labels")
    segment = step_of(doc, "segment")
    new = copy.deepcopy(segment) | {"overlays": 0}
    new["source"] = copy.deepcopy(ingest["source"])
    new["source"]["path"], new["source"]["labels"]["path"] = str(fresh / "images"), str(fresh / "labels")
    doc["steps"].append(new)
    changes = {} if epochs is None else {"epochs": epochs}
    return derive(doc, name, out / name, **changes)


def _isbi_subset(out: Path, recipe: dict[str, Any], n: int) -> None:
    """Point the recipe's ingest at a copy of its first ``n`` slices (``--quick`` only)."""
    source = step_of(recipe, "ingest")["source"]
    images, labels = Path(source["path"]), Path(source["labels"]["path"])
    root = out / "data" / f"isbi-{n}"
    for folder, name in ((images, "image"), (labels, "label")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.glob("*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem)[:n]:
            if not (root / name / f.name).exists():
                shutil.copy2(f, root / name / f.name)
    source["path"], source["labels"]["path"] = str((root / "image").resolve()), str((root / "label").resolve())


def isbi_doc(out: Path, name: str, workflow: Path, test_fraction: float | None, quick: bool) -> dict[str, Any]:
    """The ISBI recipe (unlabelled segment step dropped); ``test_fraction`` replaces the split's."""
    recipe = load_recipe(workflow)
    changes: dict[str, Any] = {}
    if test_fraction is not None:
        changes["split"] = step_of(recipe, "train")["split"] | {"test_fraction": test_fraction}
    if quick:
        _isbi_subset(out, recipe, 8)  # 1 test, 1 validation, 6 training slices
        changes |= {"epochs": 1, "patches_per_image": 1}
    return derive(recipe, name, out / name, **changes)


# --------------------------------------------------------------------------- scoring


def segment_tables(run_dir: Path) -> list[tuple[pd.DataFrame, dict[str, Any]]]:
    """Each segment step's report rows joined with their ``outputs.parquet`` signals, and the step's
    manifest outputs (its ``segment_*`` metrics included), in step order."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if manifest.get("state") != "done":
        raise SystemExit(f"segops run {run_dir} is not finished (state {manifest.get('state')!r})")
    tables = []
    for step in (s for s in manifest["steps"] if s["step"] == "segment"):
        report = pd.read_parquet(step["outputs"]["report"])
        outputs = pd.read_parquet(step["outputs"]["outputs"])
        if outputs.get("probabilities_path", pd.Series(dtype=str)).astype(str).str.len().gt(0).any():
            outputs["expected_dice"] = [expected_dice(p) if p else math.nan for p in outputs["probabilities_path"]]
        signals = [c for _, c, _ in SIGNALS if c in outputs.columns]
        joined = report.merge(outputs[["case_id", "frame", *signals]], on=["case_id", "frame"], how="left")
        if step["outputs"].get("review"):  # the review queue's flags (older runs: none)
            review = pd.read_parquet(step["outputs"]["review"], columns=["case_id", "frame", "flagged"])
            joined = joined.merge(review, on=["case_id", "frame"], how="left")
        if len(joined) != len(report):
            raise SystemExit(f"{step['outputs']['report']}: case ids repeat in outputs.parquet")
        tables.append((joined, step["outputs"]))
    return tables


def expected_dice(path: str) -> float:
    """The Dice a mask expects of itself: soft Dice of the predicted foreground (argmax > 0) against
    the softmax's foreground probability (1 - p_background), from a case's probabilities ``.npz``
    (``--probabilities``). A candidate signal measured here, not part of segops' risk."""
    from segops.outputs.probabilities import read_probabilities

    p = read_probabilities(path).probabilities.astype(np.float32)
    mask = p.argmax(axis=0) > 0
    fg = 1.0 - p[0]
    total = float(fg.sum() + mask.sum())
    return 2.0 * float((fg * mask).sum()) / total if total else 1.0


def score_part(df: pd.DataFrame) -> dict[str, Any]:
    """segops' risk quality of these cases, the Dice spread, and each single signal's AUROC on the same target."""
    dice = df["dice"].to_numpy(float)
    threshold = error_threshold(dice)
    figures = risk_quality(df["risk"].to_numpy(float), dice)
    target = "Dice < 0.5" if threshold == 0.5 else f"Dice < median {threshold:.3f}"
    if len(dice) and not (dice < 0.5).any():
        target += " (no case < 0.5)"
    elif len(dice) and (dice < threshold).all():
        target += " (every case: no AUROC)"
    singles = {}
    for label, column, transform in SIGNALS:
        if column not in df.columns or not df[column].notna().any():
            continue  # not computed for this run (e.g. member_dice without TTA or folds)
        values = transform(pd.to_numeric(df[column], errors="coerce").to_numpy(float))
        singles[label] = risk_auroc(np.nan_to_num(values, nan=0.0), dice, threshold)
    flagged = df["flagged"].fillna(False).to_numpy(bool) if "flagged" in df.columns else None
    return {
        "cases": len(df),
        "flagged": None if flagged is None else int(flagged.sum()),
        "flagged_errors": None if flagged is None else int((flagged & (dice < threshold)).sum()),
        "dice_mean": float(np.nanmean(dice)) if len(dice) else math.nan,
        "dice_min": float(np.nanmin(dice)) if len(dice) else math.nan,
        "target": target,
        **figures,
        "signal_auroc": singles,
    }


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def score_run(run_dir: Path, select: str, quickstart: bool) -> list[dict[str, Any]]:
    """One entry per part of the run (see the module docstring)."""
    tables = segment_tables(run_dir)
    report, metrics = tables[0]
    parts = [
        ("test", report[report["split"] == "test"]),
        ("val", report[report["split"] == "val"]),
        ("test+val", report[report["split"].isin(["test", "val"])]),
    ]
    if quickstart and len(tables) > 1:
        new, new_metrics = tables[1]
        parts += [("new", new), ("new, lesion", new[new["label_fg_fraction"] > 0])]
    scored = []
    for name, df in parts:
        entry = {"part": name, **score_part(df)}
        if name == "val":
            entry["note"] = (
                "chose nothing (select: last)" if select == "last" else "chose the checkpoint (select: best)"
            )
        if name in SEGOPS_PREFIX:  # our figures are segops' own, recomputed: say so if they differ
            m = new_metrics if name == "new" else metrics
            key = f"segment_{SEGOPS_PREFIX[name]}risk_auroc"
            if key in m and not _same(float(m[key]), entry["risk_auroc"]):
                log.warning(
                    "%s %s: risk AUROC %.4f here, %s in the run's metrics",
                    run_dir.name,
                    name,
                    entry["risk_auroc"],
                    m[key],
                )
            entry["segops_risk_auroc"] = m.get(key)
        scored.append(entry)
    return scored


# --------------------------------------------------------------------------- rows


def run_row(row: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    if row.startswith("quickstart"):
        short = row == "quickstart-short"
        if args.quick:
            epochs: int | None = 1 if short else 2
        else:
            epochs = args.short_epochs if short else None  # None: the recipe's 24
        doc = quickstart_doc(out, f"review-{row}", epochs, args.quick)
    else:
        doc = isbi_doc(out, f"review-{row}", args.isbi_workflow, 0.5 if row == "isbi-half" else None, args.quick)
    if args.probabilities:  # the softmax of every case, for the expected-Dice signal
        for step in (s for s in doc["steps"] if s["step"] == "segment"):
            step["outputs"] = [*dict.fromkeys([*step.get("outputs", ["png"]), "probabilities"])]
    train = step_of(doc, "train")
    start = time.perf_counter()
    try:
        run_dir = run_segops(doc, out / "workflows" / f"{doc['name']}.yaml", args.new_run)
    except Exception as exc:  # one failed row must not lose the others
        log.exception("row %s failed", row)
        return {"row": row, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "row": row,
        "epochs": train.get("epochs"),
        "select": train.get("select", "best"),
        "split": train.get("split"),
        "run_dir": str(run_dir),
        "wall_s": time.perf_counter() - start,  # 0-ish when a finished run was resumed
        "parts": score_run(run_dir, train.get("select", "best"), row.startswith("quickstart")),
    }


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _flagged(part: dict[str, Any]) -> str:
    return "-" if part.get("flagged") is None else f"{part['flagged']} ({part['flagged_errors']})"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| row | part | cases | Dice mean (min) | target | errors | AUROC risk | AUROC < median | Spearman | "
        "Dice top 10 % / rest | flagged (errors among them) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    signals: list[str] = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | failed: {r['error'][:150]} | | | | | | | | | |")
            continue
        for p in r["parts"]:
            goal = " ✓" if p["risk_auroc"] >= GOAL else ""
            lines.append(
                f"| {r['row']} ({r['epochs'] or 'recipe'} ep) | {p['part']} | {p['cases']} | "
                f"{_f(p['dice_mean'])} ({_f(p['dice_min'])}) | {p['target']} | {int(p['risk_errors'])} | "
                f"{_f(p['risk_auroc'])}{goal} | {_f(p['risk_auroc_median'])} | {_f(p['risk_spearman'])} | "
                f"{_f(p['risk_top10_dice'])} / {_f(p['risk_rest_dice'])} | "
                f"{_flagged(p)} |"
            )
            signals += [s for s in p["signal_auroc"] if s not in signals]
    lines += ["", "AUROC of single signals (same target as the risk's):", ""]
    lines += ["| row | part | risk | " + " | ".join(signals) + " |", "|---" * (len(signals) + 3) + "|"]
    for r in rows:
        for p in r.get("parts", []):
            cells = " | ".join(_f(p["signal_auroc"].get(s)) for s in signals)
            lines.append(f"| {r['row']} | {p['part']} | {_f(p['risk_auroc'])} | {cells} |")
    return "\n".join(lines)


NOTES = (
    f"Goal: AUROC of risk >= {GOAL} (✓). Target per part: Dice < 0.5, or below the part's median Dice when "
    "no case is below 0.5; 'AUROC < median' always uses the median.",
    "isbi: the recipe holds out 5 slices (test) and validates on 3 (val; select: last, so they chose "
    "nothing): an AUROC over 5 or 8 cases is close to meaningless (5 cases: 6 error/other pairs). "
    "isbi-half holds out 15 slices (test_fraction 0.5, a different model trained on 12 slices).",
    "quickstart 'new': a fresh labelled archive (segops synth ct --seed 1) segmented by a second segment "
    "step; never trained on, and not from the validation series that chose the checkpoint.",
    "Single signals: a missing value (e.g. entropy_fg without predicted foreground) counts 0, as in the "
    "risk's rule; a signal absent from outputs.parquet or NaN on every case (member_dice without TTA) is left out.",
)


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=None, help=f"Default: all ({', '.join(ROWS)}).")
    parser.add_argument("--short-epochs", type=int, default=4, help="Epochs of the quickstart-short row.")
    parser.add_argument("--isbi-workflow", type=Path, default=ISBI_WORKFLOW)
    parser.add_argument("--quick", action="store_true", help="Tiny data, 1-2 epochs (rows: quickstart, isbi).")
    parser.add_argument("--new-run", action="store_true", help="Retrain rows that ran before.")
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="Segment steps also write probabilities; adds the expected-Dice signal (1 - soft Dice, mask vs softmax).",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    rows = args.rows or list(QUICK_ROWS if args.quick else ROWS)
    out = Path("benchmarks/out") / ("review-quick" if args.quick else "review")
    results = []
    with_start = time.perf_counter()
    for row in rows:
        log.info("row %s", row)
        results.append(run_row(row, args, out))
    doc = {
        "quick": args.quick,
        "commit": _commit(),
        "wall_s": time.perf_counter() - with_start,
        "goal_auroc": GOAL,
        "notes": list(NOTES),
        "rows": results,
    }
    path = Path("benchmarks/out") / ("review-quick.json" if args.quick else "review.json")
    path.write_text(json.dumps(doc, indent=2, default=float))
    if args.quick:
        print("QUICK RUN (tiny data, 1-2 epochs): a smoke run, not the goal's figures.")
    print(markdown(results))
    print()
    print("\n".join(f"- {n}" for n in NOTES))
    print(f"JSON: {path}; {doc['wall_s']:.0f} s in all")


if __name__ == "__main__":
    main()

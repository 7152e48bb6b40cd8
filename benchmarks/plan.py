"""``segops plan`` vs hand-written recipes, in one process, with the same training time.

    .venv/bin/python benchmarks/plan.py                          # ISBI 2012 + a rare-defect archive (~30 min on 2 CPUs)
    .venv/bin/python benchmarks/plan.py path/to/train --skip-defect
    .venv/bin/python benchmarks/plan.py --new-run                # retrain the hand-written ISBI workflow too
    .venv/bin/python benchmarks/plan.py --isbi-epochs 10 --defects 120   # shorter (~25 min on a slow day)

1. ISBI 2012 membranes (default folder ``../shared/datasets/isbi2012-membrane/train``: ``image/k.png``
   and ``label/k.png``, 0 = membrane). ``workflows/isbi2012.yaml`` runs first (resumed when it
   ran before); then ``segops plan FOLDER --foreground-value 0`` with a budget equal to that
   run's train-step time, and the planned workflow runs unedited. Held-out Dice (membrane
   class), pixel error and times side by side, also on the slices both runs held out.
2. A generated rare-defect archive (:func:`segops.synth.make_defect_archive`: 70 % of the
   parts defect-free, anti-aliased masks beside JPEGs, two overview figures) trained with a fixed
   quickstart-like recipe (the source block a user must write to read the data at all:
   ``threshold: 128`` and the overview figures excluded), then planned with the same budget.
   Foreground Dice over held-out images that have a defect (on mostly empty data the plain mean
   is dominated by empty cases).

The held-out sets differ (each workflow splits by its own ``val_fraction``); the line "common
held-out" scores both on the cases both held out.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import stopwatch
from _quickstart import quickstart_train

from segops.config.load import load_workflow
from segops.data.pairing import PlanOverrides
from segops.data.planning import PlanSettings
from segops.steps.plan import plan_workflow
from segops.workflows import run_workflow

OUT = Path("benchmarks/out/plan")


def _seconds(step: dict) -> float:
    return (datetime.fromisoformat(step["finished"]) - datetime.fromisoformat(step["started"])).total_seconds()


def run(path: Path, new_run: bool = False) -> dict:
    """Run a workflow file; its train seconds, epochs, patch and the first segment step's report."""
    spec = load_workflow(path)
    result = run_workflow(spec, path.read_text(encoding="utf-8"), new_run=new_run)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    train = next(s for s in manifest["steps"] if s["step"] == "train")
    segment = next(s for s in manifest["steps"] if s["step"] == "segment")
    train_spec = next(s for s in spec.steps if s.step == "train")
    return {
        "run": result.run_id,
        "train_s": _seconds(train),
        "epochs": train_spec.epochs,
        "patch": train_spec.preprocess.patch_size,
        "report": pd.read_parquet(segment["outputs"]["report"]),
    }


def _scores(report: pd.DataFrame, cases: set[str] | None = None, fg_only: bool = False) -> tuple[float, float, int]:
    held = report[report["split"] == "test"]
    if cases is not None:
        held = report[report["rel_path"].isin(cases)]
    if fg_only:
        held = held[held["label_fg_fraction"] > 0]
    return float(held["dice"].mean()), float(held["pixel_error"].mean()), len(held)


def compare(title: str, a_name: str, a: dict, b_name: str, b: dict, fg_only: bool = False) -> str:
    """Two runs side by side: held-out (own split, then common cases) Dice, pixel error, times."""
    common = set(a["report"].loc[a["report"]["split"] == "test", "rel_path"]) & set(
        b["report"].loc[b["report"]["split"] == "test", "rel_path"]
    )
    dice = "foreground Dice (defect images)" if fg_only else "Dice"
    rows = [("held-out " + dice, 0), ("held-out pixel error", 1), ("held-out cases", 2)]
    lines = [title, f"{'measure':<48} {a_name:>22} {b_name:>22}"]
    for scope, cases in (("", None), ("common ", common)):
        sa, sb = _scores(a["report"], cases, fg_only), _scores(b["report"], cases, fg_only)
        lines += [
            f"{(scope + name):<48} {sa[i]:>22.4f} {sb[i]:>22.4f}"
            if i < 2
            else f"{(scope + name):<48} {sa[i]:>22d} {sb[i]:>22d}"
            for name, i in rows
        ]
    for key, label in (("train_s", "train step, s"), ("epochs", "epochs"), ("patch", "patch size"), ("run", "run id")):
        lines.append(
            f"{label:<48} {round(a[key]) if key == 'train_s' else a[key]!s:>22} "
            f"{round(b[key]) if key == 'train_s' else b[key]!s:>22}"
        )
    return "\n".join(lines)


def plan_and_run(folder: Path, out: Path, budget_s: float, overrides: PlanOverrides, name: str) -> tuple[dict, float]:
    with stopwatch() as elapsed:
        plan_workflow(folder, out, overrides, PlanSettings(budget_minutes=budget_s / 60), name=name)
    return run(out, new_run=True), elapsed()


def hand_isbi(epochs: int | None) -> Path:
    """``workflows/isbi2012.yaml``, or a copy of it trained for ``epochs`` (a shorter run on a slow day)."""
    path = Path("workflows/isbi2012.yaml")
    if epochs is None:
        return path
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["name"] = f"isbi2012-{epochs}ep"
    next(s for s in doc["steps"] if s["step"] == "train")["epochs"] = epochs
    copy = OUT / "isbi" / f"hand-{epochs}ep.yaml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(yaml.safe_dump(doc, sort_keys=False))
    return copy


def isbi(folder: Path, new_run: bool, epochs: int | None = None) -> str:
    hand = run(hand_isbi(epochs), new_run)
    planned, plan_s = plan_and_run(
        folder, OUT / "isbi" / "workflow.yaml", hand["train_s"], PlanOverrides(foreground_value=0), "isbi2012-planned"
    )
    return compare(
        f"ISBI 2012 membranes ({folder}); planning took {plan_s:.0f} s",
        "hand (isbi2012.yaml)",
        hand,
        "segops plan",
        planned,
    )


def fixed_recipe(archive: Path) -> Path:
    """A quickstart-like recipe for the defect archive (what a user would copy and adapt)."""
    doc = {
        "name": "defects-fixed",
        "seed": 0,
        "output_dir": "runs",
        "tracking": {"uri": "sqlite:///mlruns.db", "experiment": "plan-benchmark"},
        "steps": [
            {
                "step": "ingest",
                "source": {
                    "kind": "images",
                    "path": str(archive),
                    "exclude": ["README.png", "dataset.jpg"],
                    "labels": {"kind": "mask-png", "path": str(archive), "threshold": 128},
                },
            },
            quickstart_train(
                preprocess={"intensity": {"kind": "percentile"}, "patch_size": [96, 96]},
                split={"val_fraction": 0.34, "seed": 0},
            ),
            {"step": "segment", "outputs": ["png"], "overlays": 4},
        ],
    }
    path = OUT / "defects" / "fixed.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def defects(count: int) -> str:
    from segops.synth import make_defect_archive

    archive = OUT / "defects" / "archive"
    if not archive.is_dir():
        make_defect_archive(archive, count=count, seed=0)
    fixed = run(fixed_recipe(archive.resolve()), new_run=True)
    planned, plan_s = plan_and_run(
        archive, OUT / "defects" / "workflow.yaml", fixed["train_s"], PlanOverrides(), "defects-planned"
    )
    return compare(
        f"rare defects ({count} parts, 70 % defect-free); planning took {plan_s:.0f} s",
        "fixed quickstart recipe",
        fixed,
        "segops plan",
        planned,
        fg_only=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="../shared/datasets/isbi2012-membrane/train", type=Path)
    parser.add_argument("--new-run", action="store_true", help="Retrain the hand-written ISBI workflow.")
    parser.add_argument(
        "--isbi-epochs",
        type=int,
        default=None,
        help="Train the hand-written ISBI workflow for this many epochs instead of its 50 "
        "(the plan gets the same time).",
    )
    parser.add_argument("--defects", type=int, default=200, help="Parts in the generated defect archive.")
    parser.add_argument("--skip-isbi", action="store_true")
    parser.add_argument("--skip-defect", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    blocks = []
    if not args.skip_isbi:
        blocks.append(isbi(args.folder, args.new_run, args.isbi_epochs))
    if not args.skip_defect:
        blocks.append(defects(args.defects))
    print("\n\n".join(blocks))


if __name__ == "__main__":
    main()

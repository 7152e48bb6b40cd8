"""How far each nnU-Net ingredient moves segops on ISBI 2012: one workflow variant per row, each run
end to end with the same training budget and scored on the same held-out slices.

    .venv/bin/python benchmarks/quality.py                        # every row, 30 min of training each
    .venv/bin/python benchmarks/quality.py --rows baseline tta --minutes 10
    .venv/bin/python benchmarks/quality.py --independent          # each row = baseline + its own change only
    .venv/bin/python benchmarks/quality.py --rows --same-model-mirroring baseline   # mirroring alone, no training

Rows (cumulative by default: each adds its change to the row before, as an ablation towards
nnU-Net's recipe; ``--independent``: each is the baseline plus its own change):

- ``baseline``: ``workflows/isbi2012.yaml``, its held-out slices as the test split (``_isbi_heldout.py``);
- ``dynunet``: ``model: {arch: dynunet}`` (MONAI's DynUNet, nnU-Net's network; kernels and strides
  defaulted by segops);
- ``tta``: ``segment.tta: {flip_axes: [0, 1]}`` (softmax averaged over the 4 mirror images);
- ``folds``: ``train.folds: 5`` (5 models on the non-test slices, their softmax averaged), the
  segment step also writing ``probabilities``;
- ``postprocessing``: the ``folds`` run again (no second training), scored twice: as segmented,
  i.e. with the postprocessing chosen on the out-of-fold predictions and stored with the model,
  and as the argmax of the saved softmax, i.e. without it.

Epochs come from ``--epochs`` or a timing probe sized to ``--minutes`` (a k-fold row fits k models
in it). A finished run of the same variant is resumed, not retrained, unless ``--new-run``. Each
row is written to ``benchmarks/out/quality/<row>.json``; the markdown table is printed at the end.
Pixel and Rand error and Dice are scored by segops' metrics on segops' decoded labels (class 1 =
membrane); inference seconds are the segment step's, over all 30 labelled slices.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _isbi_heldout import (
    boundary_class,
    derive,
    heldout_cases,
    load_recipe,
    probe_epochs,
    read_run,
    result_row,
    run_segops,
    score,
    score_run,
    step_of,
    validated,
)

OUT = Path("benchmarks/out/quality")
ROWS = ("baseline", "dynunet", "tta", "folds", "postprocessing")
log = logging.getLogger("quality")


def _dynunet(doc: dict[str, Any]) -> None:
    model = step_of(doc, "train")["model"]
    step_of(doc, "train")["model"] = {
        "arch": "dynunet",
        "in_channels": model["in_channels"],
        "classes": model["classes"],
    }


def _tta(doc: dict[str, Any]) -> None:
    step_of(doc, "segment")["tta"] = {"flip_axes": [0, 1]}


def _folds(doc: dict[str, Any]) -> None:
    step_of(doc, "train")["folds"] = 5
    segment = step_of(doc, "segment")
    segment["outputs"] = sorted({*segment.get("outputs", ["png"]), "png", "probabilities"})


#: What each row changes in the workflow dict (``postprocessing`` scores the ``folds`` run).
CHANGES = {"dynunet": _dynunet, "tta": _tta, "folds": _folds}


def variant(recipe: dict[str, Any], row: str, independent: bool) -> dict[str, Any]:
    """The workflow dict of ``row``: the recipe with the changes of the rows up to it (or its own only)."""
    doc = derive(recipe, "isbi2012-q-" + ("folds" if row == "postprocessing" else row), OUT)
    names = ([row] if independent else list(ROWS[: ROWS.index(row) + 1])) if row != "baseline" else []
    names = [n for n in names if n != "baseline"]
    if row == "postprocessing":
        names = [n for n in names if n != "postprocessing"] + (["folds"] if independent else [])
    for name in names:
        CHANGES[name](doc)
    if independent and row != "baseline":
        doc["name"] += "-alone"
    return doc


def run_row(recipe: dict[str, Any], row: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train and segment one variant (or resume it), score it; one result row (two for postprocessing)."""
    doc = variant(recipe, row, args.independent)
    spec = validated(doc)
    split, test = heldout_cases(spec)
    folds = step_of(doc, "train").get("folds", 1)
    epochs = (args.epochs or _folds_row_epochs(doc["name"])) if row == "postprocessing" else args.epochs
    epochs = epochs or probe_epochs(spec, args.minutes, len(split.train), len(split.val), test[0].label.shape, folds)
    step_of(doc, "train")["epochs"] = epochs
    doc["name"] += f"-{epochs}ep"  # postprocessing: the folds row's workflow, so its run (resumed when finished)
    try:
        run_dir = run_segops(doc, OUT / "workflows" / f"{doc['name']}.yaml", args.new_run)
    except Exception as exc:  # a feature not in segops yet: report the row as failed, go on
        log.error("row %s failed: %s: %s", row, type(exc).__name__, exc)
        return [{"row": row, "error": f"{type(exc).__name__}: {exc}"}]
    run = read_run(run_dir)
    classes = next(s for s in spec.steps if s.step == "train").model.classes
    boundary = boundary_class(spec)
    modes = (
        [("with postprocessing", False), ("without postprocessing", True)] if row == "postprocessing" else [("", False)]
    )
    rows = []
    for label, raw in modes:
        scored = score_run(run, split, test, classes, boundary, raw=raw)
        rows.append(
            {
                "row": f"{row} ({label})" if label else row,
                **result_row(
                    scored,
                    run.train_s,
                    run.segment_s,
                    run.segmented,
                    epochs,
                    folds=folds,
                    run_dir=str(run_dir),
                    heldout=[c.rel_path for c in test],
                ),
            }
        )
    return rows


def _folds_row_epochs(name: str) -> int | None:
    """The epochs of the finished ``folds`` row whose run is ``name`` (the postprocessing row scores
    that run: a new timing probe could size it differently and train it again)."""
    done = OUT / "folds.json"
    if not done.exists():
        return None
    rows = json.loads(done.read_text())
    own = re.compile(re.escape(name) + r"-\d+ep-")
    return next((int(r["epochs"]) for r in rows if own.match(Path(r.get("run_dir", "")).name)), None)


def same_model_mirroring(recipe: dict[str, Any], row: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``row``'s finished run's model on the held-out slices through segops' engine (on this
    process, as an actor runs it, with the run's segment settings), without and with mirroring
    (``flip_axes: [0, 1]``): the gain of mirroring alone, free of a second training's seed noise."""
    import time

    from segops.config.schema import TTASpec
    from segops.engine.cases import InferenceSettings, segment_cases
    from segops.engine.checkpoint import load_checkpoint

    done = json.loads((OUT / f"{row}.json").read_text())[0]
    run_dir = Path(done["run_dir"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    checkpoint = next(s for s in manifest["steps"] if s["step"] == "train")["outputs"]["checkpoint"]
    spec = validated(variant(recipe, row, args.independent))
    split, test = heldout_cases(spec)
    segment = next(s for s in spec.steps if s.step == "segment")
    classes = next(s for s in spec.steps if s.step == "train").model.classes
    loaded = load_checkpoint(checkpoint)
    rows = []
    for label, axes in (("no mirroring", ()), ("mirroring", (0, 1))):
        settings = InferenceSettings.from_step(segment.model_copy(update={"tta": TTASpec(flip_axes=axes)}))
        started = time.perf_counter()
        results = segment_cases(loaded, [c.image.copy() for c in test], [c.label for c in test], settings)
        seconds = time.perf_counter() - started
        preds = {c.case_id: r.class_map for c, r in zip(test, results)}
        scored = score(preds, test, classes, boundary_class(spec))
        rows.append(
            {
                "row": f"{row}, same model: {label}",
                **result_row(scored, 0.0, seconds, len(test), done["epochs"], folds=1, run_dir=str(run_dir)),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| row | held-out pixel error | Rand error | Dice | training min | inference s | epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | failed: {r['error'][:120]} | | | | | |")
            continue
        folds = f" x {r['folds']} folds" if r["folds"] > 1 else ""
        lines.append(
            f"| {r['row']} | {r['pixel_error']:.4f} | {r['rand_error']:.4f} | {r['dice']:.4f} | "
            f"{r['train_minutes']:.1f} | {r['inference_s']:.0f} ({r['inference_slices']} slices) | "
            f"{r['epochs']}{folds} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="*", choices=ROWS, default=list(ROWS))
    parser.add_argument("--minutes", type=float, default=30.0, help="Training budget of each row.")
    parser.add_argument("--epochs", type=int, default=None, help="Epochs of every row instead of a probe's.")
    parser.add_argument("--independent", action="store_true", help="Each row = baseline + its own change.")
    parser.add_argument("--new-run", action="store_true", help="Retrain rows that ran before.")
    parser.add_argument("--workflow", type=Path, default=Path("workflows/isbi2012.yaml"))
    parser.add_argument(
        "--same-model-mirroring",
        choices=ROWS[:2],
        default=None,
        help="After the rows: that row's model on the held-out slices without and with mirroring (no retraining).",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    recipe = load_recipe(args.workflow)
    results = []
    for row in args.rows:
        rows = run_row(recipe, row, args)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{row}.json").write_text(json.dumps(rows, indent=2))
        results += rows
    if args.same_model_mirroring:
        rows = same_model_mirroring(recipe, args.same_model_mirroring, args)
        (OUT / f"{args.same_model_mirroring}-mirroring.json").write_text(json.dumps(rows, indent=2))
        results += rows
    print(markdown(results))


if __name__ == "__main__":
    main()

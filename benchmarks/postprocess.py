"""Postprocessing chosen with and without clean-case balancing, on trained runs' held-out cases.

    .venv/bin/python benchmarks/postprocess.py RUN_DIR [RUN_DIR ...]

A RUN_DIR is a finished train run (``runs/<name>-<hash>/``, e.g. from ``large_inputs.py --run``)
with ``model/``, ``split.json``, ``dataset/`` and ``val-predictions/`` (the kept model's
validation predictions, which choose the postprocessing). Per run, in this process and on the same
predictions:

- ``none``: the model's argmax;
- ``nnU-Net candidates``: :func:`segops.engine.postprocess.choose_postprocessing` with
  ``clean_cases=False`` (largest component, sizes below the smallest true object, mean Dice over
  all cases: the behaviour before clean-case balancing);
- ``balanced``: clean-case balancing on the validation cases alone (false-alarm sizes from clean
  cases, balanced Dice, found defects kept): the default before training cases were added;
- ``balanced, + training cases``: the default where a class is in fewer than 5 validation cases
  and the training cases make up for it (:mod:`segops.cluster.postprocess_choice`: the same seeded
  sample of at most 200 training cases, predicted here whole); absent where the train step adds none.

Each rule set is chosen on the validation predictions and applied to the *test* split's
predictions (made here by the run's model, as its segment step would: whole images), scored with
:func:`segops.metrics.case_scores` as the segment report is: mean Dice over all cases, over
foreground cases, and the report's image-level figures: the share of clean cases given any
foreground (``empty_flagged``) and of foreground cases given none (``fg_missed``). Test
predictions are cached beside the results in ``benchmarks/out/postprocess/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from segops.cluster.postprocess_choice import rare_classes, training_sample
from segops.engine.checkpoint import load_checkpoint
from segops.engine.postprocess import choose_postprocessing
from segops.engine.predict import predict
from segops.metrics import case_scores
from segops.outputs.reports import image_level

OUT = Path(__file__).resolve().parent / "out" / "postprocess"


def _tensor(cell: dict, dtype: type) -> np.ndarray:
    if isinstance(cell, np.ndarray):  # Ray's tensor extension type, registered once Ray is imported
        return cell.astype(dtype)
    return np.asarray(cell["data"], dtype).reshape(cell["shape"])


def _predictions(run: Path, name: str, wanted: Callable[[dict], bool]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The run's model's whole-image predictions of the labelled dataset rows ``wanted`` picks, and
    their labels; cached as ``<run>-<name>.npz``."""
    cache = OUT / f"{run.name}-{name}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=True) as data:
            return list(data["maps"]), list(data["labels"])
    loaded = load_checkpoint(run / "model")
    maps, labels = [], []
    for part in sorted((run / "dataset").glob("*.parquet")):
        for row in pq.read_table(part, columns=["case_id", "group_id", "image", "label"]).to_pylist():
            if wanted(row) and row["label"] is not None:
                labels.append(_tensor(row["label"], np.uint8))
                maps.append(predict(loaded, [_tensor(row["image"], np.float32)])[0])
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, maps=np.array(maps, dtype=object), labels=np.array(labels, dtype=object))
    return maps, labels


def _test_predictions(run: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    test = set(json.loads((run / "split.json").read_text())["test"])
    return _predictions(run, "test", lambda row: row["group_id"] in test)


def _training_cases(run: Path, val_labels: list[np.ndarray], classes: int) -> tuple[list, list] | None:
    """The training cases a train step adds to the validation ones where a class is rare there
    (:mod:`segops.cluster.postprocess_choice`: the same sample, predicted here whole); None where
    it adds none."""
    rare = rare_classes(val_labels, classes)
    train = json.loads((run / "split.json").read_text())["train"]
    seed = yaml.safe_load((run / "workflow.yaml").read_text()).get("seed", 0)
    ids = set(training_sample((run / "dataset", train, seed), val_labels, rare)) if rare else set()
    return _predictions(run, "train", lambda row: row["case_id"] in ids) if ids else None


def _figures(maps: list[np.ndarray], labels: list[np.ndarray], classes: int) -> dict[str, float]:
    """The segment report's Dice (:func:`segops.metrics.case_scores`) over all and over foreground
    cases, and its image-level figures (:func:`segops.outputs.reports.image_level`)."""
    cases = pd.DataFrame(
        {
            "dice": [case_scores(m, t, classes)["dice"] for m, t in zip(maps, labels)],
            "fg_fraction": [float((m > 0).mean()) for m in maps],
            "label_fg_fraction": [float((t > 0).mean()) for t in labels],
        }
    )
    holds = cases["label_fg_fraction"] > 0
    figures = {"dice": float(cases["dice"].mean()), "fg_dice": float(cases.loc[holds, "dice"].mean())}
    return figures | {"empty_flagged": float("nan"), "fg_missed": float("nan")} | image_level(cases)


def measure(run: Path) -> dict:
    val = [np.load(f) for f in sorted((run / "val-predictions").glob("*.npz"))]
    val_maps, val_labels = [v["class_map"] for v in val], [v["label"] for v in val]
    maps, labels = _test_predictions(run)
    classes = json.loads((run / "model" / "segops.json").read_text())["model"]["classes"]
    objects = json.loads((run / "model" / "fingerprint.json").read_text()).get("objects") or {}
    smallest = objects.get("size_p05")
    result = {
        "run": str(run),
        "val_cases": len(val_maps),
        "val_fg_cases": sum(bool(t.any()) for t in val_labels),
        "test_cases": len(maps),
        "test_fg_cases": sum(bool(t.any()) for t in labels),
        "rows": {"none": {"rule": "-"} | _figures(maps, labels, classes)},
    }
    arms = [("nnU-Net candidates", False, val_maps, val_labels), ("balanced", True, val_maps, val_labels)]
    training = _training_cases(run, val_labels, classes)
    if training is not None:
        arms.append(("balanced, + training cases", True, val_maps + training[0], val_labels + training[1]))
    for name, balanced, deciding, truths in arms:
        post = choose_postprocessing(
            deciding, truths, classes, source="validation", smallest_object=smallest, clean_cases=balanced
        )
        applied = [post.apply(m) for m in maps]
        result["rows"][name] = {"rule": post.describe(), "deciding_cases": len(deciding)} | _figures(
            applied, labels, classes
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    results = [measure(run) for run in args.runs]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "result.json").write_text(json.dumps(results, indent=2))
    for r in results:
        print(
            f"\n{r['run']}: validation {r['val_cases']} cases ({r['val_fg_cases']} with foreground), "
            f"test {r['test_cases']} ({r['test_fg_cases']})"
        )
        print("| postprocessing | deciding cases | Dice | fg Dice | clean flagged | fg missed | rule |")
        print("|---|---|---|---|---|---|---|")
        for name, row in r["rows"].items():
            print(
                f"| {name} | {row.get('deciding_cases', '-')} | {row['dice']:.3f} | {row['fg_dice']:.3f} "
                f"| {row['empty_flagged']:.2f} | {row['fg_missed']:.2f} | {row['rule']} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

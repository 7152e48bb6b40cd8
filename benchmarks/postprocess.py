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
- ``balanced``: the default (false-alarm sizes from clean cases, balanced Dice, found defects kept).

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
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from segops.engine.checkpoint import load_checkpoint
from segops.engine.postprocess import choose_postprocessing
from segops.engine.predict import predict
from segops.metrics import case_scores
from segops.outputs.reports import image_level

OUT = Path(__file__).resolve().parent / "out" / "postprocess"


def _tensor(cell: dict, dtype: type) -> np.ndarray:
    return np.asarray(cell["data"], dtype).reshape(cell["shape"])


def _test_predictions(run: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    cache = OUT / f"{run.name}-test.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=True) as data:
            return list(data["maps"]), list(data["labels"])
    test = set(json.loads((run / "split.json").read_text())["test"])
    loaded = load_checkpoint(run / "model")
    maps, labels = [], []
    for part in sorted((run / "dataset").glob("*.parquet")):
        for row in pq.read_table(part, columns=["group_id", "image", "label"]).to_pylist():
            if row["group_id"] in test and row["label"] is not None:
                labels.append(_tensor(row["label"], np.uint8))
                maps.append(predict(loaded, [_tensor(row["image"], np.float32)])[0])
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, maps=np.array(maps, dtype=object), labels=np.array(labels, dtype=object))
    return maps, labels


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
    for name, balanced in (("nnU-Net candidates", False), ("balanced", True)):
        post = choose_postprocessing(
            val_maps, val_labels, classes, source="validation", smallest_object=smallest, clean_cases=balanced
        )
        applied = [post.apply(m) for m in maps]
        result["rows"][name] = {"rule": post.describe()} | _figures(applied, labels, classes)
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
        print("| postprocessing | Dice | fg Dice | clean flagged | fg missed | rule |")
        print("|---|---|---|---|---|---|")
        for name, row in r["rows"].items():
            print(
                f"| {name} | {row['dice']:.3f} | {row['fg_dice']:.3f} | {row['empty_flagged']:.2f} | "
                f"{row['fg_missed']:.2f} | {row['rule']} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

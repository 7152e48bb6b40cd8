"""MVTec AD's layout: does training on the ``train/good`` parts beside ``test/`` pay?

A category in MVTec AD's layout (``train/good`` clean parts; ``test/good`` and ``test/crack``;
``ground_truth/crack/x_mask.png``), drawn with ``grouped_split.py``'s machined surfaces: every part
has stains (round marks, short straight scratches: not defects), a cracked part also a long
wandering crack. ``segops plan`` now reads the whole category (``train/good`` as empty masks); the
baseline arm is the same planned workflow with the source cut back to ``test/`` as plans were
before (same epochs, steps and settings: only the images differ). Each run's workflow gains a
second segment step over fresh parts from the same generator (``fresh/images`` + ``fresh/masks``,
half cracked, never in any split), scored as a user's segment step gives them (postprocessing as
chosen on the run's validation split). Per arm and split seed: training images, validation cases
(clean / cracked), the postprocessing chosen, and on the fresh parts Dice, Dice over the cracked
parts, the share of clean parts flagged and of cracked parts missed.

    .venv/bin/python benchmarks/normal_beside.py                 # 2 split seeds, ~20 min on 2 cores
    .venv/bin/python benchmarks/normal_beside.py --split-seeds 0 --budget-minutes 2

Writes ``benchmarks/out/normal_beside/`` and ``benchmarks/out/normal_beside.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _runs import arm_args, plan, run_in
from grouped_split import SIZE, _marks, _surface
from PIL import Image

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "normal_beside"


def _part(rng: np.random.Generator, cracked: bool, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    dark, crack = _marks(rng, cracked, contrast)
    dy, dx = rng.integers(0, 32, 2)
    window = (slice(dy, dy + SIZE), slice(dx, dx + SIZE))
    image = (_surface(rng) - dark)[window] * rng.uniform(0.85, 1.15) + rng.normal(0, 6, (SIZE, SIZE))
    return image.clip(0, 255).astype(np.uint8), (crack[window] * 255).astype(np.uint8)


def make_category(root: Path, rng: np.random.Generator, train_good: int, test_good: int, cracked: int, contrast: float):
    """MVTec AD's folders for one category under ``root``."""
    for folder, n, is_cracked in (("train/good", train_good, False), ("test/good", test_good, False)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_part(rng, is_cracked, contrast)[0]).save(root / folder / f"{i:03d}.png")
    (root / "test" / "crack").mkdir(parents=True)
    (root / "ground_truth" / "crack").mkdir(parents=True)
    for i in range(cracked):
        image, mask = _part(rng, True, contrast)
        if not mask.any():  # a crack wandered out of the window: draw another part
            image, mask = _part(rng, True, contrast)
        Image.fromarray(image).save(root / "test" / "crack" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "ground_truth" / "crack" / f"{i:03d}_mask.png")


def make_fresh(root: Path, rng: np.random.Generator, n: int, contrast: float) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = _part(rng, i % 2 == 1, contrast)
        Image.fromarray(image).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")


def test_only(planned: dict[str, Any]) -> dict[str, Any]:
    """The planned workflow with the source as plans read MVTec AD before: ``test/`` alone, its
    ``good/`` as empty masks."""
    doc = copy.deepcopy(planned)
    source = next(s for s in doc["steps"] if s["step"] == "ingest")["source"]
    source["path"] = str(Path(source["path"]) / "test")
    source.pop("exclude", None)
    labels = source["labels"]
    labels.pop("replace")
    labels["empty_when_missing"] = ["good/**"]
    return doc


def with_fresh(doc: dict[str, Any], fresh: Path) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    segment = next(s for s in doc["steps"] if s["step"] == "segment")
    labels = {"kind": "mask-png", "path": str(fresh / "masks"), "pattern": "{rel_stem}.png"}
    new = copy.deepcopy(segment) | {"overlays": 0, "source": {"kind": "images", "path": str(fresh / "images")}}
    new["source"]["labels"] = labels
    doc["steps"].append(new)
    return doc


def _scores(report: pd.DataFrame) -> dict[str, Any]:
    fg, clean = report[report["label_fg_fraction"] > 0], report[report["label_fg_fraction"] == 0]
    return {
        "dice": round(float(report["dice"].mean()), 4),
        "fg_dice": round(float(fg["dice"].mean()), 4),
        "clean_flagged": round(float((clean["fg_fraction"] > 0).mean()), 3),
        "fg_missed": round(float((fg["fg_fraction"] == 0).mean()), 3),
    }


def run_arm(name: str, doc: dict[str, Any], fresh: Path, seed: int) -> dict[str, Any]:
    doc = with_fresh(doc, fresh)
    doc["name"] = f"mvtec-{name}"
    next(s for s in doc["steps"] if s["step"] == "train")["split"]["seed"] = seed
    folder = OUT / f"{name}-{seed}"
    row, reports = run_in(folder, doc)
    row = {"arm": name, "seed": seed} | row
    if not reports:
        return row
    run_dir = sorted((folder / "runs").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)[-1].parent
    split = json.loads((run_dir / "split.json").read_text())
    val = reports[0][reports[0]["split"] == "val"]
    rules = json.loads((run_dir / "model" / "segops.json").read_text()).get("postprocess") or {}
    chosen = [f"{r['op']}" + (f" < {r['min_size']} px" if r.get("min_size") else "") for r in rules.get("rules", [])]
    return (
        row
        | {
            "train_groups": len(split["train"]),
            "val_clean": int((val["label_fg_fraction"] == 0).sum()),
            "val_cracked": int((val["label_fg_fraction"] > 0).sum()),
            "postprocessing": ", ".join(chosen) or "none",
        }
        | {f"fresh_{k}": v for k, v in _scores(reports[1]).items()}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-good", type=int, default=120)
    parser.add_argument("--test-good", type=int, default=12)
    parser.add_argument("--cracked", type=int, default=30)
    parser.add_argument("--fresh", type=int, default=60)
    parser.add_argument("--contrast", type=float, default=30)
    args = arm_args(parser, budget_minutes=3.0)
    shutil.rmtree(OUT, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    category, fresh = OUT / "castings", OUT / "fresh"
    make_category(category, rng, args.train_good, args.test_good, args.cracked, args.contrast)
    make_fresh(fresh, rng, args.fresh, args.contrast)
    planned = plan(category, OUT, args.budget_minutes)
    rows = []
    for seed in args.split_seeds:
        for name, doc in (("test-only", test_only(planned)), ("with-train-good", planned)):
            rows.append(run_arm(name, doc, fresh, seed))
            print(json.dumps(rows[-1]), flush=True)
    (ROOT / "out" / "normal_beside.json").write_text(json.dumps(rows, indent=2))
    print(
        "\n| arm | split seed | train images | validation clean / cracked | postprocessing | fresh Dice "
        "| fresh cracked Dice | clean flagged | cracked missed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arm']} | {r['seed']} | {r.get('train_groups')} | {r.get('val_clean')} / {r.get('val_cracked')} "
            f"| {r.get('postprocessing')} | {r.get('fresh_dice')} | {r.get('fresh_fg_dice')} "
            f"| {r.get('fresh_clean_flagged')} | {r.get('fresh_fg_missed')} |"
        )


if __name__ == "__main__":
    main()

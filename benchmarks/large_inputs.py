"""What ``segops plan`` makes of archives larger than the ones it was built on, and whether the
planned run keeps its time budget.

    .venv/bin/python benchmarks/large_inputs.py                    # both folders: plan only (~5 min)
    .venv/bin/python benchmarks/large_inputs.py --run              # and run each plan (~35 min on 2 CPUs)
    .venv/bin/python benchmarks/large_inputs.py --only photos --run

1. ``archive``: a KolektorSDD2-sized inspection folder: 2,331 photos of ~630x230 px with
   ``_GT.png`` masks, one in ten with a thin dark scratch (sizes, suffix and defect rate of
   KolektorSDD2; the pixels are generated). A pass over every image takes far longer than a
   10-minute budget: the plan draws ``samples_per_epoch`` images per epoch.
2. ``photos``: 24 dermoscopy-like photos of 4000x3000 px (a third portrait, 3024x4032) with
   ``masks/<stem>_segmentation.png`` (ISIC's naming), one large lesion each: the plan shrinks
   them (``preprocess.scale``).

Per folder: the planned values with their reasons, the plan's wall time and, with ``--run``,
the run's wall time, the train step's epochs (``ray-train/progress.jsonl``) and the held-out
Dice from ``report.parquet``. Written to ``benchmarks/out/large_inputs/result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "out" / "large_inputs"
SEGOPS = str(Path(sys.executable).with_name("segops"))
BUDGETS = {"archive": 10.0, "photos": 3.0}


def make_archive(root: Path, count: int = 2331, seed: int = 0) -> Path:
    """KolektorSDD2-sized photos with ``_GT.png`` masks; every tenth has a scratch."""
    rng = np.random.default_rng(seed)
    folder = root / "train"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = int(rng.integers(620, 641)), int(rng.integers(228, 233))
        base = rng.normal(120, 12, (h, w)) + 20 * np.sin(np.arange(w) / 7.0)[None]
        mask = Image.new("L", (w, h), 0)
        if i % 10 == 0:
            x0, y0 = int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10))
            end = (x0 + int(rng.integers(-40, 40)), y0 + int(rng.integers(-60, 60)))
            ImageDraw.Draw(mask).line([(x0, y0), end], fill=255, width=3)
        m = np.asarray(mask) > 0
        base[m] *= 0.35
        rgb = np.clip(np.stack([base, base * 0.9, base * 0.8], -1), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{10000 + i}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(folder / f"{10000 + i}_GT.png")
    return folder


def make_photos(root: Path, count: int = 24, seed: int = 0) -> Path:
    """4000x3000 (every third 3024x4032) JPEG photos of one dark lesion each, ISIC-style masks."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = (4000, 3000) if i % 3 else (3024, 4032)
        yy, xx = np.mgrid[0:h, 0:w]
        cx, cy = w / 2 + rng.integers(-400, 400), h / 2 + rng.integers(-300, 300)
        lesion = ((xx - cx) ** 2 / 1.3 + (yy - cy) ** 2) < int(rng.integers(500, 1100)) ** 2
        base = 200 - 1e-5 * ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) + rng.normal(0, 6, (h, w))
        base[lesion] -= 90
        rgb = np.clip(np.stack([base, base * 0.8, base * 0.7], -1), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"ISIC_{i:07d}.jpg", quality=90)
        Image.fromarray((lesion * 255).astype(np.uint8)).save(root / "masks" / f"ISIC_{i:07d}_segmentation.png")
    return root


def _segops(args: list[str], cwd: Path, log: Path) -> float:
    """Run the CLI in ``cwd``, its output to ``log``; returns wall seconds (raises on failure)."""
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    start = time.monotonic()
    with open(log, "w") as out:
        subprocess.run([SEGOPS, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - start


def _planned(workflow: Path) -> dict[str, object]:
    train = next(s for s in yaml.safe_load(workflow.read_text())["steps"] if s["step"] == "train")
    keep = ("epochs", "samples_per_epoch", "patches_per_image", "batch_size")
    return {k: train.get(k) for k in keep} | {
        "patch_size": train["preprocess"]["patch_size"],
        "scale": train["preprocess"].get("scale", 1.0),
    }


def _reasons(workflow: Path) -> list[str]:
    words = ("epochs:", "samples_per_epoch:", "scale:", "patch_size:")
    return [line.strip() for line in workflow.read_text().splitlines() if line.strip().startswith(words)]


def _run_figures(folder: Path) -> dict[str, object]:
    run_dir = next((folder / "runs").iterdir())
    epochs = [json.loads(x) for x in (run_dir / "ray-train" / "progress.jsonl").read_text().splitlines()]
    report = pd.read_parquet(run_dir / "report.parquet")
    test = report[report["split"] == "test"]
    fg = test[test["label_fg_fraction"] > 0]
    return {
        "epochs_trained": len(epochs),
        "val_fg_dice_by_epoch": [round(e["val_fg_dice"], 4) for e in epochs],
        "val_dice_by_epoch": [round(e["val_dice"], 4) for e in epochs],
        "heldout_cases": len(test),
        "heldout_fg_dice": round(float(fg["dice"].mean()), 4) if len(fg) else None,
        "heldout_clean_flagged": int(((test["label_fg_fraction"] == 0) & (test["fg_fraction"] > 0)).sum()),
        "heldout_clean": int((test["label_fg_fraction"] == 0).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(BUDGETS))
    parser.add_argument("--run", action="store_true", help="run each planned workflow too")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, make in (("archive", make_archive), ("photos", make_photos)):
        if args.only not in (None, name):
            continue
        root = OUT / name
        if not root.exists():
            make(root)
        images = root / "train" if name == "archive" else root
        budget = BUDGETS[name]
        plan_s = _segops(
            ["plan", str(images), "-o", "plan/workflow.yaml", "--budget-minutes", str(budget)],
            root,
            root / "plan.log",
        )
        row = {"budget_minutes": budget, "plan_s": round(plan_s, 1)} | _planned(root / "plan" / "workflow.yaml")
        row["reasons"] = _reasons(root / "plan" / "workflow.yaml")
        if args.run:
            row["run_s"] = round(_segops(["run", "plan/workflow.yaml"], root, root / "run.log"), 1)
            row |= _run_figures(root)
        result[name] = row
        print(json.dumps({name: row}, indent=2))
    (OUT / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

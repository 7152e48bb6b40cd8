"""Folders with the quirks real archives have, run the README's way: ``segops plan DIR`` then
``segops run`` on the planned file unedited (each in a subprocess, as a new user types them).

Per folder: whether the plan and the run finished, what the plan chose (task, classes, epochs and
the seconds per epoch it planned), what the run gave (outputs, failed cases, the held-out headline
figure) and the seconds per epoch the training took (median of ``ray-train/progress.jsonl``).
Folders (``--cases``, default all):

- ``mixed``: 40 photos of 150-260 px and 6 crops of 24-48 px; gray, RGB, RGBA and 16-bit PNGs;
  unicode names; masks saved 0/1 by one tool and 0/255 by another (never both in one file);
- ``unsampled-class``: 420 masks; class value 2 in one of them only, outside the 300 the plan samples;
- ``kaggle``: ``train/`` + ``valid/`` with ``images/`` + ``masks/``, ``test/images`` without masks;
- ``jpeg01``: 0/1 masks saved as JPEG (compression noise makes 2s);
- ``instances``: 24 PennFudan-like photos (180-260 x 240-320 px, 0-4 objects, instance-id PNGs):
  Mask R-CNN, where the planned epoch time is checked against the run's.

    .venv/bin/python benchmarks/new_user.py                       # every folder (~20 min on 2 cores)
    .venv/bin/python benchmarks/new_user.py --cases mixed kaggle --budget-minutes 1.5

Writes ``benchmarks/out/new_user/<case>/`` (data, plan, run) and ``benchmarks/out/new_user.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "new_user"
SEGOPS = [sys.executable, "-m", "segops.cli"]


def _disc_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, max(5, min(h, w) // 5))
    return ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)


def make_mixed(root: Path, rng: np.random.Generator) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(46):
        small = i % 7 == 0
        h, w = (int(rng.integers(24, 48)), int(rng.integers(24, 48))) if small else tuple(rng.integers(150, 260, 2))
        m = _disc_mask(h, w, rng) if i % 3 else np.zeros((h, w), np.uint8)
        img = np.clip(rng.normal(90, 15, (h, w)) + 60 * m, 0, 255)
        name = f"part {i:03d}" + ("-é" if i % 5 == 0 else "")
        gray = img.astype(np.uint8)
        mode = i % 4
        if mode == 0:
            Image.fromarray(gray, "L").save(root / "images" / f"{name}.png")
        elif mode == 1:
            Image.fromarray(np.repeat(gray[..., None], 3, -1), "RGB").save(root / "images" / f"{name}.png")
        elif mode == 2:
            rgba = np.concatenate([np.repeat(gray[..., None], 3, -1), np.full((h, w, 1), 255, np.uint8)], -1)
            Image.fromarray(rgba, "RGBA").save(root / "images" / f"{name}.png")
        else:
            Image.fromarray((img * 257).astype(np.uint16)).save(root / "images" / f"{name}.png")
        Image.fromarray(m * (255 if i % 2 else 1)).save(root / "masks" / f"{name}.png")


def make_unsampled_class(root: Path, rng: np.random.Generator) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(420):
        m = np.zeros((40, 40), np.uint8)
        m[10:20, 10:20] = 1
        if i == 407:
            m[25:30, 25:30] = 2
        img = rng.normal(100, 10, (40, 40)) + 50 * (m == 1) - 40 * (m == 2)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"c{i:03d}.png")
        Image.fromarray(m).save(root / "masks" / f"c{i:03d}.png")


def make_kaggle(root: Path, rng: np.random.Generator) -> None:
    for split, n, masked in (("train", 30, True), ("valid", 8, True), ("test", 10, False)):
        (root / split / "images").mkdir(parents=True)
        if masked:
            (root / split / "masks").mkdir()
        for i in range(n):
            m = np.zeros((96, 96), np.uint8)
            if i % 2:
                y, x = rng.integers(10, 70, 2)
                m[y : y + 15, x : x + 15] = 255
            img = rng.normal(120, 15, (96, 96, 3)) - 60 * (m[..., None] > 0)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / split / "images" / f"{i:03d}.jpg")
            if masked:
                Image.fromarray(m).save(root / split / "masks" / f"{i:03d}.png")


def make_jpeg01(root: Path, rng: np.random.Generator) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(40):
        m = np.zeros((96, 96), np.uint8)
        y, x = rng.integers(5, 70, 2)
        m[y : y + 16, x : x + 20] = 1
        img = rng.normal(100, 12, (96, 96)) + 70 * m
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / f"s{i:03d}.png")
        Image.fromarray(m).save(root / "masks" / f"s{i:03d}.jpg", quality=90)


def make_instances(root: Path, rng: np.random.Generator) -> None:
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    for i in range(24):
        h, w = int(rng.integers(180, 260)), int(rng.integers(240, 320))
        img, ids = rng.normal(110, 20, (h, w, 3)), np.zeros((h, w), np.uint8)
        for j in range(1, (0 if i % 5 == 0 else int(rng.integers(1, 5))) + 1):
            y, x = int(rng.integers(5, h - 60)), int(rng.integers(5, w - 30))
            hh, ww = int(rng.integers(30, 60)), int(rng.integers(12, 25))
            ids[y : y + hh, x : x + ww] = j
            img[y : y + hh, x : x + ww] = rng.normal(40 + 40 * j, 10, 3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "PNGImages" / f"FudanPed{i:05d}.png")
        Image.fromarray(ids).save(root / "PedMasks" / f"FudanPed{i:05d}_mask.png")


CASES = {
    "mixed": make_mixed,
    "unsampled-class": make_unsampled_class,
    "kaggle": make_kaggle,
    "jpeg01": make_jpeg01,
    "instances": make_instances,
}


def _segops(args: list[str], cwd: Path, log: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run([*SEGOPS, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - start


def run_case(name: str, budget: float, seed: int) -> dict[str, Any]:
    folder = OUT / name
    data = folder / "data"
    if not (folder / "made").exists():
        shutil.rmtree(folder, ignore_errors=True)
        CASES[name](data, np.random.default_rng(seed))
        (folder / "made").touch()
    plan_dir = folder / "plan"
    rc, plan_s = _segops(
        ["plan", str(data), "-o", str(plan_dir / "workflow.yaml"), "--budget-minutes", str(budget)],
        folder,
        folder / "plan.log",
    )
    row: dict[str, Any] = {"case": name, "plan_rc": rc, "plan_s": round(plan_s, 1)}
    if rc != 0:
        return row | {"plan_error": (folder / "plan.log").read_text()[-600:]}
    doc = yaml.safe_load((plan_dir / "workflow.yaml").read_text())
    train = next(s for s in doc["steps"] if s["step"] == "train")
    text = (plan_dir / "workflow.yaml").read_text()
    planned = next((line for line in text.splitlines() if line.strip().startswith("epochs:")), "")
    row |= {
        "arch": train["model"]["arch"],
        "classes": train["model"]["classes"],
        "labels": doc["steps"][0]["source"]["labels"],
        "epochs": train["epochs"],
        "planned_epoch_s": float(planned.split("~")[1].split(" s/epoch")[0]) if "~" in planned else None,
    }
    rc, run_s = _segops(["run", "workflow.yaml"], plan_dir, folder / "run.log")
    row |= {"run_rc": rc, "run_s": round(run_s, 1)}
    runs = sorted((plan_dir / "runs").glob("*/outputs.parquet"), key=lambda p: p.stat().st_mtime)
    if rc != 0 or not runs:
        return row | {"run_error": (folder / "run.log").read_text()[-600:]}
    run_dir = runs[-1].parent
    outputs = pd.read_parquet(run_dir / "outputs.parquet", columns=["rel_path", "has_label"])
    failed = run_dir / "segment-quarantine.parquet"
    progress = run_dir / "ray-train" / "progress.jsonl"
    epochs = (
        [json.loads(line)["epoch_seconds"] for line in progress.read_text().splitlines()] if progress.exists() else []
    )
    report = pd.read_parquet(run_dir / "report.parquet")
    test = report[report["split"] == "test"] if "split" in report else report.iloc[0:0]
    headline = "matched_dice" if "matched_dice" in report else "dice"
    return row | {
        "outputs": len(outputs),
        "unlabelled_outputs": int((~outputs["has_label"].astype(bool)).sum()),
        "failed": len(pd.read_parquet(failed)) if failed.exists() else 0,
        "ingest_quarantined": len(pd.read_parquet(run_dir / "quarantine.parquet")),
        f"heldout_{headline}_mean": round(float(test[headline].mean()), 4) if len(test) else None,
        "measured_epoch_s": round(statistics.median(epochs[2:] or epochs), 2) if epochs else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--budget-minutes", type=float, default=1.5, help="each plan's training budget")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.cases:
        rows.append(run_case(name, args.budget_minutes, args.seed))
        print(json.dumps(rows[-1], default=str), flush=True)
    (ROOT / "out" / "new_user.json").write_text(json.dumps(rows, indent=2, default=str))
    print(
        "\n| folder | plan | model, classes | run | outputs (unlabelled) | failed | held-out "
        "| epoch s planned / taken |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        held = next((f"{k[8:]} {v}" for k, v in r.items() if k.startswith("heldout_") and v is not None), "-")
        print(
            f"| {r['case']} | {'ok' if r['plan_rc'] == 0 else 'failed'} "
            f"| {r.get('arch', '-')}, {r.get('classes', '-')} "
            f"| {'ok' if r.get('run_rc') == 0 else 'failed' if 'run_rc' in r else '-'} "
            f"| {r.get('outputs', '-')} ({r.get('unlabelled_outputs', '-')}) | {r.get('failed', '-')} | {held} "
            f"| {r.get('planned_epoch_s', '-')} / {r.get('measured_epoch_s', '-')} |"
        )


if __name__ == "__main__":
    main()

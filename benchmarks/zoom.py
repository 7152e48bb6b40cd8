"""Does scale augmentation (``augment.zoom``, nnU-Net's 0.7-1.4) carry a model to another scanner's
pixel size? Thorax slices whose anatomy is the same in mm and drawn at each patient's own pixel size.

Each patient is a body outline with two lungs and a spinal cord (classes body 1, lung 2, cord 3;
12 slices, the lungs tapering to the apex and the base) on a 160 px slice, drawn at a scale of its
own: the archive's patients at 0.85-1.15 (one scanner's range of fields of view), the fresh ones
at 0.62-0.75 and 1.3-1.45 (a scanner with a larger or smaller field of view). Windowed CT as PNG,
masks beside. The archive is planned the README's way and run twice from that file per seed: as
planned, and with ``augment.zoom: {}`` (0.7-1.4 with probability 0.2, nnU-Net's setting) — the same
epochs, since zoom costs no measurable time per patch. Each run's workflow gains a second segment
step over the fresh patients (never trained on), without postprocessing, so each run reports the
held-out (test split) Dice and the fresh patients' Dice, over all cases and per size.

    .venv/bin/python benchmarks/zoom.py                      # 2 seeds x 2 arms, ~16 min on 2 cores
    .venv/bin/python benchmarks/zoom.py --split-seeds 0 --budget-minutes 2

Writes ``benchmarks/out/zoom/`` and ``benchmarks/out/zoom.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _runs import arm_args, plan, run_in, with_fresh_segment
from PIL import Image

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "zoom"
SIZE, SLICES = 160, 12


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def patient_slices(f: float, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """One patient drawn at scale ``f`` (pixels per mm of the base size): its 12 slices as (HU,
    class map) pairs of 160x160 (body 1, lungs 2, cord 3)."""
    cy, cx = SIZE / 2 + rng.normal(0, 3), SIZE / 2 + rng.normal(0, 3)
    body = (34 + rng.normal(0, 2)) * f, (40 + rng.normal(0, 2)) * f
    lung = (20 + rng.normal(0, 1.5)) * f, (11 + rng.normal(0, 1)) * f
    slices = []
    for k in range(SLICES):
        taper = 1 - abs(k - SLICES / 2) / SLICES
        mask = np.zeros((SIZE, SIZE), np.uint8)
        hu = np.full((SIZE, SIZE), -1000.0)
        inside = _ellipse(cy, cx, *body)
        mask[inside], hu[inside] = 1, 40
        for side in (1, -1):
            lungs = _ellipse(cy - 4 * f, cx + side * 18 * f, lung[0] * taper, lung[1] * taper)
            mask[lungs], hu[lungs] = 2, -820
        hu[_ellipse(cy + 25 * f, cx, 6 * f, 6 * f)] = 700  # the vertebra around the cord
        cord = _ellipse(cy + 25 * f, cx, 3 * f, 3 * f)
        mask[cord], hu[cord] = 3, 30
        slices.append((hu + rng.normal(0, 25, hu.shape), mask))
    return slices


def make_patients(root: Path, scales: list[float], rng: np.random.Generator, first: int = 1) -> None:
    """``root/pNNN_sKK.png`` + ``root/pNNN_sKK_mask.png`` (classes 0-3), one patient per scale."""
    root.mkdir(parents=True, exist_ok=True)
    for p, f in enumerate(scales, start=first):
        for k, (hu, mask) in enumerate(patient_slices(f, rng)):
            pixels = ((hu + 1000) / 1400 * 255).clip(0, 255).astype(np.uint8)  # window [-1000, 400] HU
            stem = f"p{p:03d}_s{k:02d}"
            Image.fromarray(pixels).save(root / f"{stem}.png")
            Image.fromarray(mask).save(root / f"{stem}_mask.png")


def _dice(report: pd.DataFrame) -> float | None:
    return round(float(report["dice"].mean()), 4) if len(report) else None


def run_arm(name: str, planned: dict[str, Any], zoom: bool, fresh: Path, small: set[str], seed: int) -> dict:
    """The planned workflow (``augment.zoom: {}`` if ``zoom``), split seed ``seed``, and a second
    segment step over ``fresh``, run in its folder; ``small``: the fresh patients drawn small."""
    doc = with_fresh_segment(planned, fresh)
    doc["name"] = f"zoom-{name}"
    train = next(s for s in doc["steps"] if s["step"] == "train")
    train["split"]["seed"] = seed
    if zoom:
        train.setdefault("augment", {})["zoom"] = {}
    row, reports = run_in(OUT / name, doc)
    return {"arm": name, "zoom": zoom, "seed": seed} | row | arm_scores(reports, small)


def arm_scores(reports: list[pd.DataFrame], small: set[str]) -> dict[str, float | None]:
    """Held-out (test split) Dice of a run's first segment step, and the fresh patients' Dice of its
    second, over all of them and per size group (``small``: the patients drawn small); {} if it failed."""
    if not reports:
        return {}
    heldout, tomorrow = reports
    is_small = tomorrow["rel_path"].str[:4].isin(small)
    return {
        "heldout_dice": _dice(heldout[heldout["split"] == "test"]),
        "fresh_dice": _dice(tomorrow),
        "fresh_small_dice": _dice(tomorrow[is_small]),
        "fresh_large_dice": _dice(tomorrow[~is_small]),
    }


def cohorts_planned(
    out: Path, description: str, write: Callable[..., None]
) -> tuple[argparse.Namespace, dict[str, Any], Path, set[str]]:
    """Parse the arguments, write the archive's patients (scales 0.85-1.15) and as many fresh ones
    (half at 0.62-0.75, half at 1.3-1.45) with ``write(root, scales, rng, first=…)`` under a fresh
    ``out``, and plan the archive: (arguments, planned workflow, fresh folder, fresh patients drawn small)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--patients", type=int, default=10, help="in the archive; as many fresh ones")
    args = arm_args(parser, budget_minutes=3.0)
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    archive, fresh, n = out / "archive", out / "fresh", args.patients
    write(archive, list(rng.uniform(0.85, 1.15, n)), rng)
    scales = list(rng.uniform(0.62, 0.75, n // 2)) + list(rng.uniform(1.3, 1.45, n - n // 2))
    write(fresh, scales, rng, first=n + 1)
    small = {f"p{p:03d}" for p in range(n + 1, n + 1 + n // 2)}
    return args, plan(archive, out, args.budget_minutes), fresh, small


def main() -> None:
    args, planned, fresh, small = cohorts_planned(OUT, __doc__.split("\n\n")[0], make_patients)
    rows = []
    for seed in args.split_seeds:
        for zoom in (False, True):
            rows.append(run_arm(f"{'zoom' if zoom else 'planned'}-{seed}", planned, zoom, fresh, small, seed))
            print(json.dumps(rows[-1]), flush=True)
    (ROOT / "out" / "zoom.json").write_text(json.dumps(rows, indent=2))
    print("\n| arm | split seed | held-out Dice | fresh patients Dice | drawn small (0.62-0.75) | large (1.3-1.45) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {'planned + zoom' if r['zoom'] else 'planned'} | {r['seed']} | {r.get('heldout_dice')} "
            f"| {r.get('fresh_dice')} | {r.get('fresh_small_dice')} | {r.get('fresh_large_dice')} |"
        )


if __name__ == "__main__":
    main()

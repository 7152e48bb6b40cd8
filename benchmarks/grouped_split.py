"""Does the held-out figure tell what a new part will get? Images of one part split by image vs by folder.

An inspection archive in KolektorSDD's layout: one folder per part (``part007/view3.png`` +
``view3_label.png``), each part photographed from several sides (a view: the part shifted by up to
16 px, its own lighting and noise). The views of a part share its surface (a machining texture of
its own), its stains (round marks and short straight scratches, not defects) and its defect (a long
wandering crack, on about half the parts). The run is planned the README's way (``segops plan``,
which keeps each folder whole: ``group_by: folder``) and run from that file twice per split seed,
once as planned and once with ``group_by: file`` (every image its own group, as before). Each
run's workflow gains a second segment step over as many fresh parts from the same generator
(never trained on, never in any split), so each run reports:

- held-out (test split) Dice over every case and over the cases with a defect;
- the same over the fresh parts: what the archive of tomorrow gets;
- the gap between the two: how far the held-out figure flatters the model.

Both segment steps leave the stored postprocessing off (``postprocess: false``): it is chosen on
the split's validation cases too, and the comparison is of the split alone.

    .venv/bin/python benchmarks/grouped_split.py                       # 2 split seeds, ~20 min on 2 cores
    .venv/bin/python benchmarks/grouped_split.py --split-seeds 0 1 2 --budget-minutes 2

Writes ``benchmarks/out/grouped_split/`` and ``benchmarks/out/grouped_split.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _runs import arm_args, plan, run_in, with_fresh_segment
from PIL import Image

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "grouped_split"
SIZE = 128


def _surface(rng: np.random.Generator) -> np.ndarray:
    """A part's machined surface: two gratings of the part's own angle and pitch, its own brightness."""
    yy, xx = np.mgrid[: SIZE + 32, : SIZE + 32].astype(np.float32)
    out = np.full(yy.shape, rng.uniform(100, 160), np.float32)
    for _ in range(2):
        angle, pitch = rng.uniform(0, np.pi), rng.uniform(4, 14)
        out += rng.uniform(6, 16) * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / pitch)
    return out


def _marks(rng: np.random.Generator, cracked: bool, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """(darkening, defect mask) over the part: 2-4 stains (round, or short straight scratches: not
    defects), and a long wandering crack on a cracked part, each ``contrast`` gray levels dark."""
    yy, xx = np.mgrid[: SIZE + 32, : SIZE + 32]
    dark = np.zeros(yy.shape, np.float32)
    for _ in range(int(rng.integers(2, 5))):  # stains: round, or short straight scratches
        cy, cx, r = *rng.integers(20, SIZE + 12, 2), rng.uniform(3, 7)
        if rng.random() < 0.5:
            dark += contrast * ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)
        else:
            angle, length = rng.uniform(0, np.pi), rng.uniform(6, 14)
            along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
            across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
            dark += contrast * ((np.abs(along) < length) & (np.abs(across) < 1.2))
    crack = np.zeros(yy.shape, bool)
    if cracked:
        y, x = (float(v) for v in rng.integers(30, SIZE, 2))
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(25, 50))):
            heading += rng.normal(0, 0.35)
            y, x = y + np.sin(heading), x + np.cos(heading)
            iy, ix = int(round(y)), int(round(x))
            crack[max(0, iy - 1) : iy + 1, max(0, ix - 1) : ix + 1] = True
        dark += contrast * crack
    return dark, crack


def make_parts(
    root: Path, parts: int, views: int, rng: np.random.Generator, first: int = 1, contrast: float = 30
) -> None:
    """``parts`` part folders of ``views`` views each: a view is the part shifted by up to 16 px, with
    its own lighting and sensor noise; masks 0/255 named ``<view>_label.png``."""
    for p in range(first, first + parts):
        folder = root / f"part{p:03d}"
        folder.mkdir(parents=True)
        surface = _surface(rng)
        dark, crack = _marks(rng, rng.random() < 0.5, contrast)
        for v in range(views):
            dy, dx = rng.integers(0, 32, 2)
            window = (slice(dy, dy + SIZE), slice(dx, dx + SIZE))
            image = (surface - dark)[window] * rng.uniform(0.85, 1.15) + rng.normal(0, 6, (SIZE, SIZE))
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"view{v}.png")
            Image.fromarray((crack[window] * 255).astype(np.uint8)).save(folder / f"view{v}_label.png")


def _scores(report: pd.DataFrame) -> dict[str, float | int | None]:
    fg = report[report["label_fg_fraction"] > 0]
    return {
        "cases": len(report),
        "dice": round(float(report["dice"].mean()), 4) if len(report) else None,
        "fg_cases": len(fg),
        "fg_dice": round(float(fg["dice"].mean()), 4) if len(fg) else None,
    }


def run_arm(name: str, planned: dict[str, Any], group_by: str, fresh: Path, seed: int) -> dict[str, Any]:
    """The planned workflow with ``group_by``, split seed ``seed`` and a second segment step over
    ``fresh``, run in its folder."""
    doc = with_fresh_segment(planned, fresh)
    doc["name"] = f"parts-{name}"
    for source in (s["source"] for s in doc["steps"] if "source" in s):
        source["group_by"] = group_by
    next(s for s in doc["steps"] if s["step"] == "train")["split"]["seed"] = seed
    folder = OUT / name
    row, reports = run_in(folder, doc)
    row = {"arm": name, "group_by": group_by, "seed": seed} | row
    if not reports:
        return row
    run_dir = sorted((folder / "runs").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)[-1].parent
    split = json.loads((run_dir / "split.json").read_text())
    heldout, tomorrow = _scores(reports[0][reports[0]["split"] == "test"]), _scores(reports[1])
    gap = {
        f"gap_{k}": round(heldout[k] - tomorrow[k], 4)
        for k in ("dice", "fg_dice")
        if heldout[k] is not None and tomorrow[k] is not None
    }
    return (
        row
        | {"test_groups": len(split["test"]), "val_groups": len(split["val"])}
        | {f"heldout_{k}": v for k, v in heldout.items()}
        | {f"fresh_{k}": v for k, v in tomorrow.items()}
        | gap
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=16, help="parts in the archive (and as many fresh ones)")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--contrast", type=float, default=30, help="gray levels a crack or stain darkens")
    args = arm_args(parser, budget_minutes=4.0)
    if OUT.exists():
        import shutil

        shutil.rmtree(OUT)
    rng = np.random.default_rng(args.seed)
    archive, fresh = OUT / "archive", OUT / "fresh"
    make_parts(archive, args.parts, args.views, rng, contrast=args.contrast)
    make_parts(fresh, args.parts, args.views, rng, first=args.parts + 1, contrast=args.contrast)
    planned = plan(archive, OUT, args.budget_minutes)
    chosen = next(s for s in planned["steps"] if s["step"] == "ingest")["source"].get("group_by", "file")
    print(f"segops plan chose group_by: {chosen}", flush=True)
    rows = []
    for seed in args.split_seeds:
        for group_by in ("folder", "file"):
            rows.append(run_arm(f"{group_by}-{seed}", planned, group_by, fresh, seed))
            print(json.dumps(rows[-1]), flush=True)
    (ROOT / "out" / "grouped_split.json").write_text(json.dumps({"planned_group_by": chosen, "rows": rows}, indent=2))
    print("\n| split by | split seed | test groups | held-out Dice (fg) | fresh parts Dice (fg) | gap (fg) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['group_by']} | {r['seed']} | {r.get('test_groups', '-')} "
            f"| {r.get('heldout_dice')} ({r.get('heldout_fg_dice')}) "
            f"| {r.get('fresh_dice')} ({r.get('fresh_fg_dice')}) | {r.get('gap_dice')} ({r.get('gap_fg_dice')}) |"
        )
    for group_by in ("folder", "file"):
        arm = pd.DataFrame([r for r in rows if r["group_by"] == group_by and r["run_rc"] == 0])
        if len(arm):
            means = {k: round(float(arm[k].mean()), 4) for k in ("gap_dice", "gap_fg_dice") if k in arm}
            spread = {k: round(float(arm[k].std(ddof=0)), 4) for k in means}
            print(f"{group_by}: mean gap {means}, spread (sd) {spread} over {len(arm)} split seed(s)")


if __name__ == "__main__":
    main()

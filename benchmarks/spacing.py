"""Does resampling to a target spacing (``preprocess.spacing``, nnU-Net's) carry a model to another
scanner's pixel size? ``zoom.py``'s thorax patients, stored as NIfTI volumes with their pixel size.

The same patients as ``zoom.py`` (body 1, lungs 2, cord 3; 12 slices of 160 px; the anatomy the
same in mm, each patient drawn at a scale of its own), written as ``pNNN.nii.gz`` +
``pNNN_seg.nii.gz`` whose affine gives each patient's pixel spacing (1 / scale mm) and 5 mm slices:
the archive at 0.87-1.18 mm (scales 0.85-1.15), the fresh patients at 1.33-1.61 mm (0.62-0.75) and
0.69-0.77 mm (1.3-1.45). The archive is planned the README's way (the plan sees known, varying
spacing and writes ``preprocess.spacing`` at the median) and run twice from that file per split
seed: as planned, and with ``preprocess.spacing`` removed (images at their own spacing), the same
epochs. Each run also segments the fresh patients (never trained on) without postprocessing; both
segment steps score slices (``records: slices``), as ``zoom.py`` does.

    .venv/bin/python benchmarks/spacing.py                    # 2 seeds x 2 arms, ~20 min on 2 cores
    .venv/bin/python benchmarks/spacing.py --split-seeds 0

Writes ``benchmarks/out/spacing/`` and ``benchmarks/out/spacing.json``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from _runs import run_in, with_fresh_segment
from zoom import arm_scores, cohorts_planned, patient_slices

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "spacing"
SLICE_MM = 5.0


def make_volumes(root: Path, scales: list[float], rng: np.random.Generator, first: int = 1) -> None:
    """``root/pNNN.nii.gz`` (HU) + ``root/pNNN_seg.nii.gz``, one patient per scale, its pixels
    1 / scale mm (the base drawing is 1 px per mm)."""
    import nibabel as nib

    root.mkdir(parents=True, exist_ok=True)
    for p, f in enumerate(scales, start=first):
        slices = patient_slices(f, rng)
        affine = np.diag([1 / f, 1 / f, SLICE_MM, 1.0])
        hu = np.stack([s[0].T for s in slices], axis=-1).astype(np.int16)  # slice k = A[:, :, k].T
        seg = np.stack([s[1].T for s in slices], axis=-1)
        nib.save(nib.Nifti1Image(hu, affine), root / f"p{p:03d}.nii.gz")
        nib.save(nib.Nifti1Image(seg, affine), root / f"p{p:03d}_seg.nii.gz")


def run_arm(name: str, planned: dict[str, Any], resample: bool, fresh: Path, small: set[str], seed: int) -> dict:
    """The planned workflow (without ``preprocess.spacing`` unless ``resample``), split seed
    ``seed``, and a second segment step over ``fresh``; ``small``: the fresh patients drawn small."""
    doc = with_fresh_segment(copy.deepcopy(planned), fresh)
    doc["name"] = f"spacing-{name}"
    train = next(s for s in doc["steps"] if s["step"] == "train")
    train["split"]["seed"] = seed
    if not resample:
        train["preprocess"].pop("spacing", None)
    for step in doc["steps"]:
        if step["step"] == "segment":
            step["records"] = "slices"  # Dice per slice, as zoom.py's PNG slices are scored
    row, reports = run_in(OUT / name, doc)
    arm = {"arm": name, "resample": resample, "seed": seed, "spacing": train["preprocess"].get("spacing")}
    return arm | row | arm_scores(reports, small)


def main() -> None:
    args, planned, fresh, small = cohorts_planned(OUT, __doc__.split("\n\n")[0], make_volumes)
    train = next(s for s in planned["steps"] if s["step"] == "train")
    if "spacing" not in train["preprocess"]:
        raise SystemExit(f"the plan wrote no preprocess.spacing: {train['preprocess']}")
    rows = []
    for seed in args.split_seeds:
        for resample in (True, False):
            name = f"{'planned' if resample else 'own-spacing'}-{seed}"
            rows.append(run_arm(name, planned, resample, fresh, small, seed))
            print(json.dumps(rows[-1]), flush=True)
    (ROOT / "out" / "spacing.json").write_text(json.dumps(rows, indent=2))
    print("\n| arm | split seed | held-out Dice | fresh patients Dice | small (1.33-1.61 mm) | large (0.69-0.77 mm) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        arm = f"planned (spacing {r['spacing']})" if r["resample"] else "images at their own spacing"
        print(
            f"| {arm} | {r['seed']} | {r.get('heldout_dice')} | {r.get('fresh_dice')} "
            f"| {r.get('fresh_small_dice')} | {r.get('fresh_large_dice')} |"
        )


if __name__ == "__main__":
    main()

"""bfloat16 against float32 inference on a CPU: the speed, and what it does to trained models' masks.

A segment step's ``amp`` (on by default) runs semantic inference under bfloat16 autocast on a CPU
with bfloat16 in hardware (:mod:`segops.engine.precision`). This benchmark takes finished segops
runs (each with a test split), decodes their held-out cases as the run's ingest did
(:func:`_isbi_heldout.heldout_cases`: the ingest source, the train step's split) and segments them
through the engine's per-case path (:func:`segops.engine.cases.segment_cases`, with the run's
segment step's mirroring, sliding window and boundary class, postprocessing on) twice, ``amp`` off
and on, in ``--rounds`` interleaved rounds in this process. Per run: ms per image of each, their
ratio, the share of pixels whose class differs, and the held-out Dice and pixel error of each.

    .venv/bin/python benchmarks/precision.py --runs benchmarks/out/nnunet/segops/runs/<run> ...
    .venv/bin/python benchmarks/precision.py --quickstart        # trains workflows/quickstart.yaml first

Figures go to ``--out`` (default ``benchmarks/out/precision.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _isbi_heldout import derive, heldout_cases, run_segops, step_of, validated  # noqa: E402

from segops.config.schema import TTASpec  # noqa: E402
from segops.engine.cases import CaseResult, InferenceSettings, segment_cases  # noqa: E402
from segops.engine.checkpoint import load_checkpoint  # noqa: E402
from segops.engine.precision import cpu_has_bf16  # noqa: E402
from segops.metrics import case_scores  # noqa: E402

OUT = Path(__file__).parent / "out"
QUICKSTART = Path(__file__).resolve().parents[1] / "workflows" / "quickstart.yaml"
BATCH = 4


def settings_of(spec: Any, amp: bool, flip_axes: tuple[int, ...] | None) -> InferenceSettings:
    """The run's last segment step's inference settings (mirroring, sliding window, boundary class)
    with ``amp`` as given and ``flip_axes`` (when not None) instead of the step's mirroring; no
    risk, no measurements (the prediction alone is compared)."""
    segment = [s for s in spec.steps if s.step == "segment"][-1]
    tta = segment.tta if flip_axes is None else TTASpec(flip_axes=flip_axes)
    return InferenceSettings(
        amp=amp,
        sliding=segment.sliding_window,
        boundary_class=segment.boundary_class,
        tta=tta,
        risk=False,
        measure=False,
    )


def compare_run(run_dir: Path, rounds: int, flip_axes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """float32 and bfloat16 inference of one finished run's model on its held-out cases."""
    spec = validated(yaml.safe_load((run_dir / "workflow.yaml").read_text()))
    _, cases = heldout_cases(spec)
    loaded = load_checkpoint(run_dir / "model")
    classes = loaded.model_spec.classes
    images = [c.image for c in cases]
    labels = [c.label for c in cases]
    maps: dict[str, list[np.ndarray]] = {}
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for r in range(rounds + 1):  # round 0 warms up (oneDNN's kernels for each shape) and is not timed
        for name, amp in (("float32", False), ("bfloat16", True)):
            settings = settings_of(spec, amp, flip_axes)
            start = time.perf_counter()
            out: list[np.ndarray] = []
            for i in range(0, len(images), BATCH):
                results = segment_cases(loaded, images[i : i + BATCH], labels[i : i + BATCH], settings)
                out.extend(_class_map(result) for result in results)
            if r:
                times[name].append((time.perf_counter() - start) / len(images) * 1000)
            maps[name] = out
    differ = sum(int((a != b).sum()) for a, b in zip(maps["float32"], maps["bfloat16"]))
    pixels = sum(m.size for m in maps["float32"])
    row: dict[str, Any] = {
        "run": str(run_dir),
        "arch": loaded.model_spec.arch,
        "cases": len(cases),
        "image_shape": list(images[0].shape),
        "flip_axes": list(settings_of(spec, True, flip_axes).tta.flip_axes),
        "pixels_differing": differ / pixels,
    }
    for name in times:
        scores = [case_scores(m, t, classes) for m, t in zip(maps[name], labels)]
        row[name] = {
            "ms_per_image": statistics.median(times[name]),
            "rounds_ms": times[name],
            "dice": float(np.nanmean([s["dice"] for s in scores])),
            "pixel_error": float(np.nanmean([s["pixel_error"] for s in scores])),
        }
    row["speed_ratio"] = row["float32"]["ms_per_image"] / row["bfloat16"]["ms_per_image"]
    return row


def _class_map(result: Any) -> np.ndarray:
    if not isinstance(result, CaseResult):
        raise SystemExit(f"a held-out case failed: {result}")
    return result.class_map


def train_quickstart() -> Path:
    """Run ``workflows/quickstart.yaml`` on its archive (seed 0), its runs, MLflow store and data
    under benchmarks/out/precision/quickstart; the run folder."""
    from segops.synth import make_ct_archive

    root = OUT / "precision" / "quickstart"
    data = root / "data"
    if not (data / "images").is_dir():
        make_ct_archive(data, series=6, slices=20, seed=0)  # what `segops synth ct --seed 0` makes
    recipe = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    doc = derive(recipe, recipe["name"], root)
    source = step_of(doc, "ingest")["source"]
    source["path"], source["labels"]["path"] = str(data / "images"), str(data / "labels")
    return run_segops(doc, root / "workflow.yaml", new_run=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="finished segops runs with a test split")
    parser.add_argument("--quickstart", action="store_true", help="also train and compare workflows/quickstart.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flip-axes", type=int, nargs="*", default=None, help="mirror along these axes instead")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: what each of 2 actors uses)")
    parser.add_argument("--out", type=Path, default=OUT / "precision.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not cpu_has_bf16():
        raise SystemExit("this CPU has no bfloat16 arithmetic (AMX, AVX512-BF16): amp leaves it in float32")
    runs = list(args.runs) + ([train_quickstart()] if args.quickstart else [])
    torch.set_num_threads(args.threads)
    rows = []
    for run_dir in runs:
        row = compare_run(run_dir, args.rounds, None if args.flip_axes is None else tuple(args.flip_axes))
        rows.append(row)
        f32, b16 = row["float32"], row["bfloat16"]
        print(
            f"{run_dir.name} ({row['arch']}, {row['cases']} cases {row['image_shape']}, mirrors {row['flip_axes']}): "
            f"{f32['ms_per_image']:.0f} -> {b16['ms_per_image']:.0f} ms/img ({row['speed_ratio']:.2f}x); "
            f"pixels differing {100 * row['pixels_differing']:.3f} %; Dice {f32['dice']:.4f} -> {b16['dice']:.4f}, "
            f"pixel error {f32['pixel_error']:.4f} -> {b16['pixel_error']:.4f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()

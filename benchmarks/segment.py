"""Archive segmentation throughput and memory: segops vs single-process loops.

All sides decode the same DICOM files with the same code, run the same U-Net (the quickstart
architecture, untrained: its noisy masks are the dearest case for the PNG encoder) and write
one mask PNG per slice. Two baselines, run in this process on the same files:

- **plain loop**: what a user's script does: decode, normalise, ``model(batch).argmax(1)``,
  ``PIL.Image.save`` (PIL's defaults). The goal is measured against this one.
- **engine loop**: segops' own engine in one process (``predict_masks``, atomic
  ``write_mask_png``): the ratio against it isolates what the Ray pipeline adds (decode and
  writing on one core while the other runs the model), apart from the engine's own speed-ups.

torch uses every core in both loops. segops streams Ray Data decode tasks into an actor pool.

The plain loop runs float32. The engine loop and segops run what a segment step runs by default
(``amp``: bfloat16 autocast on a CPU with bfloat16 in hardware, see
:mod:`segops.engine.precision`); their masks are then compared with the plain loop's pixel by
pixel (the share of pixels that agree). ``--fp32`` turns ``amp`` off, and every mask must then be
byte-for-byte the plain loop's.

``--risk-cost``: after the 1x runs, the engine loop and segops 1x with the per-case risk off, on,
and on with the embedding distance (:func:`risk_cost`), ``--risk-reps`` times each, interleaved so
that warm-up and the machine's drift weigh on every setting, and the cost in % of the median
images/s without them. The figures go
to ``--out`` (default ``benchmarks/out/segment.json``).

    .venv/bin/python benchmarks/segment.py --slices 600 --scale 10
    .venv/bin/python benchmarks/segment.py --slices 600 --scale 10 --fp32
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _measure import PeakRSS, gib, rate  # noqa: E402

from segops.cluster.datasets import read_source  # noqa: E402
from segops.cluster.infer import segment_dataset, size_actor_pool  # noqa: E402
from segops.cluster.runtime import ensure_ray  # noqa: E402
from segops.config.schema import (
    ActorPoolSpec,
    ClusterSpec,
    DicomSource,
    PreprocessSpec,
    UNetSpec,
    WindowIntensity,
)  # noqa: E402
from segops.data.decode import decode_file, list_source_files  # noqa: E402
from segops.data.transforms import pad_to_multiple, prepare_image  # noqa: E402
from segops.engine.cases import InferenceSettings, segment_cases  # noqa: E402
from segops.engine.checkpoint import LoadedModel, load_checkpoint, save_checkpoint  # noqa: E402
from segops.engine.embeddings import EmbeddingReference, embed  # noqa: E402
from segops.engine.precision import cpu_has_bf16  # noqa: E402
from segops.engine.predict import predict_masks  # noqa: E402
from segops.engine.risk import RiskReference  # noqa: E402
from segops.models import build_model  # noqa: E402
from segops.outputs.case_outputs import OutputConfig  # noqa: E402
from segops.outputs.masks import mask_relpath, write_mask_png  # noqa: E402
from segops.synth import make_ct_archive  # noqa: E402

OUT = Path(__file__).parent / "out" / "segment"
BATCH = 16
SIZE = 256  # px; CT is usually 512, inspection photos larger still


def make_inputs(slices: int, seed: int) -> DicomSource:
    root = OUT / f"archive-{slices}-{SIZE}px"
    if not (root / "images").is_dir():
        make_ct_archive(root, series=max(1, slices // 20), slices=min(20, slices), seed=seed, size=SIZE)
    return DicomSource(kind="dicom", path=root / "images")


def make_checkpoint() -> Path:
    spec = UNetSpec(
        arch="unet", in_channels=1, classes=2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2
    )
    pre = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=-160, upper=240), patch_size=(96, 96))
    torch.manual_seed(0)
    return save_checkpoint(OUT / "model", build_model(spec), spec, pre)


def _batches(source: DicomSource):
    """Decoded ``ok`` rows of ``source``, BATCH at a time (one process)."""
    batch: list[dict] = []
    files = list_source_files(source)
    for i, f in enumerate(files):
        batch.extend(r for r in decode_file(f["path"], f["rel_path"], source) if r["status"] == "ok")
        if len(batch) >= BATCH or (i == len(files) - 1 and batch):
            yield batch
            batch = []


def plain_loop(source: DicomSource, checkpoint: Path, out: Path) -> int:
    """A user's script: decode → normalise → model → argmax → PIL save, torch on every core."""
    loaded = load_checkpoint(checkpoint)
    n = 0
    with torch.inference_mode():
        for batch in _batches(source):
            x = np.stack(
                [
                    pad_to_multiple(
                        prepare_image(r["image"], loaded.preprocess.intensity, 1), loaded.model_spec.size_divisor
                    )
                    for r in batch
                ]
            )
            labels = loaded.model(torch.from_numpy(x)).argmax(dim=1).to(torch.uint8).numpy()
            for row, label in zip(batch, labels):
                path = out / mask_relpath(row["rel_path"], row["frame"])
                path.parent.mkdir(parents=True, exist_ok=True)
                h, w = row["image"].shape[1:]
                Image.fromarray(label[:h, :w] * 255).save(path)
            n += len(batch)
    return n


def engine_loop(source: DicomSource, checkpoint: Path, out: Path, amp: bool) -> int:
    """segops' engine without Ray: ``predict_masks`` and the atomic ``write_mask_png``."""
    loaded = load_checkpoint(checkpoint)
    n = 0
    for batch in _batches(source):
        for row, mask in zip(batch, predict_masks(loaded, [r["image"] for r in batch], amp=amp)):
            write_mask_png(out, mask_relpath(row["rel_path"], row["frame"]), mask, 2)
        n += len(batch)
    return n


def compare_masks(plain: Path, others: dict[str, Path], identical: bool) -> dict[str, float]:
    """Each other output's masks against the plain loop's: the share of pixels that agree, per output.

    ``identical`` (float32 everywhere): any differing mask ends the benchmark."""
    files = sorted(plain.rglob("*.png"))
    same, total = dict.fromkeys(others, 0), 0
    for path in files:
        expected = np.asarray(Image.open(path))
        total += expected.size
        for name, root in others.items():
            mask = np.asarray(Image.open(root / path.relative_to(plain)))
            if identical and not np.array_equal(mask, expected):
                raise SystemExit(f"{root}: mask {path.relative_to(plain)} differs from the plain loop's")
            same[name] += int((mask == expected).sum())
    agreement = {name: count / total for name, count in same.items()}
    print(
        f"masks ({len(files)}), pixels agreeing with the plain loop's float32 masks: "
        + ", ".join(f"{name} {100 * a:.3f} %" for name, a in agreement.items())
    )
    return agreement


def segops_segment(
    source: DicomSource, checkpoint: Path, out: Path, resources: dict, options: InferenceSettings
) -> int:
    pool = size_actor_pool(ActorPoolSpec(), resources)
    config = OutputConfig(str(out), ("png",), "mirror", {1: "lesion"}, 2, "bench")
    run = segment_dataset(
        read_source(source, streaming=True, num_cpus=pool.read_cpus),
        checkpoint,
        config,
        out / "parts",
        pool,
        BATCH,
        options,
    )
    return run.processed


def risk_references(loaded: LoadedModel, images: list[np.ndarray]) -> tuple[RiskReference, EmbeddingReference]:
    """What a trained model carries for the risk and the embedding distance, from ``images`` (as
    the train step's are from its training cases): the intensity range the risk's flag compares
    with, and the encoder embeddings' reference."""
    pixels = np.concatenate([image.ravel() for image in images])
    risk = RiskReference(intensity_range=tuple(float(v) for v in np.percentile(pixels, [0.5, 99.5])))
    return risk, EmbeddingReference.from_embeddings(embed(loaded, images))


def risk_cost(
    source: DicomSource, checkpoint: Path, resources: dict, amp: bool, reps: int = 3
) -> dict[str, float | list[float]]:
    """What the per-case risk and the embedding distance cost, against the same run without them.

    Three settings: ``off`` (no risk, no embeddings), ``risk`` (the segment step's default risk,
    with a training intensity range), ``risk+emb`` (also each case's encoder-embedding distance,
    as a segment step with ``drift.action: warn`` computes it). Measured ``reps`` times each, interleaved:
    in one process through the engine (``segment_cases`` over decoded batches: the hot path alone),
    and through segops 1x (Ray actors, each run starting its own pool, so actor start-up dilutes
    the cost). Cost = (off - with) / off in % of the median images/s (single runs on 2 cores vary by
    10-20 %)."""
    loaded = load_checkpoint(checkpoint)
    batches = [[np.asarray(r["image"], np.float32) for r in batch] for batch in _batches(source)]
    reference, embeddings = risk_references(loaded, [image for images in batches for image in images][:64])
    settings = {
        "off": InferenceSettings(amp=amp, risk=False),
        "risk": InferenceSettings(amp=amp, risk=True, reference=reference),
        "risk+emb": InferenceSettings(amp=amp, risk=True, reference=reference, embeddings=embeddings),
    }

    def engine(options: InferenceSettings) -> int:
        return sum(len(segment_cases(loaded, images, [None] * len(images), options)) for images in batches)

    figures: dict[str, float | list[float]] = {}
    for level in ("engine", "segops"):
        rates: dict[str, list[float]] = {name: [] for name in settings}
        for i, name in enumerate(list(settings) * reps):
            options = settings[name]
            if level == "engine":
                work = lambda options=options: engine(options)  # noqa: E731
            else:
                work = lambda options=options, name=name, i=i: segops_segment(  # noqa: E731
                    source, checkpoint, OUT / "results" / f"risk-{name}-{i}", resources, options
                )
            rates[name].append(rate(f"{level} 1x, {name} ({len(rates[name]) + 1} of {reps})", work))
        off = float(np.median(rates["off"]))
        for name in settings:
            median = float(np.median(rates[name]))
            figures[f"{level}_{name}_images_per_s"] = median
            figures[f"{level}_{name}_runs"] = rates[name]
            if name != "off":
                figures[f"{level}_{name}_cost_percent"] = 100 * (off - median) / off
        print(
            f"{level}: {off:.1f} img/s without risk; risk costs {figures[f'{level}_risk_cost_percent']:.1f} %, "
            f"risk + embedding distance {figures[f'{level}_risk+emb_cost_percent']:.1f} % (goal <= 5 %)"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=600)
    parser.add_argument("--scale", type=int, default=10, help="the large archive is this many times bigger (0: skip)")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument(
        "--data-memory-gb", type=float, default=None, help="cap Ray Data's object-store budget (cluster.data_memory_gb)"
    )
    parser.add_argument(
        "--risk-cost", action="store_true", help="after the 1x runs: the cost of the risk and embedding distance"
    )
    parser.add_argument("--risk-reps", type=int, default=3, help="--risk-cost: runs per setting (default 3)")
    parser.add_argument("--out", type=Path, default=OUT.parent / "segment.json", help="the figures as JSON")
    parser.add_argument("--fp32", action="store_true", help="amp off: float32 inference everywhere, masks identical")
    args = parser.parse_args()
    amp = not args.fp32
    options = InferenceSettings(amp=amp)  # a segment step's defaults: default sliding window, risk on
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(OUT / "results", ignore_errors=True)
    checkpoint = make_checkpoint()
    small = make_inputs(args.slices, seed=0)
    resources = ensure_ray(ClusterSpec(num_cpus=args.num_cpus, data_memory_gb=args.data_memory_gb))
    print(
        f"{resources.get('CPU', 0):.0f} CPUs, {resources.get('GPU', 0):.0f} GPUs; torch threads in the plain "
        f"loop: {torch.get_num_threads()}; engine and segops in "
        f"{'bfloat16 (amp, CPU with bf16)' if amp and cpu_has_bf16() else 'float32'}"
    )

    plain = rate("plain loop, 1x", lambda: plain_loop(small, checkpoint, OUT / "results" / "plain"))
    engine = rate("engine loop, 1x", lambda: engine_loop(small, checkpoint, OUT / "results" / "engine", amp))
    with PeakRSS() as rss_small:
        cold = rate(
            "segops 1x (actor start-up included)",
            lambda: segops_segment(small, checkpoint, OUT / "results" / "s1", resources, options),
        )
    print(
        f"throughput ratio segops / plain loop, 1x: {cold / plain:.2f}  (goal >= 1.3); segops / engine loop: "
        f"{cold / engine:.2f}"
    )
    results = OUT / "results"
    agreement = compare_masks(
        results / "plain", {"engine": results / "engine", "segops": results / "s1" / "masks"}, identical=args.fp32
    )
    print(
        f"peak memory (PSS, driver + Ray workers), 1x: {gib(rss_small.peak)} in up to "
        f"{rss_small.peak_processes} processes; the driver {gib(rss_small.driver_at_peak)} of it "
        f"({gib(rss_small.baseline_driver)} before segops started)"
    )
    figures: dict[str, object] = {
        "slices": args.slices,
        "bf16": amp and cpu_has_bf16(),
        "pixels_agreeing_with_plain": agreement,
        "cpus": resources.get("CPU", 0),
        "gpus": resources.get("GPU", 0),
        "plain_images_per_s": plain,
        "engine_images_per_s": engine,
        "segops_images_per_s": cold,
        "ratio_vs_plain": cold / plain,
        "peak_pss_gib": rss_small.peak / 2**30,
    }
    save(figures, args.out)
    if args.risk_cost:
        figures |= risk_cost(small, checkpoint, resources, amp, args.risk_reps)
        save(figures, args.out)
    if args.scale:
        big = make_inputs(args.slices * args.scale, seed=1)
        big_plain = rate(
            f"plain loop, {args.scale}x", lambda: plain_loop(big, checkpoint, OUT / "results" / "plain-big")
        )
        big_engine = rate(
            f"engine loop, {args.scale}x", lambda: engine_loop(big, checkpoint, OUT / "results" / "engine-big", amp)
        )
        with PeakRSS() as rss_big:
            big_rate = rate(
                f"segops {args.scale}x",
                lambda: segops_segment(big, checkpoint, OUT / "results" / "s10", resources, options),
            )
        print(
            f"throughput ratio segops / plain loop, {args.scale}x: {big_rate / big_plain:.2f}  (goal >= 1.3); "
            f"segops / engine loop: {big_rate / big_engine:.2f}"
        )
        print(
            f"peak memory, {args.scale}x: {gib(rss_big.peak)} in up to {rss_big.peak_processes} processes; "
            f"growth {rss_big.peak / rss_small.peak:.2f}x  (goal <= 1.2); the driver {gib(rss_big.driver_at_peak)} "
            f"of it ({gib(rss_big.baseline_driver)} before segops started); without the driver "
            f"{gib(rss_small.peak - rss_small.driver_at_peak)} -> {gib(rss_big.peak - rss_big.driver_at_peak)}"
        )
        figures |= {
            "scale": args.scale,
            "big_plain_images_per_s": big_plain,
            "big_engine_images_per_s": big_engine,
            "big_segops_images_per_s": big_rate,
            "big_ratio_vs_plain": big_rate / big_plain,
            "big_peak_pss_gib": rss_big.peak / 2**30,
            "memory_growth": rss_big.peak / rss_small.peak,
            "driver_pss_gib": [rss_small.driver_at_peak / 2**30, rss_big.driver_at_peak / 2**30],
            "driver_pss_before_gib": [rss_small.baseline_driver / 2**30, rss_big.baseline_driver / 2**30],
        }
        save(figures, args.out)


def save(figures: dict, path: Path) -> None:
    """Write the figures so far (after the 1x part too: a later failure keeps them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2))
    print(f"figures: {path}")


if __name__ == "__main__":
    main()

"""Fine-tuning from a model trained elsewhere vs training from scratch, with 10 % of the labels.

For each model, one generated archive to pretrain on and another of a different look to fine-tune on:

- **Mask R-CNN R18-FPN** (instances): pretrained on bright squares on dark noise (an archive this
  script writes: gray PNGs and uint16 instance-id PNGs), fine-tuned on ``segops synth instances``
  (:func:`segops.synth.make_instance_archive`, one class: cells with a darker membrane and nucleus
  on a dim, blotchy, unevenly lit background). Score: held-out mask AP50 (and AP).
- **smp U-Net, ResNet-18 encoder** (semantic): pretrained on ``segops synth inspection``
  (:func:`segops.synth.make_inspection_archive`, gray: machined texture with bright or dark
  scratches and pits, PNG), fine-tuned on ``segops synth defects``
  (:func:`segops.synth.make_defect_archive`: JPEG castings with blowholes, cracks, broken edges and
  uneven regions). Score: held-out Dice over the defect images (``fg_dice``) and over all images.

The target archive is split once: a fixed held-out test set, and a pool of which 10 % (chosen per
seed) is labelled and trained on. Per seed, the arms train the same epochs on the same labelled
images with the same batches (same sampling seed) and learning rate: **scratch** (random init) and
**fine-tuned** (the pretrained model saved as a segops checkpoint and loaded as a user would,
through ``model.weights_path``, with the fine-tuning controls ``freeze_backbone_epochs: 1``,
``backbone_lr_mult: 0.3``, ``warmup_epochs: 1``); ``--arms ... fine-tuned-plain`` adds the same
checkpoint without the controls. The pretraining runs once (seed 0) and its minutes are reported
apart. Everything runs through segops' engine loops in one process (``training_batch`` /
``train_steps``, ``detection_batch`` / ``detection_train_steps``, ``build_optimizer``,
``load_weights``); no Ray, no MLflow. torch runs 1 thread unless ``--threads``.

    .venv/bin/python benchmarks/finetune.py            # both models, 3 seeds (about 10 min on 2 cores)
    .venv/bin/python benchmarks/finetune.py --quick    # a 1-2 minute smoke run: small data, 1 seed
    .venv/bin/python benchmarks/finetune.py --models smp --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/finetune.py --arms scratch fine-tuned fine-tuned-plain

Rows (mean and min-max over seeds) are printed as a table and written with every per-seed
figure to ``benchmarks/out/finetune.json`` (``--quick``: ``finetune-quick.json``). Minutes are
wall-clock training time on this machine (evaluation excluded); the quality figures do not
depend on its load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _measure import stopwatch  # noqa: E402

from segops.config.schema import MaskRCNNSpec, PreprocessSpec, SmpSpec, TrainStep, WindowIntensity  # noqa: E402
from segops.data.images import read_image  # noqa: E402
from segops.data.instances import encode_instances  # noqa: E402
from segops.data.labels import read_instance_png, read_mask_png  # noqa: E402
from segops.engine.checkpoint import LoadedModel, save_checkpoint  # noqa: E402
from segops.engine.detect import detection_batch, detection_train_steps, predict_instances  # noqa: E402
from segops.engine.instance_eval import entries_ap, eval_entry  # noqa: E402
from segops.engine.train import build_optimizer, train_steps, training_batch, validation_sums  # noqa: E402
from segops.losses import build_loss  # noqa: E402
from segops.models import build_model, load_weights  # noqa: E402
from segops.synth import make_defect_archive, make_inspection_archive, make_instance_archive  # noqa: E402

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "finetune"
MODELS = ("maskrcnn", "smp")
CPU = torch.device("cpu")
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(64, 64))
RCNN = MaskRCNNSpec(
    arch="maskrcnn",
    backbone="resnet18_fpn",
    min_size=64,
    max_size=64,
    anchor_sizes=(8, 16, 32, 64, 128),
    box_batch_size_per_image=32,
    score_threshold=0.05,  # AP ranks every detection; a high threshold would cut the curve short
)
SMP = SmpSpec(arch="smp", decoder="unet", encoder="resnet18")
#: The fine-tuned arm's controls (the scratch arm has none: a random backbone gains nothing from them).
CONTROLS = {"freeze_backbone_epochs": 1, "backbone_lr_mult": 0.3, "warmup_epochs": 1}
#: scratch: random init; fine-tuned: the pretrained checkpoint + CONTROLS; fine-tuned-plain: the
#: checkpoint without the controls (what the controls add).
ARMS = ("scratch", "fine-tuned", "fine-tuned-plain")
log = logging.getLogger("finetune")


@dataclass(frozen=True)
class Plan:
    """Sizes of one model's run."""

    source_count: int  # images in the pretraining archive
    pretrain_epochs: int
    target_count: int  # images in the target archive (test + pool)
    test_count: int  # of those, held out for scoring
    epochs: int  # fine-tune and scratch, each
    label_share: float = 0.10
    learning_rate: float = 1e-3


PLANS = {
    ("maskrcnn", False): Plan(source_count=48, pretrain_epochs=8, target_count=230, test_count=30, epochs=6),
    ("maskrcnn", True): Plan(source_count=16, pretrain_epochs=3, target_count=90, test_count=10, epochs=3),
    ("smp", False): Plan(source_count=48, pretrain_epochs=8, target_count=230, test_count=30, epochs=8),
    ("smp", True): Plan(source_count=16, pretrain_epochs=3, target_count=90, test_count=10, epochs=3),
}
#: Learning rate per model: Mask R-CNN from scratch diverges on these few images at 1e-3.
LEARNING_RATE = {"maskrcnn": 2e-4, "smp": 1e-3}


# --------------------------------------------------------------------------- archives


def write_squares_archive(root: Path, count: int, size: int = 64, seed: int = 0) -> Path:
    """Bright squares on dark noise: ``images/square-NNNN.png`` (gray) and ``instances/square-NNNN.png``
    (uint16 ids), one to three non-overlapping squares of 8-20 px each. The pretraining set of Mask R-CNN."""
    if (root / "done").exists():
        return root
    for sub in ("images", "instances"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = rng.normal(35, 12, (size, size))
        ids = np.zeros((size, size), np.uint16)
        for _ in range(int(rng.integers(1, 4))):
            s = int(rng.integers(8, 21))
            y, x = (int(v) for v in rng.integers(1, size - s - 1, 2))
            if ids[y : y + s, x : x + s].any():
                continue
            ids[y : y + s, x : x + s] = ids.max() + 1
            image[y : y + s, x : x + s] += rng.uniform(120, 180)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"square-{i:04d}.png")
        Image.fromarray(ids).save(root / "instances" / f"square-{i:04d}.png")
    (root / "done").touch()
    return root


def _once(root: Path, make) -> Path:
    if not (root / "done").exists():
        make(root)
        (root / "done").touch()
    return root


def read_instances(root: Path, classes: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image (1, H, W) float32, instance label map) per ``images/*.png``; each instance's class from
    the class PNG of the same name in ``classes`` (majority), else 1."""
    pairs = []
    for path in sorted((root / "images").glob("*.png")):
        (record,) = read_image(path, path.name)
        shape = record.image.shape[1:]
        ids = read_instance_png(root / "instances" / path.name, shape)
        class_png = np.asarray(Image.open(root / classes / path.name)) if classes else None
        owners = {
            int(i): (int(np.bincount(class_png[ids == i]).argmax()) if class_png is not None else 1)
            for i in np.unique(ids)
            if i
        }
        pairs.append((record.image, encode_instances(ids, owners)))
    return pairs


def read_semantic(images: Path, labels: Path, pattern: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image (C, H, W) float32, class map {0, 1}) per image matching ``pattern`` under ``images``;
    its mask is the PNG of the same stem under ``labels`` (binarised at 128: anti-aliased edges)."""
    pairs = []
    for path in sorted(images.glob(pattern)):
        if path.name in ("README.png", "dataset.jpg"):  # make_defect_archive's overview figures
            continue
        (record,) = read_image(path, path.name)
        mask = labels / path.relative_to(images).with_suffix(".png")
        pairs.append((record.image, read_mask_png(mask, record.image.shape[1:], threshold=128)))
    return pairs


def archives(model: str, plan: Plan, quick: bool) -> tuple[list, list]:
    """(pretraining pairs, target pairs) of ``model``, generated once under ``benchmarks/out/finetune``."""
    tag = "quick" if quick else "full"
    if model == "maskrcnn":
        source = write_squares_archive(OUT / f"squares-{tag}", plan.source_count)
        target = _once(
            OUT / f"cells-{tag}",
            lambda r: make_instance_archive(r, count=plan.target_count, size=64, seed=1, classes=1),
        )
        return read_instances(source, None), read_instances(target, "classes")
    source = _once(
        OUT / f"inspection-{tag}",
        lambda r: make_inspection_archive(r, count=plan.source_count, seed=0, rgb_fraction=0.0),
    )
    # defect_free 0.3 (the generator's default is 0.7): with 10 % of the labels, 70 % defect-free
    # images would leave about 4 labelled defect images
    target = _once(
        OUT / f"defects-{tag}",
        lambda r: make_defect_archive(r, count=plan.target_count, seed=1, size=96, defect_free=0.3),
    )
    pretrain = read_semantic(source / "images", source / "labels", "*.png")
    return pretrain, read_semantic(target, target, "*/*.jpg")


# --------------------------------------------------------------------------- training and scoring


def step_for(spec: Any, epochs: int, lr: float, controls: dict[str, Any]) -> TrainStep:
    return TrainStep(
        step="train", model=spec, preprocess=PRE, batch_size=4, epochs=epochs, learning_rate=lr, **controls
    )


def fit(model: torch.nn.Module, step: TrainStep, pairs: list, seed: int) -> float:
    """Train ``model`` on ``pairs`` for ``step.epochs`` with segops' engine; returns seconds."""
    optimizer, scheduler = build_optimizer(model, step)
    rng = np.random.default_rng(seed)
    instance = step.model.task == "instance"
    loss = None if instance else build_loss(step.loss)
    with stopwatch() as elapsed:
        for _ in range(step.epochs):
            order = rng.permutation(len(pairs))
            chunks = [[pairs[i] for i in order[k : k + step.batch_size]] for k in range(0, len(pairs), step.batch_size)]
            if instance:
                batches = [detection_batch(c, PRE, step.model.in_channels, rng) for c in chunks]
                detection_train_steps(model, batches, optimizer, CPU)
            else:
                batches = [
                    training_batch(
                        c, PRE, step.model.in_channels, rng, foreground_oversample=step.foreground_oversample
                    )
                    for c in chunks
                ]
                train_steps(model, batches, loss, optimizer, CPU)
            scheduler.step()
    return elapsed()


def score(model: torch.nn.Module, spec: Any, pairs: list) -> dict[str, float]:
    """Held-out figures: mask AP50 and AP (Mask R-CNN), Dice over defect images and over all (smp)."""
    loaded = LoadedModel(model.eval(), spec, PRE, {})
    if spec.task == "instance":
        entries = []
        for i, (image, label) in enumerate(pairs):
            (pred,) = predict_instances(loaded, [image])
            entries.append(eval_entry(i, pred.masks, pred.scores, pred.classes, label))
        ap = entries_ap(entries, spec.classes)
        return {"ap50": ap["ap50"], "ap": ap["ap"]}
    sums = validation_sums(loaded, pairs, CPU)
    return {"fg_dice": sums.fg_dice_sum / max(sums.fg_cases, 1), "dice": sums.dice_sum / sums.cases}


def run_model(name: str, quick: bool, seeds: list[int], arms: list[str]) -> dict[str, Any]:
    plan = PLANS[(name, quick)]
    base = RCNN if name == "maskrcnn" else SMP
    lr = LEARNING_RATE[name]
    with stopwatch() as t_data:
        source, target = archives(name, plan, quick)
    split = np.random.default_rng(12345).permutation(len(target))
    test = [target[i] for i in split[: plan.test_count]]
    pool = [target[i] for i in split[plan.test_count :]]
    n_labelled = max(1, round(plan.label_share * len(pool)))
    print(
        f"{name}: pretraining archive {len(source)} images; target {len(target)} images = {len(test)} held out + "
        f"pool {len(pool)}, {n_labelled} labelled ({plan.label_share:.0%}); data {t_data():.0f} s"
    )

    torch.manual_seed(0)
    pretrained = build_model(base)
    pretrain_s = fit(pretrained, step_for(base, plan.pretrain_epochs, lr, {}), source, seed=0)
    checkpoint = save_checkpoint(OUT / f"pretrained-{name}-{'quick' if quick else 'full'}", pretrained, base, PRE)
    print(f"  pretrained {plan.pretrain_epochs} epochs in {pretrain_s / 60:.2f} min -> {checkpoint}")

    runs = []
    for seed in seeds:
        labelled_idx = np.random.default_rng(seed).choice(len(pool), n_labelled, replace=False)
        labelled = [pool[i] for i in sorted(labelled_idx)]
        for arm in arms:
            spec = base if arm == "scratch" else base.model_copy(update={"weights_path": checkpoint})
            controls = CONTROLS if arm == "fine-tuned" else {}
            torch.manual_seed(1000 + seed)  # the same random init in every arm (then overwritten by the checkpoint)
            model = build_model(spec)
            reports = load_weights(model, spec)
            seconds = fit(model, step_for(spec, plan.epochs, lr, controls), labelled, seed=1000 + seed)
            figures = score(model, spec, test)
            runs.append(
                {
                    "seed": seed,
                    "arm": arm,
                    "train_s": seconds,
                    "loaded_tensors": sum(r.loaded for r in reports),
                    **figures,
                }
            )
            shown = ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
            print(f"  seed {seed} {arm:16s}: {shown}; {seconds / 60:.2f} min")
    return {
        "model": name,
        "spec": base.model_dump(mode="json"),
        "plan": plan.__dict__,
        "learning_rate": lr,
        "controls": CONTROLS,
        "pretrain_s": pretrain_s,
        "labelled": n_labelled,
        "test": len(test),
        "runs": runs,
    }


# --------------------------------------------------------------------------- report


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arm: mean, min and max over seeds of each figure."""
    rows = []
    metrics = ("ap50", "ap") if result["model"] == "maskrcnn" else ("fg_dice", "dice")
    for arm in ARMS:
        runs = [r for r in result["runs"] if r["arm"] == arm]
        if not runs:
            continue
        row: dict[str, Any] = {"model": result["model"], "arm": arm, "seeds": len(runs)}
        for key in (*metrics, "train_s"):
            values = [r[key] for r in runs]
            row[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
        rows.append(row)
    return rows


def _cell(stat: dict[str, float], scale: float = 1.0, digits: int = 3) -> str:
    mean, lo, hi = (stat[k] * scale for k in ("mean", "min", "max"))
    return f"{mean:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})" if hi > lo else f"{mean:.{digits}f}"


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        "| model | start | held-out score, mean (min-max) over seeds | second score | training min | pretraining min |"
    )
    print("\n" + header + "\n|---|---|---|---|---|---|")
    for result in results:
        names = ("mask AP50", "mask AP") if result["model"] == "maskrcnn" else ("Dice, defect images", "Dice, all")
        for row in summary_rows(result):
            first, second = (k for k in row if k not in ("model", "arm", "seeds", "train_s"))
            pre = f"{result['pretrain_s'] / 60:.2f}" if row["arm"] != "scratch" else ""
            print(
                f"| {result['model']} ({result['labelled']} labelled, {row['seeds']} seeds) | {row['arm']} | "
                f"{names[0]} {_cell(row[first])} | {names[1]} {_cell(row[second])} | "
                f"{_cell(row['train_s'], 1 / 60, 2)} | {pre} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (--quick: 0)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:2]))
    parser.add_argument("--quick", action="store_true", help="small archives, 3 epochs, 1 seed: a smoke run")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a busy 2-core machine, 2 threads ran Mask R-CNN steps 3-6x slower)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/out/finetune[-quick].json")
    args = parser.parse_args()
    args.out = args.out or ROOT / "out" / ("finetune-quick.json" if args.quick else "finetune.json")
    torch.set_num_threads(args.threads)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    OUT.mkdir(parents=True, exist_ok=True)
    started, results = time.perf_counter(), []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    for name in args.models:
        results.append(run_model(name, args.quick, seeds, args.arms))
        document = {
            "quick": args.quick,
            "seeds": seeds,
            "threads": torch.get_num_threads(),
            "results": results,
            "rows": [row for r in results for row in summary_rows(r)],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2))  # after each model: a later failure keeps it
    print_table(results)
    print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min, load average {os.getloadavg()[0]:.1f}")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()

"""Training throughput and start-up: segops' Ray Train step vs a plain single-process torch loop.

Both sides train the same model (built from the workflow's own train step), with the same
preprocessing, patches, batch size, epochs, optimiser (AdamW + poly decay) and validation each
epoch, on the same decoded cases:

- **segops**: :func:`segops.cluster.train.train_model` (Ray Train, the workflow's 2 workers, DDP)
  on datasets read from an ingested Parquet dataset and materialised on the driver, exactly as
  the train step does it. Nothing else of the workflow (MLflow, registry, postprocessing) runs.
- **plain loop**: one process, ``torch.set_num_threads`` = the threads the Ray workers use in all,
  segops' engine building blocks (``build_model``, ``build_loss``, ``training_batch`` +
  ``train_steps``; Mask R-CNN: ``detection_batch`` + ``detection_train_steps``) over the same
  cases held in memory, in the same order, ``batch_size`` images per step.

Two models: the quickstart U-Net (``workflows/quickstart.yaml``, data from ``make_ct_archive``)
and Mask R-CNN R18-FPN (``workflows/instances-quickstart.yaml``, data from
``make_instance_archive``). Printed: steady-state samples/s (patches for the U-Net, images for
Mask R-CNN; epochs after the first) of both and their ratio, and segops' start-up split into
Ray init, dataset materialisation, Ray Train's controller, its worker group start (phases
parsed from the controller's log) and the first epoch's overhead (its time minus a steady
epoch). Each segops epoch ends when its report reaches the driver's progress feed, so it
includes rank 0's per-epoch checkpoint; the plain loop saves none.

    .venv/bin/python benchmarks/train.py                  # both models, 6 epochs
    .venv/bin/python benchmarks/train.py --quick          # tiny data, 3 epochs: a smoke run
    .venv/bin/python benchmarks/train.py --plain-threads 1  # also a 1-thread plain loop, for reference

segops runs first, then the plain loop on the rows segops' datasets hold. On a busy machine a
2-thread torch loop can run several times slower than a 1-thread one (threads waiting for each
other), while each Ray worker runs one thread: ``--plain-threads 1`` shows when that happens.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # segops' epoch bar: the benchmark prints its own table

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _measure import stopwatch  # noqa: E402

from segops.cluster.datasets import load_dataset, read_source, write_dataset  # noqa: E402
from segops.cluster.runtime import ensure_ray  # noqa: E402
from segops.cluster.scaling import worker_cpus  # noqa: E402
from segops.cluster.train import train_model  # noqa: E402
from segops.config.schema import ClusterSpec, TrainStep, WorkflowSpec  # noqa: E402
from segops.data.augment import Augmenter  # noqa: E402
from segops.data.records import STATUS_OK, dataset_meta  # noqa: E402
from segops.data.splits import split_groups  # noqa: E402
from segops.engine.checkpoint import LoadedModel  # noqa: E402
from segops.engine.detect import detection_batch, detection_train_steps, predict_instances  # noqa: E402
from segops.engine.instance_eval import entries_ap, eval_entry  # noqa: E402
from segops.engine.train import ForegroundReservoir, train_steps, training_batch, validation_sums  # noqa: E402
from segops.losses import build_loss  # noqa: E402
from segops.models import build_model  # noqa: E402
from segops.synth import make_ct_archive, make_instance_archive  # noqa: E402

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "train"
WORKFLOWS = ROOT.parent / "workflows"
MODELS = ("unet", "maskrcnn")
GOAL_RATIO, GOAL_STARTUP = 0.9, 10.0
_WG_PHASE = re.compile(r"\[Worker Group Initialization\] (.+?) in ([0-9.]+) ?s\b")


# --------------------------------------------------------------------------- data and specs


def make_data(model: str, quick: bool) -> tuple[TrainStep, Any]:
    """The workflow's train step (epochs not yet set) and its ingested dataset folder.

    The data is generated and ingested by segops once per size and kept under ``benchmarks/out/``.
    """
    if model == "unet":
        series, slices = (6, 3) if quick else (6, 20)  # the quickstart's archive: 6 series of 20 slices
        root = OUT / f"ct-{series}x{slices}"
        if not (root / "images").is_dir():
            make_ct_archive(root, series=series, slices=slices, seed=0)
        workflow, images, labels = "quickstart.yaml", root / "images", root / "labels"
    else:
        count = 20 if quick else 100  # instances-quickstart: `segops synth instances --count 100`
        root = OUT / f"instances-{count}"
        if not (root / "images").is_dir():
            make_instance_archive(root, count=count, seed=0)
        workflow, images, labels = "instances-quickstart.yaml", root / "images", root / "instances"
    data = yaml.safe_load((WORKFLOWS / workflow).read_text())
    source = data["steps"][0]["source"]
    source["path"], source["labels"]["path"] = str(images), str(labels)
    spec = WorkflowSpec.model_validate(data)
    ingest, train = spec.steps[0], spec.steps[1]
    dataset = root / "dataset"
    if not dataset.is_dir():
        write_dataset(read_source(ingest.source), dataset)
    return train, dataset


def split_cases(step: TrainStep, dataset: Path) -> tuple[list[str], list[str]]:
    """(train groups, validation groups) as the train step splits them; the test groups are left out."""
    meta = dataset_meta(dataset)
    labelled = meta[(meta["status"] == STATUS_OK) & meta["has_label"]]
    split = split_groups(
        labelled["group_id"].tolist(), step.split.val_fraction, step.split.test_fraction, step.split.seed
    )
    return list(split.train), list(split.val)


def materialise(dataset: Path, groups: list[str]) -> Any:
    """The driver's materialised dataset of ``groups``, as the train step builds it."""
    return load_dataset(dataset, labelled_only=True, groups=groups, columns=["case_id", "image", "label"])


# --------------------------------------------------------------------------- plain loop


@dataclass
class LoopTimes:
    """Wall seconds of each epoch and training samples in it (patches; Mask R-CNN: images)."""

    epoch_s: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    build_s: float = 0.0  # plain loop only: model, loss and optimiser construction
    threads: int = 0  # plain loop only: torch threads


def plain_loop(step: TrainStep, train: list[dict], val: list[dict], threads: int, seed: int) -> LoopTimes:
    """One process, ``threads`` torch threads: segops' per-worker epoch without Ray or DDP."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = LoopTimes(threads=threads)
    try:
        with stopwatch() as build:
            torch.manual_seed(seed)
            rng = np.random.default_rng([seed, 0])
            net = build_model(step.model)
            optimizer = torch.optim.AdamW(net.parameters(), lr=step.learning_rate, weight_decay=step.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: (1 - e / step.epochs) ** 0.9)
            augmenter = Augmenter(step.augment, int(rng.integers(2**31)), step.model.spatial_dims)
            loss_fn = (
                None  # Mask R-CNN computes its own losses
                if step.model.task == "instance"
                else build_loss(
                    step.loss,
                    batch_dice=step.batch_dice,
                    include_background=step.dice_include_background,
                    supervised_outputs=step.model.supervised_outputs,
                )
            )
            evaluator = LoadedModel(model=net, model_spec=step.model, preprocess=step.preprocess, meta={})
        times.build_s = build()
        reservoir, device = ForegroundReservoir(), torch.device("cpu")
        pairs = [(r["image"], r["label"]) for r in train]
        chunks = [pairs[i : i + step.batch_size] for i in range(0, len(pairs), step.batch_size)]
        for _ in range(step.epochs):
            with stopwatch() as epoch:
                if step.model.task == "instance":
                    batches = (detection_batch(c, step.preprocess, step.model.in_channels, rng) for c in chunks)
                    n = detection_train_steps(net, batches, optimizer, device, step.amp)["images"]
                    entries = []
                    for r in val:
                        (pred,) = predict_instances(evaluator, [r["image"]], device, step.amp)
                        entries.append(eval_entry(len(entries), pred.masks, pred.scores, pred.classes, r["label"]))
                    entries_ap(entries, step.model.classes)
                else:
                    batches = (
                        training_batch(
                            c,
                            step.preprocess,
                            step.model.in_channels,
                            rng,
                            step.patches_per_image,
                            augmenter,
                            step.foreground_oversample,
                            reservoir,
                        )
                        for c in chunks
                    )
                    _, n = train_steps(net, batches, loss_fn, optimizer, device, step.amp)
                    validation_sums(evaluator, ((r["image"], r["label"]) for r in val), device, step.amp)
                scheduler.step()
            times.epoch_s.append(epoch())
            times.samples.append(int(n))
    finally:
        torch.set_num_threads(previous)
    return times


# --------------------------------------------------------------------------- segops (Ray Train)


class FeedWatch:
    """Records the wall time (``time.time()``) at which each line of the progress feed appears.

    Ray Train's controller appends one line per epoch when rank 0 reports (:class:`EpochFeed`);
    polling every 20 ms costs the driver next to nothing.
    """

    def __init__(self, path: Path, interval: float = 0.02):
        self.path, self.interval = path, interval
        self.arrivals: list[float] = []
        self._size = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size != self._size:
            self._size, now = size, time.time()
            lines = self.path.read_text(encoding="utf-8").count("\n")
            self.arrivals.extend([now] * (lines - len(self.arrivals)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.interval)

    def __enter__(self) -> FeedWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()  # a line written after the last poll


def session_dir() -> Path:
    """This driver's Ray session folder (``session_latest`` may be another driver's on a shared machine)."""
    try:
        import ray._private.worker as worker

        return Path(worker.global_worker.node.get_session_dir_path())
    except Exception:  # noqa: BLE001  (a private API: fall back to the usual link)
        return Path("/tmp/ray/session_latest")


def controller_log(since: float) -> dict[str, Any]:
    """Ray Train v2's controller log of the run started after ``since`` (epoch seconds): its first
    line's time and each ``[Worker Group Initialization]`` phase (seconds, and when it ended)."""
    runs = []
    for path in (session_dir() / "logs" / "train").glob("ray-train-sys-controller-*.log"):
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("{")]
        if lines and lines[0]["timestamp_ns"] / 1e9 >= since:
            runs.append((lines[0]["timestamp_ns"], path, lines))
    found: dict[str, Any] = {}
    for first, path, lines in sorted(runs)[:1]:  # the first controller started after ``since``
        found = {"file": str(path), "first": first / 1e9, "phases": {}}
        for row in lines:
            match = _WG_PHASE.search(row["message"])
            if match:
                found["phases"][match.group(1)] = float(match.group(2))
                if "startup completed" in match.group(1):
                    found["wg_done"] = row["timestamp_ns"] / 1e9
            if row["message"].startswith("Attempting to start training worker group"):
                found["wg_start"] = row["timestamp_ns"] / 1e9
    return found


@dataclass
class SegopsTimes(LoopTimes):
    """segops' epochs (between reports reaching the driver) and its start-up parts, in seconds."""

    materialise_s: float = 0.0
    controller_s: float | None = None  # train_model called → the controller asks for the worker group
    worker_group_s: float | None = None  # Ray Train's "Worker group startup completed in X s total"
    worker_group_phases: dict[str, float] = field(default_factory=dict)
    first_epoch_s: float | None = None  # worker group started → first report
    fit_s: float = 0.0  # the whole train_model call
    teardown_s: float = 0.0  # last report → train_model returned (shutdown, best checkpoint copied)


def segops_train(step: TrainStep, dataset: Path, groups: tuple[list[str], list[str]], resources: dict, seed: int):
    """Train through segops' Ray Train path; returns (times, train rows, validation rows)."""
    with stopwatch() as t_mat:
        train_ds, val_ds = materialise(dataset, groups[0]), materialise(dataset, groups[1])
    times = SegopsTimes(materialise_s=t_mat())
    results = OUT / "results" / step.model.arch
    shutil.rmtree(results, ignore_errors=True)  # else train_model resumes the last run
    storage = results / "ray-train"
    storage.mkdir(parents=True)
    start = time.time()
    with FeedWatch(storage / "progress.jsonl") as feed:
        outcome = train_model(step, train_ds, val_ds, storage, results / "model", seed, resources)
    end = time.time()
    times.fit_s = end - start
    key = "train_images" if step.model.task == "instance" else "train_samples"
    times.samples = [int(row[key]) for row in outcome.history]
    arrivals = feed.arrivals
    if len(arrivals) != len(outcome.history):
        raise SystemExit(
            f"{storage / 'progress.jsonl'}: saw {len(arrivals)} epoch reports for {len(outcome.history)} epochs; "
            "has segops' progress feed (EpochFeed) moved? The epoch times come from it"
        )
    times.epoch_s = [b - a for a, b in zip(arrivals, arrivals[1:])]
    times.teardown_s = end - arrivals[-1]
    log_info = controller_log(start - 1.0)
    if "wg_start" in log_info:
        times.controller_s = log_info["wg_start"] - start
    if "wg_done" in log_info:
        times.worker_group_s = next(
            (v for k, v in log_info["phases"].items() if k.startswith("Worker group startup completed")), None
        )
        times.worker_group_phases = {
            k: v for k, v in log_info["phases"].items() if not k.startswith("Worker group startup completed")
        }
        times.first_epoch_s = arrivals[0] - log_info["wg_done"]
    else:
        times.first_epoch_s = arrivals[0] - start  # log not found: controller and worker group included
    return times, train_ds.take_all(), val_ds.take_all()


# --------------------------------------------------------------------------- report


def steady(times: LoopTimes, segops: bool) -> tuple[float, float]:
    """(steady-state samples/s, mean steady epoch seconds) over the epochs after the first.

    segops' ``epoch_s`` holds the spans between reports, i.e. epochs 2..N already.
    """
    spans = times.epoch_s if segops else times.epoch_s[1:]
    samples = sum(times.samples[1:])
    if not spans:
        return float("nan"), float("nan")
    return samples / sum(spans), sum(spans) / len(spans)


def summarise(
    model: str, step: TrainStep, plain: LoopTimes, seg: SegopsTimes, ray_init_s: float, references: dict[int, LoopTimes]
) -> dict:
    """One model's figures; ``references``: plain loops at other thread counts, by thread count."""
    plain_rate, plain_epoch = steady(plain, segops=False)
    seg_rate, seg_epoch = steady(seg, segops=True)
    first_overhead = (seg.first_epoch_s - seg_epoch) if seg.first_epoch_s is not None else None
    parts = [ray_init_s, seg.materialise_s, seg.controller_s, seg.worker_group_s, first_overhead]
    startup = sum(p for p in parts if p is not None)
    return {
        "model": model,
        "arch": step.model.arch,
        "epochs": step.epochs,
        "batch_size": step.batch_size,
        "workers": step.scaling.workers,
        "plain_samples_per_s": plain_rate,
        "plain_threads": plain.threads,
        "reference_samples_per_s": {t: steady(r, segops=False)[0] for t, r in references.items()},
        "segops_samples_per_s": seg_rate,
        "ratio": seg_rate / plain_rate,
        "plain_epoch_s": plain_epoch,
        "segops_epoch_s": seg_epoch,
        "plain_first_epoch_overhead_s": plain.epoch_s[0] - plain_epoch,
        "plain_build_s": plain.build_s,
        "startup": {
            "ray_init_s": ray_init_s,
            "materialise_s": seg.materialise_s,
            "controller_s": seg.controller_s,
            "worker_group_s": seg.worker_group_s,
            "first_epoch_overhead_s": first_overhead,
            "total_s": startup,
        },
        "worker_group_phases": seg.worker_group_phases,
        "teardown_s": seg.teardown_s,
        "fit_s": seg.fit_s,
        "plain": asdict(plain),
        "segops": asdict(seg),
    }


def _fmt(value: float | None, spec: str = "8.2f") -> str:
    return format(value, spec) if value is not None else format("n/a", ">" + spec.split(".")[0])


def print_table(rows: list[dict]) -> None:
    names = [r["model"] for r in rows]
    head = f"{'':44s}" + "".join(f"{n:>12s}" for n in names)
    print("\n" + head)

    def line(label: str, values: list[float | None], spec: str = "12.2f") -> None:
        print(f"{label:44s}" + "".join(_fmt(v, spec) for v in values))

    line("plain loop, steady samples/s", [r["plain_samples_per_s"] for r in rows], "12.1f")
    for t in sorted({t for r in rows for t in r["reference_samples_per_s"]}):
        line(f"  reference: plain loop, {t} thread(s)", [r["reference_samples_per_s"].get(t) for r in rows], "12.1f")
    line("segops (Ray Train), steady samples/s", [r["segops_samples_per_s"] for r in rows], "12.1f")
    line(f"ratio segops / plain (goal >= {GOAL_RATIO})", [r["ratio"] for r in rows])
    line("steady epoch s: plain", [r["plain_epoch_s"] for r in rows])
    line("steady epoch s: segops", [r["segops_epoch_s"] for r in rows])
    print("segops start-up (s)")
    labels = {
        "ray_init_s": "  Ray init (once per process)",
        "materialise_s": "  dataset materialisation on the driver",
        "controller_s": "  Ray Train controller, until worker group",
        "worker_group_s": "  worker group start (controller log)",
        "first_epoch_overhead_s": "  first epoch overhead (first - steady)",
        "total_s": f"  total (goal <= {GOAL_STARTUP:g})",
    }
    for key, label in labels.items():
        line(label, [r["startup"][key] for r in rows])
    phases = sorted(
        {k for r in rows for k in r["worker_group_phases"]}, key=lambda k: -rows[0]["worker_group_phases"].get(k, 0)
    )
    for phase in phases:
        line(f"    {phase[:38]}", [r["worker_group_phases"].get(phase) for r in rows])
    line("segops teardown after last epoch (s)", [r["teardown_s"] for r in rows])
    line("plain loop: model build (s)", [r["plain_build_s"] for r in rows])
    line("plain loop: first epoch overhead (s)", [r["plain_first_epoch_overhead_s"] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=6, help="epochs of both loops (at least 2)")
    parser.add_argument("--quick", action="store_true", help="tiny data and 3 epochs: a smoke run")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument(
        "--plain-threads",
        type=int,
        nargs="*",
        default=[],
        help="also run the plain loop with these torch thread counts, as references beside the ratio's "
        "(e.g. 1: on a busy machine 2 threads can run slower than 1)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "train.json")
    args = parser.parse_args()
    epochs = 3 if args.quick else args.epochs
    if epochs < 2:
        parser.error("--epochs must be at least 2: the steady state is the epochs after the first")
    logging.basicConfig(level=logging.WARNING)
    # the plain loop's batches view Ray's read-only rows; torch warns although nothing writes to them
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    with stopwatch() as t_init:
        resources = ensure_ray(ClusterSpec(num_cpus=args.num_cpus))
    ray_init_s = t_init()
    rows = []
    for model in args.models:
        step, dataset = make_data(model, args.quick)
        step = step.model_copy(update={"epochs": epochs})
        cpus = worker_cpus(step.scaling.workers, step.scaling.cpus_per_worker, resources)
        threads = step.scaling.workers * max(1, int(cpus))  # as each worker's torch.set_num_threads
        print(
            f"{model}: {resources.get('CPU', 0):.0f} CPUs; {step.scaling.workers} Ray workers x {cpus} CPU "
            f"({max(1, int(cpus))} torch thread(s) each); plain loop: {threads} threads; {epochs} epochs, "
            f"batch {step.batch_size}"
        )
        groups = split_cases(step, dataset)
        seg, train_rows, val_rows = segops_train(step, dataset, groups, resources, seed=0)
        plain = plain_loop(step, train_rows, val_rows, threads, seed=0)
        references = {t: plain_loop(step, train_rows, val_rows, t, seed=0) for t in args.plain_threads if t != threads}
        print(f"  {len(train_rows)} training cases, {len(val_rows)} validation cases; segops fit {seg.fit_s:.1f} s")
        rows.append(summarise(model, step, plain, seg, ray_init_s, references))
        result = {"quick": args.quick, "epochs": epochs, "cpus": resources.get("CPU", 0), "models": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))  # after each model: a later failure keeps it
    print_table(rows)
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()

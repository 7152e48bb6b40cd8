"""Distributed training with Ray Train's ``TorchTrainer`` (DDP; GPU when present, CPU here).

The per-worker loop only glues Ray to :mod:`segops.engine.train`: it reads its share of the
dataset's blocks (:mod:`segops.cluster.shards`), builds augmented batches, steps the optimiser,
all-reduces loss/Dice, and reports a checkpoint every epoch. It never talks to MLflow; the driver
logs the returned history.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from tqdm.auto import tqdm

from segops.cluster.scaling import resolve_scaling, torch_config, worker_cpus, worker_memory
from segops.cluster.shards import PIXEL_COLUMNS, Blocks, owns, train_rows
from segops.cluster.train_hooks import SNAPSHOT_NAME, EpochFeed, repair_snapshot
from segops.config.schema import TrainStep
from segops.data.augment import Augmenter
from segops.data.records import SPACING_COLUMNS, known_spacing
from segops.data.transforms import Scale, image_scale, rescale_image, rescale_label
from segops.engine.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from segops.engine.detect import detection_batch, detection_train_steps, predict_instances
from segops.engine.instance_eval import entries_ap, eval_entry
from segops.engine.train import (
    ForegroundReservoir,
    build_optimizer,
    epoch_rows,
    select_metric,
    train_steps,
    training_batch,
    validation_sums,
)
from segops.errors import SegopsError, StepError
from segops.losses import build_loss
from segops.models import build_model
from segops.outputs.storage import open_storage

if TYPE_CHECKING:
    from segops.engine.memory import TrainingImage

log = logging.getLogger(__name__)

#: Optimizer/scheduler state and history inside each Ray Train checkpoint (not in the model folder).
TRAIN_STATE_FILE = "train_state.pt"

#: How often Ray Train's controller polls the workers (Ray's default: 2 s). A worker's
#: ``ray.train.report`` waits until the controller has taken the previous epoch's result, so
#: with epochs shorter than the poll interval every epoch lasted one interval: measured on the
#: quickstart U-Net (``benchmarks/train.py --quick``), 2.02 s per epoch at Ray's default, 0.52 s
#: at 0.2 s. A user's own ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` wins.
POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
POLL_INTERVAL_S = 0.2


@dataclass(frozen=True)
class TrainOutcome:
    """What the driver gets back: the best checkpoint (copied to ``checkpoint_dir``) and history."""

    checkpoint_dir: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_score: (
        float  # the best epoch's val_score: val_dice or val_fg_dice (semantic, see select_metric) or val_mask_ap
    )
    used_gpu: bool


def train_model(
    step: TrainStep,
    train_ds: ray.data.Dataset,
    val_ds: ray.data.Dataset,
    storage_dir: Path,
    checkpoint_dir: Path,
    seed: int,
    resources: dict[str, float],
    init_checkpoint: Path | None = None,
    storage: str | None = None,
    desc: str = "train",
    image: TrainingImage | None = None,
) -> TrainOutcome:
    """Fit ``step.model`` on ``train_ds``, validating on ``val_ds`` each epoch.

    Checkpoints of every epoch go to ``storage_dir`` (the two best by validation score are
    kept: Dice for semantic models, over foreground cases when most validation cases are empty,
    mask AP for instance models; and always the latest); the
    best (with ``step.select == "last"``: the latest) is copied to ``checkpoint_dir``. Each
    checkpoint also holds the optimizer and scheduler
    state and the history, so calling this again with the same ``storage_dir`` after an
    interruption (even ``kill -9`` of the driver) continues from the last epoch reached.
    ``init_checkpoint``: warm start from these weights (same architecture). ``storage``: a path
    or URI (``s3://…``) for the checkpoints instead of ``storage_dir`` (see ``ClusterSpec.storage``);
    the progress feed stays in ``storage_dir``. ``desc``: the progress bar's label (``fold 1/5``).
    ``image``: a Mask R-CNN's largest training image, that the workers' memory is measured on.
    """
    step = step.model_copy(update={"scaling": resolve_scaling(step.scaling, resources)})  # one worker per GPU
    use_gpu = bool(step.scaling.use_gpu)
    cpus = worker_cpus(step.scaling.workers, step.scaling.cpus_per_worker, resources)
    resources_per_worker = {"CPU": cpus} | (
        {"GPU": 1.0} if use_gpu else {"memory": worker_memory(step, resources, image)}
    )
    log.info("training on %d worker(s) x %s CPU%s", step.scaling.workers, cpus, " + 1 GPU" if use_gpu else "")
    storage_dir.mkdir(parents=True, exist_ok=True)
    progress = storage_dir / "progress.jsonl"  # driver side: the epoch bar's feed
    filesystem, storage_path = open_storage(storage or str(storage_dir))
    snapshot = f"{storage_path}/train/{SNAPSHOT_NAME}"  # Ray Train's record of the run's checkpoints
    resuming = repair_snapshot(filesystem, snapshot)
    if resuming:
        log.info("resuming training from the last checkpoint in %s", storage or storage_dir)
    else:
        progress.unlink(missing_ok=True)
    config = {
        "step": step.model_dump(mode="json"),
        "seed": seed,
        "threads": max(1, int(cpus)),
        "init_checkpoint": str(init_checkpoint.resolve()) if init_checkpoint else None,
        # the workers read the blocks in place: no Ray Data execution per epoch (segops.cluster.shards)
        "train_blocks": Blocks.of(train_ds),
        "val_blocks": Blocks.of(val_ds),
    }
    os.environ.setdefault(POLL_INTERVAL_ENV, str(POLL_INTERVAL_S))  # read when fit() starts the controller
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config=config,
        torch_config=torch_config(use_gpu),
        scaling_config=ScalingConfig(
            num_workers=step.scaling.workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker
        ),
        run_config=RunConfig(
            name="train",
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_score", checkpoint_score_order="max"
            ),
            callbacks=[EpochFeed(str(progress.resolve()), filesystem, snapshot)],
            failure_config=FailureConfig(max_failures=step.max_failures),
        ),
    )
    result = _fit_with_progress(trainer, progress, step.epochs, desc)
    if result.error is not None:
        raise StepError(f"training failed: {result.error}") from result.error
    history: list[dict[str, float]] = result.return_value or []
    if step.select == "last":
        best, best_row = result.checkpoint, (history[-1] if history else None)
    else:
        best = result.get_best_checkpoint(metric="val_score", mode="max") or result.checkpoint
        best_row = max(history, key=lambda row: _finite(row["val_score"]), default=None)
    if best is None or best_row is None:
        raise StepError("training finished without reporting a checkpoint")
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    with best.as_directory() as local:
        shutil.copytree(local, checkpoint_dir, ignore=shutil.ignore_patterns(TRAIN_STATE_FILE))
    return TrainOutcome(checkpoint_dir, history, int(best_row["epoch"]), float(best_row["val_score"]), use_gpu)


def _fit_with_progress(trainer: TorchTrainer, progress: Path, epochs: int, desc: str = "train") -> Any:
    """``trainer.fit()`` in a thread while the driver shows epochs done, loss and validation score."""
    with ThreadPoolExecutor(max_workers=1) as pool, tqdm(total=epochs, desc=desc, unit="epoch") as bar:
        future = pool.submit(trainer.fit)
        shown = 0
        while True:
            try:
                future.exception(timeout=1.0)  # returns once fit() has ended, either way
                finished = True
            except FutureTimeout:
                finished = False
            lines = progress.read_text(encoding="utf-8").splitlines() if progress.exists() else []
            for line in lines[shown:]:
                row = json.loads(line)
                # DEBUG, not INFO: a log line printed under a live bar splits it; the bar shows the same
                log.debug("epoch %d/%d: %s", row["epoch"] + 1, epochs, _epoch_summary(row))
                bar.set_postfix_str(_epoch_summary(row), refresh=False)
                bar.update(1)
            shown = max(shown, len(lines))
            if finished:
                try:
                    return future.result()
                except Exception as exc:
                    cause = worker_error(exc)
                    if cause is None:
                        raise
                    raise cause from None  # the worker's own one-paragraph error, not Ray's wrapper


def worker_error(exc: BaseException) -> SegopsError | None:
    """The :class:`SegopsError` a training worker raised (a data or divergence problem it can name),
    from Ray Train's ``WorkerGroupError.worker_failures``; None for any other failure."""
    failures = getattr(exc, "worker_failures", None) or {}
    return next((e for _, e in sorted(failures.items()) if isinstance(e, SegopsError)), None)


def _epoch_summary(row: dict[str, Any]) -> str:
    keys = ("train_loss", "val_dice", "val_fg_dice", "val_mask_ap", "val_mask_ap50")
    return " ".join(f"{k} {row[k]:.4f}" for k in keys if isinstance(row.get(k), float))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


# --------------------------------------------------------------------------- worker side


def _train_loop_per_worker(config: dict[str, Any]) -> list[dict[str, float]]:
    step = TrainStep.model_validate(config["step"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])  # same init on every rank (DDP also broadcasts)
    rng = np.random.default_rng([config["seed"], rank])
    device = ray.train.torch.get_device()

    net = build_model(step.model)
    resumed = ray.train.get_checkpoint()  # Ray Train's latest, when this run was interrupted
    state = _load_resume_state(resumed, net) if resumed is not None else None
    if state is None and config.get("init_checkpoint"):
        net.load_state_dict(load_checkpoint(config["init_checkpoint"]).model.state_dict())  # warm start
    instance = step.model.task == "instance"
    # Mask R-CNN leaves its mask head unused on a batch without instances: DDP must allow that
    ddp = {"find_unused_parameters": True} if instance else {}
    model = ray.train.torch.prepare_model(net, parallel_strategy_kwargs=ddp)
    # nnU-Net's polynomial decay, warm-up, and the backbone's own group when fine-tuning (frozen, lr multiplier)
    optimizer, scheduler = build_optimizer(net, step)
    history: list[dict[str, float]] = []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        rng = np.random.default_rng([config["seed"], rank, len(history)])  # fresh stream, not a replay
    worker = _Worker(
        step=step,
        model=model,
        evaluator=LoadedModel(model=net, model_spec=step.model, preprocess=step.preprocess, meta={}),
        optimizer=optimizer,
        train=config["train_blocks"],
        val=config["val_blocks"],
        # which validation cases this rank scores: the same every epoch, so found once
        val_rows=config["val_blocks"].indices_where("case_id", lambda case_id: owns(case_id, rank, world)),
        rng=rng,
        augmenter=Augmenter(step.augment, int(rng.integers(2**31)), step.model.spatial_dims),
        reservoir=ForegroundReservoir(),
        device=device,
        rank=rank,
        world=world,
        seed=config["seed"],
    )
    run_epoch = _instance_epoch if instance else _semantic_epoch
    for epoch in range(len(history), step.epochs):
        metrics = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        if len(optimizer.param_groups) > 1:
            metrics["backbone_lr"] = optimizer.param_groups[1]["lr"]
        start = time.perf_counter()
        metrics |= run_epoch(worker, epoch)
        metrics["epoch_seconds"] = time.perf_counter() - start  # this rank's; ranks meet in the all-reduce
        scheduler.step()
        history.append(metrics)
        _report(history, net, optimizer, scheduler, step, rank)
    return history


def _load_resume_state(checkpoint: ray.train.Checkpoint, net: torch.nn.Module) -> dict[str, Any]:
    """Weights into ``net``; returns optimizer and scheduler state and the epochs done so far."""
    with checkpoint.as_directory() as local:
        net.load_state_dict(load_checkpoint(local).model.state_dict())
        return torch.load(Path(local) / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class _Worker:
    """What one training worker's epochs work with (the same for semantic and instance models)."""

    step: TrainStep
    model: torch.nn.Module  # DDP-wrapped
    evaluator: LoadedModel  # the unwrapped network, for validation
    optimizer: torch.optim.Optimizer
    train: Blocks  # every training row; this rank reads its share of them each epoch
    val: Blocks  # every validation row
    val_rows: np.ndarray  # the validation rows this rank scores (:func:`owns`)
    rng: np.random.Generator
    augmenter: Augmenter  # seeded from ``rng``: reproducible per (seed, rank, epochs done)
    reservoir: ForegroundReservoir  # recent foreground-bearing training pairs, for foreground oversampling
    device: torch.device
    rank: int
    world: int
    seed: int

    def train_pairs(self, epoch: int) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
        """This epoch's training (image, label) lists of ``batch_size``: every row of this rank's
        share, or ``samples_per_epoch``'s draw of them; with ``preprocess.spacing``, each pair
        resampled to it (:func:`~segops.data.transforms.image_scale`)."""
        rows = train_rows(self.train.num_rows, self.world, self.rank, epoch)
        keep = epoch_rows(self.train.num_rows, self.world, self.step.samples_per_epoch, self.seed, epoch, self.rank)
        if keep is not None:
            rows = rows[keep]
        if self.step.preprocess.spacing is None:
            return _batched(self.train.rows(rows, PIXEL_COLUMNS), self.step.batch_size)
        scaled = self._scaled(self.train.rows(rows, (*PIXEL_COLUMNS, *SPACING_COLUMNS)))
        return _batched(((rescale_image(i, f), rescale_label(lb, f)) for i, lb, f in scaled), self.step.batch_size)

    def val_pairs(self) -> Iterator[tuple]:
        """(image, label) of this rank's validation cases; with ``preprocess.spacing``: (image, label, scale)."""
        if self.step.preprocess.spacing is None:
            return self.val.rows(self.val_rows, PIXEL_COLUMNS)
        return self._scaled(self.val.rows(self.val_rows, (*PIXEL_COLUMNS, *SPACING_COLUMNS)))

    def _scaled(self, rows: Iterator[tuple]) -> Iterator[tuple[np.ndarray, np.ndarray, Scale]]:
        """(image, label, spacing columns…) rows → (image, label, the factor its spacing asks)."""
        for image, label, *spacing in rows:
            known = known_spacing(dict(zip(SPACING_COLUMNS, spacing)))
            yield image, label, image_scale(self.step.preprocess, known)


def _semantic_epoch(w: _Worker, epoch: int) -> dict[str, float]:
    """U-Net: Dice+CE on random patches (with foreground oversampling); whole-image (3D:
    whole-volume) validation Dice over all cases and over foreground cases. The selection score
    is the foreground Dice when most validation cases are empty (:func:`select_metric`)."""
    step = w.step
    loss_fn = build_loss(
        step.loss,
        batch_dice=step.batch_dice,
        include_background=step.dice_include_background,
        supervised_outputs=step.model.supervised_outputs,  # DynUNet: (N, S, K, ...) in training mode
    )
    batches = (
        training_batch(
            pairs,
            step.preprocess,
            step.model.in_channels,
            w.rng,
            step.patches_per_image,
            w.augmenter,
            step.foreground_oversample,
            w.reservoir,
        )
        for pairs in w.train_pairs(epoch)
    )
    loss_sum, n_samples = train_steps(w.model, batches, loss_fn, w.optimizer, w.device, step.amp)
    start = time.perf_counter()
    v = validation_sums(w.evaluator, w.val_pairs(), w.device, step.amp)
    reduced = _all_reduce([loss_sum, n_samples, v.dice_sum, v.cases, v.fg_dice_sum, v.fg_cases])
    val_seconds = time.perf_counter() - start  # until the slowest rank's validation is done
    loss_sum, n_samples, dice_sum, n_val, fg_sum, n_fg = reduced
    metrics = {
        "train_loss": loss_sum / max(n_samples, 1),
        "val_dice": dice_sum / n_val if n_val else float("nan"),
        "val_fg_dice": fg_sum / n_fg if n_fg else float("nan"),
        "train_samples": n_samples,
        "val_cases": n_val,
        "val_fg_cases": n_fg,
        "val_seconds": val_seconds,
    }
    return metrics | {"val_score": metrics[select_metric(int(n_val), int(n_fg))]}


def _instance_epoch(w: _Worker, epoch: int) -> dict[str, float]:
    """Mask R-CNN: whole images, loss components averaged over all ranks; validation mask AP
    over every rank's predictions together (AP is a property of the set; the selection score)."""
    step = w.step
    batches = (detection_batch(pairs, step.preprocess, step.model.in_channels, w.rng) for pairs in w.train_pairs(epoch))
    sums = detection_train_steps(w.model, batches, w.optimizer, w.device, step.amp)
    names = sorted(k for k in sums if k != "images")
    reduced = _all_reduce([sums[k] for k in names] + [sums["images"]])
    n_images = reduced[-1]
    metrics = {f"train_{k}": v / max(n_images, 1) for k, v in zip(names, reduced)}
    start = time.perf_counter()
    entries, offset = [], w.rank * 1_000_000  # image ids unique across ranks
    for image, label in w.val_pairs():
        (pred,) = predict_instances(w.evaluator, [image], w.device, step.amp)
        entries.append(eval_entry(offset + len(entries), pred.masks, pred.scores, pred.classes, label))
    entries = _all_gather(entries)
    ap = entries_ap(entries, step.model.classes)
    return metrics | {
        "val_seconds": time.perf_counter() - start,  # until every rank's predictions are scored
        "train_images": n_images,
        "val_cases": len(entries),
        "val_mask_ap": ap["ap"],
        "val_mask_ap50": ap["ap50"],
        "val_mask_ap75": ap["ap75"],
        "val_score": ap["ap"],
    }


def _batched(
    pairs: Iterator[tuple[np.ndarray, np.ndarray]], batch_size: int
) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """Lists of ``batch_size`` (image, label) pairs (the last may be shorter)."""
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    for pair in pairs:
        pending.append(pair)
        if len(pending) == batch_size:
            yield pending
            pending = []
    if pending:
        yield pending


def _all_reduce(values: list[float]) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _all_gather(items: list[Any]) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return items
    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in (part or [])]


def _report(
    history: list[dict[str, float]],
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: TrainStep,
    rank: int,
) -> None:
    """Rank 0 attaches a checkpoint (weights + what a resumed run needs); every rank must report."""
    metrics = history[-1]
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(
            tmp, net, step.model, step.preprocess, extra={"epoch": metrics["epoch"], "val_score": metrics["val_score"]}
        )
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": history}
        torch.save(state, Path(tmp) / TRAIN_STATE_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

"""Cross-validation on Ray Train: k fold models one after another, and out-of-fold predictions.

Fold ``i`` trains (:func:`segops.cluster.train.train_model`) on the other folds' groups and
validates on its own, with Ray Train storage ``<run>/ray-train/fold_i`` and its kept checkpoint in
``<run>/model/fold_i``. The driver then predicts the fold's validation cases with that model (the
same whole-image prediction the training validation scores) into ``<run>/oof/<case_id>.npz`` and
writes ``<run>/oof/fold_i.json`` last, which marks the fold finished: a resumed run keeps finished
folds and lets Ray Train resume the unfinished one from its own checkpoint.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray
import torch

from segops.cluster.infer import case_spacing
from segops.cluster.train import TrainOutcome, train_model
from segops.config.schema import TrainStep
from segops.data.transforms import image_scale
from segops.engine.checkpoint import LoadedModel, load_checkpoint
from segops.engine.predict import predict_masks
from segops.errors import StepError
from segops.metrics import case_scores
from segops.outputs.atomic import atomic_write, atomic_write_text
from segops.outputs.storage import join

log = logging.getLogger(__name__)

#: (train groups, validation groups) → (train dataset, validation dataset) with columns case_id, image, label.
DatasetsFor = Callable[[list[str], list[str]], tuple[ray.data.Dataset, ray.data.Dataset]]
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class CaseScore:
    """One predicted validation case: its Dice (:func:`segops.metrics.case_scores`, mean over
    foreground classes) and whether its label has foreground."""

    case_id: str
    dice: float
    foreground: bool


@dataclass(frozen=True)
class FoldOutcome:
    """A finished fold: its training outcome and its out-of-fold case scores."""

    index: int
    val_groups: tuple[str, ...]
    outcome: TrainOutcome
    cases: tuple[CaseScore, ...]


def fold_name(index: int) -> str:
    """``fold_<index>``: the fold's folder name under ``model/``, ``ray-train/`` and ``cluster.storage``."""
    return f"fold_{index}"


def train_folds(
    step: TrainStep,
    folds: list[tuple[str, ...]],
    datasets_for: DatasetsFor,
    run_dir: Path,
    seed: int,
    resources: dict[str, float],
    init_checkpoints: Sequence[Path | None],
    storage: str | None = None,
) -> list[FoldOutcome]:
    """Train one model per fold, one after another, each validated (and scored out of fold) on its fold.

    Args:
        folds: the validation groups of each fold (:func:`segops.data.splits.fold_groups`).
        init_checkpoints: each fold's warm-start checkpoint (None: from scratch).
        storage: ``cluster.storage`` location of this run's checkpoints; fold ``i`` uses ``<storage>/fold_i``.

    Raises:
        StepError: a finished fold's record names other validation groups than ``folds`` (the
            split changed under a resumed run).
    """
    done = []
    for i, val_groups in enumerate(folds):
        name = fold_name(i)
        record = run_dir / "oof" / f"{name}.json"
        if record.is_file():
            finished = read_fold(record, run_dir / "model" / name)
            if finished.val_groups != tuple(val_groups):
                raise StepError(
                    f"{record} was validated on other groups than this run's fold {i}: the split changed since it "
                    "was trained; start a new run (or delete that run folder's oof/, model/ and ray-train/)"
                )
            log.info("fold %d/%d finished in an earlier attempt: kept", i + 1, len(folds))
            done.append(finished)
            continue
        log.info("fold %d/%d: validating on %d group(s)", i + 1, len(folds), len(val_groups))
        train_groups = [g for j, fold in enumerate(folds) if j != i for g in fold]
        train_ds, val_ds = datasets_for(train_groups, list(val_groups))
        outcome = train_model(
            step,
            train_ds,
            val_ds,
            run_dir / "ray-train" / name,
            run_dir / "model" / name,
            seed,
            resources,
            init_checkpoints[i],
            None if storage is None else join(storage, name),
            desc=f"fold {i + 1}/{len(folds)}",
        )
        loaded = load_checkpoint(outcome.checkpoint_dir, driver_device())
        cases = predict_cases(loaded, val_ds, run_dir / "oof", step.amp)
        finished = FoldOutcome(i, tuple(val_groups), outcome, tuple(cases))
        write_fold(record, finished)
        done.append(finished)
    return done


def cv_metrics(folds: Sequence[FoldOutcome]) -> dict[str, float]:
    """Out-of-fold Dice: ``cv_fold{i}_dice`` (mean over the fold's validation cases) and their mean
    over folds ``cv_dice_mean``; ``cv_fold{i}_fg_dice`` over the fold's foreground-bearing cases
    and ``cv_fg_dice_mean`` over the folds that have such cases (absent when none has)."""
    metrics: dict[str, float] = {}
    for fold in folds:
        metrics[f"cv_fold{fold.index}_dice"] = float(np.mean([c.dice for c in fold.cases]))
        fg = [c.dice for c in fold.cases if c.foreground]
        if fg:
            metrics[f"cv_fold{fold.index}_fg_dice"] = float(np.mean(fg))
    metrics["cv_dice_mean"] = float(np.mean([metrics[f"cv_fold{f.index}_dice"] for f in folds]))
    fg_means = [metrics[k] for k in metrics if k.endswith("_fg_dice")]
    if fg_means:
        metrics["cv_fg_dice_mean"] = float(np.mean(fg_means))
    return metrics


def write_fold(path: Path, fold: FoldOutcome) -> None:
    """The fold's record (atomically): its groups, training history and out-of-fold scores."""
    o = fold.outcome
    body = {
        "index": fold.index,
        "val_groups": list(fold.val_groups),
        "history": o.history,
        "best_epoch": o.best_epoch,
        "best_score": o.best_score,
        "used_gpu": o.used_gpu,
        "cases": [asdict(c) for c in fold.cases],
    }
    atomic_write_text(path, json.dumps(body, indent=1))


def read_fold(path: Path, checkpoint_dir: Path) -> FoldOutcome:
    """A finished fold from its record (:func:`write_fold`)."""
    body = json.loads(path.read_text(encoding="utf-8"))
    outcome = TrainOutcome(
        checkpoint_dir, body["history"], int(body["best_epoch"]), float(body["best_score"]), bool(body["used_gpu"])
    )
    cases = tuple(CaseScore(c["case_id"], float(c["dice"]), bool(c["foreground"])) for c in body["cases"])
    return FoldOutcome(int(body["index"]), tuple(body["val_groups"]), outcome, cases)


def predict_cases(loaded: LoadedModel, dataset: ray.data.Dataset, out_dir: Path, amp: bool) -> list[CaseScore]:
    """Predict every case of ``dataset`` (columns case_id, image, label; with ``preprocess.spacing``
    the spacing columns) on the driver and score it.

    Each case's (H, W) or (Z, H, W) uint8 class map and label go to ``out_dir/<case_id>.npz``
    (compressed, keys ``class_map`` and ``label``, written atomically; see :func:`prediction_file`).
    Predicted as the training validation predicts (whole images; 3D: the sliding window), so a
    fold's out-of-fold Dice is its kept epoch's validation Dice.
    """
    device = next(loaded.model.parameters()).device
    scores = []
    for case_id, image, label, spacing in _cases(dataset):
        (pred,) = predict_masks(loaded, [image], device, amp, scales=[image_scale(loaded.preprocess, spacing)])
        label = np.asarray(label).astype(np.uint8, copy=False)
        atomic_write(prediction_file(out_dir, case_id), lambda tmp, p=pred, t=label: _save_npz(tmp, p, t))
        dice = case_scores(pred, label, loaded.model_spec.classes)["dice"]
        scores.append(CaseScore(case_id, dice, bool(label.any())))
    return scores


def prediction_file(out_dir: Path, case_id: str) -> Path:
    """``out_dir/<case_id>.npz`` (characters outside ``A-Za-z0-9._-`` replaced by ``_``)."""
    return out_dir / f"{_SAFE.sub('_', case_id)}.npz"


def saved_maps(out_dir: Path, case_ids: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(predicted class maps, labels) of ``case_ids`` saved by :func:`predict_cases`, same order.

    All are read into memory: :func:`segops.engine.postprocess.choose_postprocessing`, their one
    consumer, holds every case at once anyway (fine for 2D sets; large for big 3D ones).
    """
    maps, labels = [], []
    for case_id in case_ids:
        with np.load(prediction_file(out_dir, case_id)) as data:
            maps.append(data["class_map"])
            labels.append(data["label"])
    return maps, labels


def _save_npz(path: Path, class_map: np.ndarray, label: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.savez on a path would append ".npz" to the temp name
        np.savez_compressed(f, class_map=class_map, label=label)


def _cases(dataset: ray.data.Dataset) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple[float, ...] | None]]:
    """(case id, image, label, spacing or None: :func:`~segops.cluster.infer.case_spacing`) of each row."""
    for batch in dataset.iter_batches(batch_size=8, batch_format="numpy"):
        for i, case_id in enumerate(batch["case_id"]):
            yield str(case_id), batch["image"][i], batch["label"][i], case_spacing(batch, i)


def driver_device() -> str:
    """Where the driver predicts validation cases: its GPU when it has one, else its CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"

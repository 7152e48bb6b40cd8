"""``train``: split by group, fit on Ray Train, log history and register the best model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from segops.cluster.datasets import read_dataset
from segops.cluster.train import train_model
from segops.config.schema import SplitSpec, TrainStep
from segops.errors import StepError
from segops.outputs.atomic import atomic_write_text
from segops.steps.context import RunContext
from segops.steps.ingest import dataset_meta

log = logging.getLogger(__name__)


def split_groups(groups: list[str], split: SplitSpec) -> tuple[list[str], list[str]]:
    """Deterministic train/val split of group ids (DICOM series, or image files).

    Splitting by group keeps all slices of a series on one side, so validation measures
    generalisation to unseen series rather than to neighbouring slices.

    Raises:
        StepError: fewer than two groups (nothing to hold out).
    """
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise StepError(f"need at least 2 labelled groups (series or images) to split train/val, found {len(unique)}")
    order = np.random.default_rng(split.seed).permutation(len(unique))
    n_val = min(len(unique) - 1, max(1, round(split.val_fraction * len(unique))))
    val = sorted(unique[i] for i in order[:n_val])
    train = sorted(unique[i] for i in order[n_val:])
    return train, val


def run(step: TrainStep, ctx: RunContext) -> dict[str, Any]:
    dataset = ctx.state["dataset"]
    meta = dataset_meta(dataset)
    labelled = meta[(meta["status"] == "ok") & meta["has_label"]]
    _check_channels(set(labelled["channels"]), step.model.in_channels)
    train_groups, val_groups = split_groups(labelled["group_id"].tolist(), step.split)
    n_train = int(labelled["group_id"].isin(train_groups).sum())
    n_val = len(labelled) - n_train
    log.info("training on %d cases (%d groups), validating on %d (%d groups)", n_train, len(train_groups), n_val, len(val_groups))
    split_file = atomic_write_text(
        ctx.run_dir / "split.json", json.dumps({"train": train_groups, "val": val_groups}, indent=2)
    )

    columns = ["image", "label"]
    train_ds = read_dataset(dataset, labelled_only=True, groups=train_groups, columns=columns).materialize()
    val_ds = read_dataset(dataset, labelled_only=True, groups=val_groups, columns=columns).materialize()
    outcome = train_model(
        step, train_ds, val_ds, ctx.run_dir / "ray-train", ctx.run_dir / "model", ctx.spec.seed, ctx.resources
    )

    tracker = ctx.tracker
    tracker.log_params(_flat_params(step) | {"train.cases": n_train, "val.cases": n_val, "train.used_gpu": outcome.used_gpu})
    score_name = "val_mask_ap" if step.model.task == "instance" else "val_dice"
    for row in outcome.history:
        per_epoch = {k: v for k, v in row.items() if k not in ("epoch", "val_score", "train_samples", "val_cases")}
        tracker.log_metrics(per_epoch, step=int(row["epoch"]))
    tracker.log_metrics({f"best_{score_name}": outcome.best_score, "best_epoch": outcome.best_epoch})
    log.info("best epoch %d of %d: %s %.4f", outcome.best_epoch + 1, step.epochs, score_name, outcome.best_score)
    tracker.log_artifact(split_file, "train")
    ctx.state |= {"checkpoint": outcome.checkpoint_dir, "val_groups": set(val_groups)}
    outputs: dict[str, Any] = {
        "checkpoint": str(outcome.checkpoint_dir),
        "best_epoch": outcome.best_epoch,
        f"best_{score_name}": outcome.best_score,
    }
    if step.register_model:
        name = ctx.spec.tracking.registered_model or f"{ctx.spec.name}-{step.model.arch}"
        example = val_ds.take(1)[0]["image"][None].astype(np.float32)
        registered = tracker.log_model(outcome.checkpoint_dir, name, example)
        ctx.state["model_uri"] = registered.model_uri
        outputs |= {"model_uri": registered.model_uri}
    return outputs


def _check_channels(found: set[int], in_channels: int) -> None:
    convertible = {in_channels} | ({1, 3} if in_channels in (1, 3) else set())
    bad = sorted(int(c) for c in found - convertible)
    if bad:
        raise StepError(f"dataset has images with {bad} channel(s); model.in_channels={in_channels} cannot take them")


def _flat_params(step: TrainStep) -> dict[str, Any]:
    """``model.arch``, ``preprocess.intensity.kind`` … from the step spec, for MLflow params."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    walk("", step.model_dump(mode="json", exclude={"step"}))
    return flat


def restore(step: TrainStep, outputs: dict[str, Any], ctx: RunContext) -> None:
    """Put a finished training's checkpoint, split and model URI back in the run context (resume)."""
    split = json.loads((ctx.run_dir / "split.json").read_text())
    ctx.state |= {"checkpoint": Path(outputs["checkpoint"]), "val_groups": set(split["val"])}
    if "model_uri" in outputs:
        ctx.state["model_uri"] = outputs["model_uri"]

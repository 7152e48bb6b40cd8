"""``train``: split by group, fit on Ray Train, log history and register the best model."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segops.cluster.datasets import dataset_digest, read_dataset
from segops.cluster.fingerprint import write_model_fingerprint
from segops.cluster.label_check import check_labels_fit
from segops.cluster.train import TrainOutcome, train_model
from segops.config.schema import TrainStep
from segops.data.records import STATUS_OK, dataset_meta
from segops.data.splits import split_groups
from segops.engine.checkpoint import load_checkpoint
from segops.engine.train import select_metric
from segops.errors import StepError
from segops.outputs.atomic import atomic_write_text
from segops.outputs.storage import join
from segops.steps.context import RunContext
from segops.steps.model_refs import checkpoint_for, pin
from segops.steps.results import IngestResult, TrainResult

log = logging.getLogger(__name__)


def run(step: TrainStep, ctx: RunContext) -> TrainResult:
    datasets = [_ingested(step, ctx), *(Path(p) for p in step.extra_datasets)]
    labelled, excluded = _labelled_cases(datasets)
    check_labels_fit(labelled, step.model.classes, step.model.task == "instance")  # in seconds, before any worker
    _check_channels(set(labelled["channels"]), step.model.in_channels)
    split = split_groups(
        labelled["group_id"].tolist(), step.split.val_fraction, step.split.test_fraction, step.split.seed
    )
    if step.split.test_fraction > 0 and not split.test:
        log.warning(
            "only %d labelled groups: no test set is held out, so no held-out figures", len(set(labelled["group_id"]))
        )
    train_groups, val_groups, test_groups = list(split.train), list(split.val), list(split.test)
    n_train = int(labelled["group_id"].isin(train_groups).sum())
    n_val = int(labelled["group_id"].isin(val_groups).sum())
    if n_train < step.scaling.workers:  # Ray splits training data equally: a worker would get nothing
        raise StepError(
            f"{n_train} training case(s) for {step.scaling.workers} workers; set scaling.workers to at most {n_train}"
        )
    log.info(
        "training on %d cases (%d groups), validating on %d (%d groups), %d test groups held out",
        n_train,
        len(train_groups),
        n_val,
        len(val_groups),
        len(test_groups),
    )
    split_file = atomic_write_text(
        ctx.run_dir / "split.json",
        json.dumps({"train": train_groups, "val": val_groups, "test": test_groups}, indent=2),
    )
    parent, init_checkpoint = _warm_start(step, ctx)

    columns = ["case_id", "image", "label"]
    train_ds = _union(datasets, excluded, train_groups, columns)
    val_ds = _union(datasets, excluded, val_groups, columns)
    outcome = train_model(
        step,
        train_ds,
        val_ds,
        ctx.run_dir / "ray-train",
        ctx.run_dir / "model",
        ctx.spec.seed,
        ctx.resources,
        init_checkpoint,
        checkpoint_storage(ctx.spec.cluster.storage, ctx.run_id),
    )

    tracker = ctx.tracker
    tracker.log_params(
        _flat_params(step)
        | {
            "train.cases": n_train,
            "val.cases": n_val,
            "train.used_gpu": outcome.used_gpu,
            "train.parent_model": parent or "none",
            "train.datasets": ",".join(str(d) for d in datasets),
        }
    )
    _log_datasets(tracker, datasets, labelled, set(train_groups))
    metric, best = _selection(step, outcome)
    for row in outcome.history:
        per_epoch = {
            k: v
            for k, v in row.items()
            if k not in ("epoch", "val_score", "train_samples", "val_cases", "val_fg_cases")
        }
        tracker.log_metrics(per_epoch, step=int(row["epoch"]))
    tracker.log_params({"train.select_metric": metric})
    tracker.log_metrics(best | {"best_epoch": outcome.best_epoch})
    log.info(
        "kept epoch %d of %d (%s by %s): %s",
        outcome.best_epoch + 1,
        step.epochs,
        step.select,
        metric,
        ", ".join(f"{k} {v:.4f}" for k, v in best.items()),
    )
    tracker.log_artifact(split_file, "train")
    tracker.log_artifact(
        write_model_fingerprint(datasets[0], outcome.checkpoint_dir, step.model.task, ctx.spec.seed), "train"
    )
    result = TrainResult(
        outcome.checkpoint_dir,
        frozenset(val_groups),
        outcome.best_epoch,
        metric,
        best,
        parent,
        test_groups=frozenset(test_groups),
    )
    if step.register_model:
        name = registered_name(ctx, step)
        example = _model_example(val_ds.take(1)[0]["image"], step)
        tags = {
            "segops.parent_model": parent or "none",
            "segops.spec_hash": ctx.spec_hash,
            "segops.workflow": ctx.spec.name,
        }
        registered = tracker.log_model(outcome.checkpoint_dir, name, example, version_tags=tags)
        result = replace(result, registered=(registered.name, registered.version), model_uri=registered.model_uri)
    return result


def _selection(step: TrainStep, outcome: TrainOutcome) -> tuple[str, dict[str, float]]:
    """(the validation metric that ranked the epochs, the kept epoch's ``best_*`` scores).

    U-Net: ``val_fg_dice`` when most validation cases are empty, else ``val_dice`` (decided in the
    workers from the validation counts, :func:`segops.engine.train.select_metric`); both are
    reported. Mask R-CNN: ``val_mask_ap``. With ``select: last`` no metric chose the epoch.
    """
    if step.model.task == "instance":
        return ("none (select: last)" if step.select == "last" else "val_mask_ap"), {
            "best_val_mask_ap": outcome.best_score
        }
    row = next(r for r in outcome.history if int(r["epoch"]) == outcome.best_epoch)
    metric = select_metric(int(row["val_cases"]), int(row.get("val_fg_cases", 0)))
    best = {"best_val_dice": row["val_dice"]} | (
        {"best_val_fg_dice": row["val_fg_dice"]} if "val_fg_dice" in row else {}
    )
    return ("none (select: last)" if step.select == "last" else metric), best


def _ingested(step: TrainStep, ctx: RunContext) -> Path:
    """The ingest step's slice dataset, or for a 3D model its volume dataset."""
    ingest = ctx.require(IngestResult, "train needs an ingest step before it")
    if step.model.spatial_dims == 2:
        return ingest.dataset
    if ingest.volumes is None:
        raise StepError(
            "model.spatial_dims: 3 trains on volume records, but the ingest step wrote none "
            "(no DICOM series with regular geometry: see its series table)"
        )
    return ingest.volumes


def _model_example(image: np.ndarray, step: TrainStep) -> np.ndarray:
    """A (1, C, H, W) input example for the registered model; a 3D model's (1, C, Z, H, W) is cut to
    the training patch, as MLflow stores the example as JSON (a whole CT would be hundreds of MB)."""
    if step.model.spatial_dims == 3:
        image = image[(slice(None), *(slice(0, p) for p in step.preprocess.patch_size))]
    return np.ascontiguousarray(image[None], dtype=np.float32)


def registered_name(ctx: RunContext, step: TrainStep) -> str:
    """The registry name a train step registers under: ``tracking.registered_model`` or ``<workflow>-<arch>``."""
    return ctx.spec.tracking.registered_model or f"{ctx.spec.name}-{step.model.arch}"


def _labelled_cases(datasets: list[Path]) -> tuple[pd.DataFrame, list[list[str]]]:
    """Labelled ``ok`` cases of every dataset (column ``dataset``); a case in more than one keeps
    the label of the first (this run's ingest: the newest labels). Returns, per dataset, the case
    ids it must not contribute because an earlier dataset has them."""
    parts, excluded, seen = [], [], set()
    for path in datasets:
        meta = dataset_meta(path)
        labelled = meta[(meta["status"] == STATUS_OK) & meta["has_label"]]
        dup = labelled["case_id"].isin(seen)
        excluded.append(labelled.loc[dup, "case_id"].tolist())
        parts.append(labelled[~dup].assign(dataset=str(path)))
        seen |= set(labelled["case_id"])
    relabelled = sum(map(len, excluded))
    if relabelled:
        log.info(
            "%d case(s) of older datasets are relabelled in this run's ingest: the new labels are used", relabelled
        )
    return pd.concat(parts, ignore_index=True), excluded


def _union(datasets: list[Path], excluded: list[list[str]], groups: list[str], columns: list[str]) -> Any:
    parts = [
        read_dataset(d, labelled_only=True, groups=groups, columns=columns, exclude_cases=ex)
        for d, ex in zip(datasets, excluded)
    ]
    union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return union.materialize()


def _warm_start(step: TrainStep, ctx: RunContext) -> tuple[str | None, Path | None]:
    """(pinned parent model reference for lineage, its checkpoint folder) for ``init_from``, or
    (None, None). An alias that does not exist yet (no champion) means training from scratch."""
    if step.init_from is None:
        return None, None
    if pin(step.init_from, ctx) is None:
        log.warning("%s does not exist yet: training from scratch", step.init_from)
        return None, None
    path, identity = checkpoint_for(step.init_from, ctx, "parent-model")
    parent_spec = load_checkpoint(path).model_spec
    if parent_spec.model_dump() != step.model.model_dump():
        raise StepError(
            f"init_from {step.init_from}: its model spec {parent_spec.model_dump(mode='json')} differs from this "
            f"step's {step.model.model_dump(mode='json')}; warm start needs the same architecture"
        )
    log.info("warm start from %s", identity["uri"])
    return identity["uri"], path


def _log_datasets(tracker: Any, datasets: list[Path], labelled: pd.DataFrame, train_groups: set[str]) -> None:
    """Each training dataset as an MLflow dataset input: source, case counts, content digest."""
    for path in datasets:
        cases = labelled[labelled["dataset"] == str(path)]
        profile = cases[["case_id", "group_id", "modality", "rel_path"]].assign(
            split=["train" if g in train_groups else "val" for g in cases["group_id"]]
        )
        digest = dataset_digest(path, set(cases["case_id"]))
        tracker.log_dataset(
            path.parent.name + "/" + path.name, str(path.resolve()), profile.reset_index(drop=True), digest, "training"
        )


def _check_channels(found: set[int], in_channels: int) -> None:
    convertible = {in_channels} | ({1, 3} if in_channels in (1, 3) else set())
    bad = sorted(int(c) for c in found - convertible)
    if bad:
        raise StepError(f"dataset has images with {bad} channel(s); model.in_channels={in_channels} cannot take them")


def checkpoint_storage(storage: str | None, run_id: str) -> str | None:
    """This run's checkpoint location under ``cluster.storage`` (``<storage>/<run-id>``, query kept)."""
    return None if storage is None else join(storage, run_id)


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


def reload(step: TrainStep, outputs: dict[str, Any], ctx: RunContext) -> TrainResult:
    """A finished training's result (checkpoint, split, registered version) from its manifest outputs."""
    return TrainResult.from_manifest(outputs, ctx.run_dir / "split.json")

"""``train``: split by group, fit on Ray Train, log history and register the best model.

With ``folds: k`` > 1 the non-test groups are cut into k folds and one model is trained per fold
(:mod:`segops.cluster.folds`); the kept checkpoint ``model/`` is their ensemble, registered as one
model version. Postprocessing is chosen on the validation (or out-of-fold) predictions and stored
in the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segops.cluster.calibration import write_risk_calibration
from segops.cluster.datasets import dataset_digest, load_dataset
from segops.cluster.embeddings import write_model_embeddings
from segops.cluster.fingerprint import fingerprint_dataset, log_fingerprint, write_fingerprint
from segops.cluster.folds import cv_metrics, driver_device, fold_name, predict_cases, saved_maps, train_folds
from segops.cluster.label_check import check_labels_fit
from segops.cluster.postprocess_choice import store_postprocessing
from segops.cluster.scaling import resolve_scaling
from segops.cluster.train import TrainOutcome, train_model
from segops.config.schema import TrainStep
from segops.config.sources import ignores_void
from segops.data.fingerprint import Fingerprint
from segops.data.records import SPACING_COLUMNS, STATUS_OK, dataset_meta
from segops.data.splits import split_labelled
from segops.engine.checkpoint import (
    INIT_WEIGHTS_KEY,
    InitialWeights,
    fold_dirs,
    initial_checkpoint,
    load_checkpoint,
    save_ensemble,
    update_meta,
)
from segops.engine.memory import TrainingImage, largest_training_image
from segops.engine.train import select_metric
from segops.errors import StepError
from segops.outputs.atomic import atomic_write_text
from segops.outputs.storage import join
from segops.steps.context import RunContext
from segops.steps.model_refs import checkpoint_for, pin
from segops.steps.results import IngestResult, TrainResult

log = logging.getLogger(__name__)

#: Where a single model's predictions of its validation cases go (out-of-fold ones: ``oof/``).
VAL_PREDICTIONS = "val-predictions"
_NOT_PER_EPOCH = ("epoch", "val_score", "train_samples", "val_cases", "val_fg_cases")


def run(step: TrainStep, ctx: RunContext) -> TrainResult:
    if step.folds > 1 and step.model.task == "instance":
        raise StepError(
            f"train.folds: {step.folds} cross-validates semantic models; Mask R-CNN (arch: maskrcnn) trains one "
            "model: set folds: 1"
        )
    step = step.model_copy(update={"scaling": resolve_scaling(step.scaling, ctx.resources)})  # GPUs: one worker each
    # published or local starting weights: found, read and fitted on the driver before any worker starts
    initial = _starting_weights(step, ctx) if step.init_from is None else None
    ingest = ctx.require(IngestResult, "train needs an ingest step before it")
    datasets = [_ingested(step, ingest), *(Path(p) for p in step.extra_datasets)]
    labelled, excluded = _labelled_cases(datasets)
    if labelled.empty:
        raise StepError(_nothing_to_train(ingest))
    ignore = ignores_void(ingest.source.labels)
    check_labels_fit(labelled, step.model.classes, step.model.task == "instance", ignore)  # before any worker
    _check_channels(set(labelled["channels"]), step.model.in_channels)
    split = _split(step, labelled, ctx.run_dir)
    parent, init_checkpoints = _warm_start(step, ctx)
    if parent is None and step.init_from is not None:  # no champion yet: start as if init_from were unset
        initial = _starting_weights(step, ctx)
    if initial is not None:
        init_checkpoints = [initial.checkpoint] * step.folds
    columns = ["case_id", "image", "label", *(SPACING_COLUMNS if step.preprocess.spacing else ())]

    def datasets_for(train_groups: list[str], val_groups: list[str]) -> tuple[Any, Any]:
        return _union(datasets, excluded, train_groups, columns), _union(datasets, excluded, val_groups, columns)

    storage = checkpoint_storage(ctx.spec.cluster.storage, ctx.run_id)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint") as pool:
        # the training data's fingerprint (a Ray Data pass of its own) is taken while Ray Train
        # starts its workers, instead of after training
        fingerprinting = pool.submit(fingerprint_dataset, datasets[0], step.model.task, seed=ctx.spec.seed)
        if split.folds:
            trained = _train_folds(step, ctx, split.folds, datasets_for, init_checkpoints, storage)
        else:
            trained = _train_single(step, ctx, split, datasets_for, init_checkpoints[0], storage)
    tracker = ctx.tracker
    tracker.log_params(
        _flat_params(step)
        | {
            "train.cases": split.n_train,
            "val.cases": split.n_val,
            "train.used_gpu": trained.used_gpu,
            "train.parent_model": parent or "none",
            "train.datasets": ",".join(str(d) for d in datasets),
            "train.select_metric": trained.select_metric,
        }
        | (initial.params() if initial is not None else {"train.init_weights": "none"})
    )
    if initial is not None:
        update_meta(trained.checkpoint, {INIT_WEIGHTS_KEY: initial.lineage()})
        report = atomic_write_text(
            ctx.run_dir / "init_weights.json", json.dumps([r.to_json() for r in initial.reports], indent=2)
        )
        tracker.log_artifact(report, "train")
    _log_datasets(tracker, datasets, labelled, split)
    taken = log_fingerprint(fingerprint_taken(fingerprinting, datasets[0], step.model.task, ctx.spec.seed))
    fingerprint = write_fingerprint(taken, trained.checkpoint)
    if trained.predictions is not None:
        smallest = _smallest_object(fingerprint)
        # training cases join where validation is short of a class (2D semantic models)
        supplement = step.model.task == "semantic" and step.model.spatial_dims == 2
        training = (str(datasets[0]), list(split.train), ctx.spec.seed) if supplement else None
        store_postprocessing(
            trained.checkpoint, trained.predictions, trained.source, step.model.classes, ctx.tracker, smallest, training
        )
    tracker.log_artifact(ctx.run_dir / "split.json", "train")
    tracker.log_artifact(fingerprint, "train")
    write_model_embeddings(datasets[0], trained.checkpoint, split.train, ctx.spec.seed)  # drift: embeddings.npz
    if split.val:  # the review queue's risk, calibrated on the validation cases (folds keep none)
        calibration = write_risk_calibration(datasets[0], trained.checkpoint, split.val, ctx.spec.seed)
        if calibration is not None:
            tracker.log_artifact(calibration, "train")
    result = TrainResult(
        trained.checkpoint,
        frozenset(split.val),
        trained.best_epoch,
        trained.select_metric,
        trained.best,
        parent,
        test_groups=frozenset(split.test),
        folds=step.folds,
    )
    if step.register_model:
        name = registered_name(ctx, step)
        image = trained.example
        if image is None:  # the folds' datasets stayed in train_folds: read one group for the example
            image = _union(datasets, excluded, [split.train[0]], columns).take(1)[0]["image"]
        example = model_example(image, step)
        tags = {
            "segops.parent_model": parent or "none",
            "segops.spec_hash": ctx.spec_hash,
            "segops.workflow": ctx.spec.name,
        } | ({"segops.init_weights": initial.describe()} if initial is not None else {})
        registered = tracker.log_model(trained.checkpoint, name, example, version_tags=tags)
        result = replace(result, registered=(registered.name, registered.version), model_uri=registered.model_uri)
    return result


def fingerprint_taken(pending: Future, dataset: Path, task: str, seed: int) -> Fingerprint:
    """The fingerprint pass taken beside training, or taken again once if it failed: a node lost
    mid-training (which Ray Train survives) can take the pass's read or map tasks with it."""
    try:
        return pending.result()
    except Exception as exc:  # the pass's Ray Data errors wrap Ray's (e.g. SystemException over ActorDiedError)
        log.warning("the training data's fingerprint pass failed (%s: %s); taking it again", type(exc).__name__, exc)
        return fingerprint_dataset(dataset, task, seed=seed)


@dataclass(frozen=True)
class _Split:
    """The run's split as trained: with folds, ``train`` holds every non-test group and ``val`` none."""

    train: list[str]
    val: list[str]
    test: list[str]
    folds: list[tuple[str, ...]]
    n_train: int
    n_val: int
    largest_image: TrainingImage | None = None  # a Mask R-CNN's, as it trains: its workers' memory probe


def _split(step: TrainStep, labelled: pd.DataFrame, run_dir: Path) -> _Split:
    """Split the groups (and with ``folds`` > 1 cut the non-test ones into folds), check every
    training run gets a case per worker, and write ``split.json`` (``train``, ``val``, ``test``, and
    ``folds``: each fold's validation groups)."""
    groups, split_spec = labelled["group_id"], step.split
    split, folds = split_labelled(
        labelled, split_spec.val_fraction, split_spec.test_fraction, split_spec.seed, step.folds
    )
    if split_spec.test_fraction > 0 and not split.test:
        log.warning("only %d labelled groups: no test set is held out, so no held-out figures", groups.nunique())
    train, val = list(split.train), list(split.val)
    if step.folds > 1:
        train, val = sorted(train + val), []
    n_train, n_val = int(groups.isin(train).sum()), int(groups.isin(val).sum())
    fewest = min((n_train - int(groups.isin(f).sum()) for f in folds), default=n_train)
    if fewest < step.scaling.workers:  # rows are split equally (cluster.shards): a worker would get none
        raise StepError(
            f"{fewest} training case(s) for {step.scaling.workers} workers; set scaling.workers to at most {fewest}"
        )
    if folds:
        log.info(
            "%d-fold cross-validation over %d cases (%d groups), %d test groups held out",
            len(folds),
            n_train,
            len(train),
            len(split.test),
        )
    else:
        log.info(
            "training on %d cases (%d groups), validating on %d (%d groups), %d test groups held out",
            n_train,
            len(train),
            n_val,
            len(val),
            len(split.test),
        )
    body = {"train": train, "val": val, "test": list(split.test)} | (
        {"folds": [list(f) for f in folds]} if folds else {}
    )
    atomic_write_text(run_dir / "split.json", json.dumps(body, indent=2))
    image = largest_training_image(labelled[groups.isin(train)], step.model) if step.model.task == "instance" else None
    return _Split(train, val, list(split.test), folds, n_train, n_val, image)


@dataclass(frozen=True)
class _Trained:
    """What training left for the rest of the step: the checkpoint (one model or the folds'
    ensemble), the run-level metrics, and the validation predictions postprocessing is chosen on."""

    checkpoint: Path
    best_epoch: int  # -1 for an ensemble: each fold kept its own (see its fold{i}_best_epoch)
    select_metric: str
    best: dict[str, float]
    used_gpu: bool
    predictions: tuple[list[np.ndarray], list[np.ndarray]] | None  # (class maps, labels); None for Mask R-CNN
    source: str  # "validation" | "out-of-fold"
    example: np.ndarray | None = None  # a validation image for the registered model's input example


def _train_single(
    step: TrainStep,
    ctx: RunContext,
    split: _Split,
    datasets_for: Any,
    init_checkpoint: Path | None,
    storage: str | None,
) -> _Trained:
    """One model: fit, log its history and kept epoch, predict its validation cases (semantic)."""
    train_ds, val_ds = datasets_for(split.train, split.val)
    run_dir = ctx.run_dir
    outcome = train_model(
        step,
        train_ds,
        val_ds,
        run_dir / "ray-train",
        run_dir / "model",
        ctx.spec.seed,
        ctx.resources,
        init_checkpoint,
        storage,
        image=split.largest_image,
    )
    metric, best = _selection(step, outcome)
    _log_history(ctx.tracker, outcome.history, "")
    ctx.tracker.log_metrics(best | {"best_epoch": outcome.best_epoch})
    how = "the last, select: last" if step.select == "last" else f"{step.select} by {metric}"
    scores = ", ".join(f"{k} {v:.4f}" for k, v in best.items())
    log.info("kept epoch %d of %d (%s): %s", outcome.best_epoch + 1, step.epochs, how, scores)
    predictions = None
    if step.model.task != "instance":
        loaded = load_checkpoint(outcome.checkpoint_dir, driver_device())
        scores = predict_cases(loaded, val_ds, run_dir / VAL_PREDICTIONS, step.amp)
        predictions = saved_maps(run_dir / VAL_PREDICTIONS, [c.case_id for c in scores])
    example = val_ds.take(1)[0]["image"]  # val_ds is materialised: no second read
    return _Trained(
        outcome.checkpoint_dir, outcome.best_epoch, metric, best, outcome.used_gpu, predictions, "validation", example
    )


def _train_folds(
    step: TrainStep,
    ctx: RunContext,
    folds: list[tuple[str, ...]],
    datasets_for: Any,
    init_checkpoints: list[Path | None],
    storage: str | None,
) -> _Trained:
    """k fold models (:func:`segops.cluster.folds.train_folds`), their ``fold{i}_`` histories and cv
    metrics logged, and ``model/`` made their ensemble checkpoint."""
    run_dir = ctx.run_dir
    done = train_folds(step, folds, datasets_for, run_dir, ctx.spec.seed, ctx.resources, init_checkpoints, storage)
    for fold in done:
        _log_history(ctx.tracker, fold.outcome.history, f"fold{fold.index}_")
    best = cv_metrics(done)
    ctx.tracker.log_metrics(best | {f"fold{f.index}_best_epoch": f.outcome.best_epoch for f in done})
    log.info("cross-validation (out-of-fold Dice): %s", ", ".join(f"{k} {v:.4f}" for k, v in best.items()))
    checkpoint = save_ensemble(run_dir / "model", [fold_name(f.index) for f in done], step.model, step.preprocess)
    metric = ",".join(sorted({_selection(step, f.outcome)[0] for f in done}))
    case_ids = [c.case_id for f in done for c in f.cases]
    used_gpu = any(f.outcome.used_gpu for f in done)
    return _Trained(checkpoint, -1, metric, best, used_gpu, saved_maps(run_dir / "oof", case_ids), "out-of-fold")


def _log_history(tracker: Any, history: list[dict[str, float]], prefix: str) -> None:
    """Each epoch's metrics at MLflow step = epoch, names prefixed (``fold0_val_dice``) for a fold."""
    for row in history:
        per_epoch = {f"{prefix}{k}": v for k, v in row.items() if k not in _NOT_PER_EPOCH}
        tracker.log_metrics(per_epoch, step=int(row["epoch"]))


def _smallest_object(fingerprint_file: Path) -> float | None:
    """The 5th percentile of object sizes in the training set's fingerprint (None if unknown): the
    postprocessing may not remove components that small, though the deciding cases lack them."""
    objects = json.loads(fingerprint_file.read_text(encoding="utf-8")).get("objects") or {}
    size = objects.get("size_p05")
    return float(size) if size else None


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


def _ingested(step: TrainStep, ingest: IngestResult) -> Path:
    """The ingest step's slice dataset, or for a 3D model its volume dataset."""
    if step.model.spatial_dims == 2:
        return ingest.dataset
    if ingest.volumes is None:
        raise StepError(
            "model.spatial_dims: 3 trains on volume records, but the ingest step wrote none "
            "(no DICOM series with regular geometry: see its series table)"
        )
    return ingest.volumes


def model_example(image: np.ndarray, step: TrainStep) -> np.ndarray:
    """A (1, C, H, W) — 3D: (1, C, Z, H, W) — input example for the registered model, cut to the
    region one training patch covers (the patch, over ``preprocess.scale`` for a 2D model that
    resizes its input): MLflow stores the example as JSON and runs the model on it when it logs it
    (a whole CT would be hundreds of MB; a 12-megapixel photo's example took 45 s of the train step),
    and a smaller cut could be too small for the network's deepest level."""
    scale = step.preprocess.scale if step.model.spatial_dims == 2 else 1.0
    image = image[(slice(None), *(slice(0, math.ceil(p / scale)) for p in step.preprocess.patch_size))]
    return np.ascontiguousarray(image[None], dtype=np.float32)


def registered_name(ctx: RunContext, step: TrainStep) -> str:
    """The registry name a train step registers under: ``tracking.registered_model`` or ``<workflow>-<arch>``."""
    return ctx.spec.tracking.registered_model or f"{ctx.spec.name}-{step.model.arch}"


def _nothing_to_train(ingest: IngestResult) -> str:
    """Why a run has no labelled case to train on, from the ingest's figures and its quarantine table."""
    m = ingest.metrics
    said = (
        f"train: no labelled case to train on: ingest read {int(m.get('ingest_records', 0))} image(s), "
        f"{int(m.get('ingest_labelled', 0))} with a label"
    )
    quarantine = ingest.tables.get("quarantine")
    table = pd.read_parquet(quarantine) if quarantine is not None and Path(quarantine).exists() else pd.DataFrame()
    if len(table):
        first = table.iloc[0]
        said += (
            f"; {len(table)} file(s) not read or read without their label are listed in {quarantine} (e.g. "
            f"{first['rel_path']}: {first['error']})"
        )
    return said + "; check the source's labels (path, pattern) and its skip / modalities / include / exclude"


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
        load_dataset(d, labelled_only=True, groups=groups, columns=columns, exclude_cases=ex)
        for d, ex in zip(datasets, excluded)
    ]
    return parts[0].union(*parts[1:]).materialize() if len(parts) > 1 else parts[0]


def _warm_start(step: TrainStep, ctx: RunContext) -> tuple[str | None, list[Path | None]]:
    """(pinned parent model reference for lineage, each fold's warm-start checkpoint folder) for
    ``init_from``, or (None, [None] * folds). An ensemble parent gives fold i its fold i (the fold
    counts must match); a single-model parent starts every fold. An alias that does not exist yet
    (no champion) means training from scratch."""
    if step.init_from is None or pin(step.init_from, ctx) is None:
        if step.init_from is not None:
            log.warning("%s does not exist yet: training from scratch", step.init_from)
        return None, [None] * step.folds
    path, identity = checkpoint_for(step.init_from, ctx, "parent-model")
    parent_spec = load_checkpoint(path).model_spec
    if parent_spec.model_dump() != step.model.model_dump():
        raise StepError(
            f"init_from {step.init_from}: its model spec {parent_spec.model_dump(mode='json')} differs from this "
            f"step's {step.model.model_dump(mode='json')}; warm start needs the same architecture"
        )
    parent_folds: list[Path | None] = list(fold_dirs(path))
    if parent_folds and len(parent_folds) != step.folds:
        raise StepError(
            f"init_from {step.init_from}: an ensemble of {len(parent_folds)} fold models, but this step trains "
            f"folds: {step.folds}; a fold ensemble warm-starts fold by fold: set train.folds: {len(parent_folds)}, "
            "or start from a single model"
        )
    log.info("warm start from %s", identity["uri"])
    return identity["uri"], parent_folds or [path] * step.folds


def _starting_weights(step: TrainStep, ctx: RunContext) -> InitialWeights | None:
    """``model.weights`` / ``backbone_weights`` / ``encoder_weights`` / ``weights_path`` loaded into
    the untrained network and saved under ``init-weights/`` for the workers to warm-start from."""
    initial = initial_checkpoint(ctx.run_dir / "init-weights", step.model, step.preprocess)
    if initial is not None:
        log.info("starting weights: %s", "; ".join(r.summary() for r in initial.reports))
    return initial


def _log_datasets(tracker: Any, datasets: list[Path], labelled: pd.DataFrame, split: _Split) -> None:
    """Each training dataset as an MLflow dataset input: source, case counts (split ``train``,
    ``val`` or ``test``; with folds every non-test case is ``train``), content digest."""
    parts = {g: "train" for g in split.train} | {g: "val" for g in split.val} | {g: "test" for g in split.test}
    for path in datasets:
        cases = labelled[labelled["dataset"] == str(path)]
        profile = cases[["case_id", "group_id", "modality", "rel_path"]].assign(
            split=[parts.get(g, "-") for g in cases["group_id"]]
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

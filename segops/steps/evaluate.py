"""``evaluate``: champion and challenger on the same frozen held-out cases, compared in one run.

Both models go through the segment step's actor-pool inference (same preprocessing, same
metrics) on the held-out source; per-case tables for both are logged, and the paired comparison
(mean Dice difference with a bootstrap CI, per-class and per-subgroup deltas) is kept for the
promote step.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from segops.cluster.datasets import load_dataset, read_source
from segops.cluster.fingerprint import FINGERPRINT_FILE
from segops.cluster.infer import segment_dataset, size_actor_pool
from segops.compare import Comparison, compare
from segops.config.schema import DatasetSource, EvaluateStep
from segops.data.records import STATUS_OK
from segops.engine.cases import InferenceSettings
from segops.engine.checkpoint import LoadedModel, load_checkpoint
from segops.engine.risk import RiskReference
from segops.errors import StepError
from segops.metrics.risk_quality import risk_quality
from segops.outputs.atomic import atomic_write_text
from segops.outputs.case_outputs import OutputConfig, checkpoint_digest
from segops.outputs.reports import write_table
from segops.outputs.storage import join
from segops.steps.actor_memory import sized_for_run
from segops.steps.context import RunContext
from segops.steps.drift import with_model_inputs
from segops.steps.model_refs import checkpoint_for, step_checkpoint
from segops.steps.results import EvaluateResult, TrainResult

log = logging.getLogger(__name__)

#: Per-case columns kept in the evaluation tables (which add ``split = "test"``: every case is held out).
CASE_COLUMNS = (
    "case_id",
    "group_id",
    "rel_path",
    "frame",
    "source_uri",
    "modality",
    "dice",
    "iou",
    "dice_per_class",
    "mask_path",
)
#: Each case's risk (segops.engine.risk) and its reasons, after ``CASE_COLUMNS``: the figures of
#: segops.metrics.risk_quality say how well each model's risk ranks its own bad masks.
RISK_CASE_COLUMNS = ("risk", "risk_reasons")


def _champion_ref(step: EvaluateStep, ctx: RunContext) -> str | None:
    if step.champion is not None:
        return step.champion
    train = ctx.latest(TrainResult)
    name = train.registered[0] if train is not None and train.registered else ctx.spec.tracking.registered_model
    if name is None:
        return None
    return f"models:/{name}@champion" if ctx.tracker.alias_version(name, "champion") else None


def _challenger(step: EvaluateStep, ctx: RunContext) -> tuple[Path, dict[str, str]]:
    return step_checkpoint(step.challenger, ctx, "evaluate", "challenger-model", role="challenger")


def _held_out(step: EvaluateStep, read_cpus: float):
    if isinstance(step.source, DatasetSource):
        return load_dataset(step.source.path, materialize=False, num_cpus=read_cpus)  # the driver reads a small one
    return read_source(step.source, streaming=True, num_cpus=read_cpus)


def _settings(step: EvaluateStep) -> InferenceSettings:
    """EvaluateStep sets no amp / sliding_window: the segment step's defaults, with the step's mirroring."""
    return InferenceSettings(tta=step.tta, measure=False)  # sizes are the segment step's output


def _evaluate_one(
    step: EvaluateStep, ctx: RunContext, role: str, checkpoint: Path, loaded: LoadedModel
) -> pd.DataFrame:
    """Segment the held-out set with one model (``loaded`` from ``checkpoint``); its per-case table
    (labelled ``ok`` cases)."""
    root = ctx.node_dir("evaluate", role)
    config = OutputConfig(str(root), ("png",), "mirror", {}, loaded.model_spec.classes, checkpoint_digest(checkpoint))
    # each model's risk against its own training fingerprint
    settings = replace(_settings(step), reference=RiskReference.from_model_dir(checkpoint, FINGERPRINT_FILE))
    dataset = step.source.path if isinstance(step.source, DatasetSource) else None
    pool = sized_for_run(
        size_actor_pool(step.actors, ctx.resources),
        loaded,
        settings,
        step.batch_size,
        dataset,
        checkpoint,
        ctx.resources.get("memory"),
    )
    log.info("evaluating the %s on the held-out (test) set", role)
    run_ = segment_dataset(
        _held_out(step, pool.read_cpus), checkpoint, config, join(root, "parts"), pool, step.batch_size, settings
    )
    results = run_.results
    cases = results[(results["status"] == STATUS_OK) & results["has_label"].astype(bool)]
    if cases.empty:
        raise StepError(
            f"evaluate: the held-out source {step.source.path} has no labelled cases the {role} could segment"
        )
    # the report's name for held-out cases, so an audit reads these tables as held-out like a test split
    table = cases[[*CASE_COLUMNS, *RISK_CASE_COLUMNS]].assign(split="test")
    return table.sort_values("case_id").reset_index(drop=True)


def _check_no_leakage(cases: pd.DataFrame, ctx: RunContext) -> None:
    """Refuse held-out cases whose group this run trained on, or validated on (validation chose the
    checkpoint, so it is not held out either); the run's test groups may be evaluated."""
    split_file = ctx.run_dir / "split.json"
    if not split_file.exists():
        return
    split = json.loads(split_file.read_text())
    for part, what in (("train", "were trained on"), ("val", "chose the checkpoint (validation groups)")):
        leaked = sorted(set(cases["group_id"]) & set(split.get(part, ())))
        if leaked:
            raise StepError(
                f"evaluate: {len(leaked)} held-out group(s) {what} in this run (e.g. {leaked[:3]}); "
                "the held-out set must be disjoint from the training and validation data"
            )


def run(step: EvaluateStep, ctx: RunContext) -> EvaluateResult:
    out_dir = ctx.run_dir / "evaluate"
    challenger_path, challenger_id = _challenger(step, ctx)
    step = with_model_inputs(step, challenger_path)  # both models read the held-out set as the challenger was trained
    champion_ref = _champion_ref(step, ctx)
    paths, champion_id = {"challenger": challenger_path}, None
    if champion_ref is not None:
        paths["champion"], champion_id = checkpoint_for(champion_ref, ctx, "champion-model")
        if champion_id.get("uri") and champion_id.get("uri") == challenger_id.get("uri"):
            raise StepError(f"evaluate: champion and challenger are the same model ({champion_id['uri']})")
    else:
        log.info("no champion yet: evaluating the challenger alone")
    models = {role: load_checkpoint(path) for role, path in paths.items()}
    for loaded in models.values():  # both models take the settings, before any actor starts
        _settings(step).check_model(loaded.model_spec, "evaluate")
    ctx.tracker.log_params({"evaluate.tta.flip_axes": list(step.tta.flip_axes)})
    tables = {"challenger": _evaluate_one(step, ctx, "challenger", challenger_path, models["challenger"])}
    _check_no_leakage(tables["challenger"], ctx)
    if "champion" in models:
        tables["champion"] = _evaluate_one(step, ctx, "champion", paths["champion"], models["champion"])
    for role, table in tables.items():
        _, csv = write_table(table, out_dir / f"{role}_cases")
        ctx.tracker.log_artifact(csv, "evaluate")
        ctx.tracker.log_artifact(out_dir / f"{role}_cases.parquet", "evaluate")
    evaluation = {"champion": champion_id, "challenger": challenger_id, "held_out": str(step.source.path)}
    metrics, comparison = _compare(step, ctx, tables, evaluation)
    return EvaluateResult(evaluation, len(tables["challenger"]), metrics, comparison)


def _compare(
    step: EvaluateStep, ctx: RunContext, tables: dict[str, pd.DataFrame], evaluation: dict
) -> tuple[dict[str, float], Comparison | None]:
    """Compare (when there is a champion), write and log the evidence; returns the metrics logged
    and the comparison (for promote)."""
    out_dir = ctx.run_dir / "evaluate"
    comparison = _comparison(step, ctx, tables)
    summary: dict[str, Any] = {"evaluation": evaluation}
    if comparison is not None:
        summary |= comparison.to_dict()
        for name, frame in (
            ("paired", comparison.paired),
            ("classes", comparison.classes),
            ("subgroups", comparison.subgroups),
        ):
            _, csv = write_table(frame.reset_index(drop=True), out_dir / name)
            ctx.tracker.log_artifact(csv, "evaluate")
    path = atomic_write_text(out_dir / "comparison.json", json.dumps(summary, indent=2, default=str))
    ctx.tracker.log_artifact(path, "evaluate")
    metrics = _metrics(tables, comparison)
    ctx.tracker.log_metrics(metrics)
    return metrics, comparison


def _comparison(step: EvaluateStep, ctx: RunContext, tables: dict[str, pd.DataFrame]) -> Comparison | None:
    """The paired comparison (seeded: a resumed run rebuilds the same numbers); None without a champion."""
    if "champion" not in tables:
        return None
    return compare(
        tables["champion"], tables["challenger"], step.subgroups, step.bootstrap, step.confidence, ctx.spec.seed
    )


def _metrics(tables: dict[str, pd.DataFrame], comparison: Comparison | None) -> dict[str, float]:
    metrics = {f"evaluate_{role}_dice_mean": float(t["dice"].mean()) for role, t in tables.items()}
    metrics |= {f"evaluate_{role}_iou_mean": float(t["iou"].mean()) for role, t in tables.items()}
    metrics["evaluate_cases"] = float(len(tables["challenger"]))
    for role, t in tables.items():  # how well each model's risk ranks its own bad masks
        if "risk" in t.columns:  # tables of an evaluation before the risk existed have none
            metrics |= {f"evaluate_{role}_{k}": v for k, v in risk_quality(t["risk"], t["dice"]).items()}
    if comparison is not None:
        metrics |= {
            "evaluate_dice_gain": comparison.mean_diff,
            "evaluate_dice_gain_ci_low": comparison.ci_low,
            "evaluate_dice_gain_ci_high": comparison.ci_high,
        }
    return metrics


def reload(step: EvaluateStep, outputs: dict[str, Any], ctx: RunContext) -> EvaluateResult:
    """A finished evaluation's result; the comparison is rebuilt from the stored per-case tables
    (same seed: same numbers)."""
    out_dir = ctx.run_dir / "evaluate"
    tables = {
        role: pd.read_parquet(out_dir / f"{role}_cases.parquet")
        for role in ("champion", "challenger")
        if (out_dir / f"{role}_cases.parquet").exists()
    }
    metrics = {k: float(v) for k, v in outputs.items() if k.startswith("evaluate_")}
    return EvaluateResult(outputs["evaluation"], int(outputs["cases"]), metrics, _comparison(step, ctx, tables))

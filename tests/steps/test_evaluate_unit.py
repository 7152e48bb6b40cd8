"""The evaluate step's parts that need no inference: which models it compares, the leakage check,
and the comparison it writes, logs and rebuilds on resume (real MLflow sqlite, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segops.config.schema import DatasetSource, EvaluateStep
from segops.errors import StepError
from segops.outputs.reports import write_table
from segops.steps import evaluate
from segops.steps.context import RunContext

from .contexts import make_context, tiny_checkpoint, trained

SEED, RESAMPLES = 7, 300


def _step(**fields) -> EvaluateStep:
    source = DatasetSource(kind="dataset", path=Path("/held-out"))
    return EvaluateStep(step="evaluate", source=source, bootstrap=RESAMPLES, subgroups=("modality",), **fields)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evaluate")


def _cases(dice: np.ndarray, class_1: np.ndarray) -> pd.DataFrame:
    """A per-case table with evaluate's CASE_COLUMNS; cases 0-5 CT, 6-9 MR."""
    n = len(dice)
    return pd.DataFrame(
        {
            "case_id": [f"case-{i:02d}" for i in range(n)],
            "group_id": [f"series-{i // 2}" for i in range(n)],
            "rel_path": [f"img/{i}.png" for i in range(n)],
            "frame": 0,
            "source_uri": [f"/held-out/img/{i}.png" for i in range(n)],
            "modality": ["CT"] * 6 + ["MR"] * (n - 6),
            "dice": dice,
            "iou": dice / (2 - dice),
            "dice_per_class": [json.dumps({"1": float(v)}) for v in class_1],
            "mask_path": [f"/out/{i}.png" for i in range(n)],
        }
    )[list(evaluate.CASE_COLUMNS)]


def test_champion_defaults_to_the_registered_models_champion_alias_once_it_exists(store: Path) -> None:
    ctx = make_context(store, run="champion-ref")
    assert evaluate._champion_ref(_step(), ctx) is None  # no registered model named anywhere
    ctx.tracker.client.create_registered_model("liver")
    ctx.tracker.client.create_model_version("liver", source=str(ctx.run_dir), run_id=ctx.run_id)
    ctx.results.append(trained(ctx.run_dir, ("liver", "1")))
    assert evaluate._champion_ref(_step(), ctx) is None  # registered, but no champion yet
    ctx.tracker.set_alias("liver", "champion", "1")
    assert evaluate._champion_ref(_step(), ctx) == "models:/liver@champion"
    assert evaluate._champion_ref(_step(champion="/models/old"), ctx) == "/models/old"


def test_challenger_is_the_named_model_or_this_runs_registered_model(store: Path) -> None:
    ctx = make_context(store, run="challenger")
    with pytest.raises(StepError, match=r"^evaluate: no challenger given and no train step before this one$"):
        evaluate._challenger(_step(), ctx)
    folder = tiny_checkpoint(store / "trained", seed=0)
    ctx.results.append(trained(folder, ("liver", "4")))
    assert evaluate._challenger(_step(), ctx) == (
        folder,
        {"ref": str(folder), "name": "liver", "version": "4", "uri": "models:/liver/4"},
    )
    assert evaluate._challenger(_step(challenger=str(folder)), ctx) == (
        folder,
        {"ref": str(folder), "uri": str(folder)},
    )


def test_held_out_groups_that_were_trained_on_are_refused(store: Path) -> None:
    ctx = make_context(store, run="leakage")
    cases = _cases(np.full(10, 0.5), np.full(10, 0.5))
    evaluate._check_no_leakage(cases, ctx)  # no split in this run: nothing to check
    (ctx.run_dir / "split.json").write_text(json.dumps({"train": ["series-9", "series-8"], "val": []}))
    evaluate._check_no_leakage(cases, ctx)  # disjoint
    (ctx.run_dir / "split.json").write_text(json.dumps({"train": ["series-3", "series-1", "other"], "val": []}))
    with pytest.raises(
        StepError,
        match=r"^evaluate: 2 held-out group\(s\) were trained on in this run \(e\.g\. \['series-1', 'series-3'\]\)",
    ):
        evaluate._check_no_leakage(cases, ctx)


def test_held_out_groups_that_chose_the_checkpoint_are_refused_and_test_groups_are_not(store: Path) -> None:
    ctx = make_context(store, run="leakage-val")
    cases = _cases(np.full(10, 0.5), np.full(10, 0.5))  # groups series-0 .. series-4
    split = {"train": ["series-9"], "val": ["series-8"], "test": ["series-0", "series-1", "series-2"]}
    (ctx.run_dir / "split.json").write_text(json.dumps(split))
    evaluate._check_no_leakage(cases, ctx)  # this run's test groups are held out: allowed
    (ctx.run_dir / "split.json").write_text(json.dumps(split | {"val": ["series-4", "series-8"]}))
    with pytest.raises(
        StepError,
        match=r"^evaluate: 1 held-out group\(s\) chose the checkpoint \(validation groups\) in this run "
        r"\(e\.g\. \['series-4'\]\); the held-out set must be disjoint from the training and validation data$",
    ):
        evaluate._check_no_leakage(cases, ctx)


def test_comparison_metrics_match_numpy_and_a_resumed_run_rebuilds_them(store: Path) -> None:
    rng = np.random.default_rng(0)
    champ_dice, chall_dice = rng.uniform(0.5, 0.9, 10), rng.uniform(0.5, 0.9, 10)
    champ_c1, chall_c1 = rng.uniform(0.4, 0.9, 10), rng.uniform(0.4, 0.9, 10)
    tables = {"champion": _cases(champ_dice, champ_c1), "challenger": _cases(chall_dice, chall_c1)}
    ctx = make_context(store, run="compare", seed=SEED)
    for role, table in tables.items():
        write_table(table, ctx.run_dir / "evaluate" / f"{role}_cases")
    evaluation = {"champion": {"ref": "a"}, "challenger": {"ref": "b"}, "held_out": "/held-out"}
    metrics, before = evaluate._compare(_step(), ctx, tables, evaluation)

    deltas = chall_dice - champ_dice
    means = deltas[np.random.default_rng(SEED).integers(0, 10, size=(RESAMPLES, 10))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    assert metrics == pytest.approx(
        {
            "evaluate_champion_dice_mean": champ_dice.mean(),
            "evaluate_challenger_dice_mean": chall_dice.mean(),
            "evaluate_champion_iou_mean": (champ_dice / (2 - champ_dice)).mean(),
            "evaluate_challenger_iou_mean": (chall_dice / (2 - chall_dice)).mean(),
            "evaluate_cases": 10.0,
            "evaluate_dice_gain": deltas.mean(),
            "evaluate_dice_gain_ci_low": low,
            "evaluate_dice_gain_ci_high": high,
        },
        rel=1e-12,
    )
    assert ctx.tracker.client.get_run(ctx.run_id).data.metrics == pytest.approx(metrics, rel=1e-12)
    summary = json.loads((ctx.run_dir / "evaluate" / "comparison.json").read_text())
    assert summary["evaluation"] == evaluation and summary["n_cases"] == 10
    subgroups = {(row["column"], row["value"]): row for row in summary["subgroups"]}
    assert subgroups["modality", "MR"]["cases"] == 4
    assert subgroups["modality", "MR"]["delta"] == pytest.approx(deltas[6:].mean(), rel=1e-12)
    [class_1] = summary["classes"]
    assert class_1["delta"] == pytest.approx((chall_c1 - champ_c1).mean(), rel=1e-12)
    for name in ("paired", "classes", "subgroups"):
        assert (ctx.run_dir / "evaluate" / f"{name}.csv").is_file()

    resumed: RunContext = make_context(store, run="compare", seed=SEED)
    reloaded = evaluate.reload(_step(), {"evaluation": evaluation, "cases": 10} | metrics, resumed)
    after = reloaded.comparison
    assert (after.mean_diff, after.ci_low, after.ci_high) == (before.mean_diff, before.ci_low, before.ci_high)
    assert reloaded.evaluation == evaluation and reloaded.cases == 10 and reloaded.metrics == metrics


def test_the_challenger_alone_gives_its_means_and_no_comparison(store: Path) -> None:
    dice = np.linspace(0.25, 0.75, 10)
    ctx = make_context(store, run="alone")
    metrics, comparison = evaluate._compare(_step(), ctx, {"challenger": _cases(dice, dice)}, {"champion": None})
    assert metrics == pytest.approx(
        {
            "evaluate_challenger_dice_mean": 0.5,
            "evaluate_challenger_iou_mean": (dice / (2 - dice)).mean(),
            "evaluate_cases": 10.0,
        },
        rel=1e-12,
    )
    assert comparison is None
    assert json.loads((ctx.run_dir / "evaluate" / "comparison.json").read_text()) == {"evaluation": {"champion": None}}


def test_a_flip_axis_the_models_lack_stops_evaluate_before_any_actor(store: Path) -> None:
    ctx = make_context(store, run="tta-axis")
    challenger = tiny_checkpoint(store / "tta-challenger", seed=0)  # a 2D U-Net: axes 0, 1
    step = _step(challenger=str(challenger), tta={"flip_axes": [0, 2]})
    with pytest.raises(StepError, match=r"^evaluate.tta.flip_axes \[0, 2\]: this is a 2D model"):
        evaluate.run(step, ctx)
    assert not (ctx.run_dir / "evaluate").exists()  # nothing segmented, nothing written

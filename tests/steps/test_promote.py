"""The promote step on per-case tables built here: it moves aliases when the gate passes, tags the
challenger ``rejected`` with the gate's reasons when it fails, and writes its decision either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segops.compare import NO_CHAMPION, compare
from segops.config.schema import PromoteStep
from segops.errors import StepError
from segops.steps import promote
from segops.steps.context import RunContext
from segops.steps.results import EvaluateResult

from .contexts import make_context

#: Per-case Dice of the champion (and of each of its two classes): multiples of 1/8, exact in
#: binary, so every number in a reason is known to the last digit.
CHAMPION_DICE = [0.5, 0.75, 0.5, 0.75]


def _table(dice: list[float], class_1: list[float], class_2: list[float]) -> pd.DataFrame:
    per_class = [json.dumps({"1": a, "2": b}) for a, b in zip(class_1, class_2)]
    return pd.DataFrame(
        {"case_id": ["a", "b", "c", "d"], "dice": dice, "iou": [d / (2 - d) for d in dice], "dice_per_class": per_class}
    )


def _shifted(by: float, class_1: float, class_2: float) -> pd.DataFrame:
    return _table(
        [d + by for d in CHAMPION_DICE], [d + class_1 for d in CHAMPION_DICE], [d + class_2 for d in CHAMPION_DICE]
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("promote")


def _context(store: Path, name: str, challenger: pd.DataFrame | None, versions: int = 2) -> RunContext:
    """A run whose registry holds ``name`` versions 1..``versions``, version 1 @champion (when the
    challenger is compared with one), and whose evaluate step compared version ``versions``."""
    ctx = make_context(store, run=name)
    client = ctx.tracker.client
    client.create_registered_model(name)
    for _ in range(versions):
        client.create_model_version(name, source=str(ctx.run_dir), run_id=ctx.run_id)
    challenger_id = {
        "ref": str(ctx.run_dir),
        "name": name,
        "version": str(versions),
        "uri": f"models:/{name}/{versions}",
    }
    champion_id = None
    comparison = None
    if challenger is not None:
        ctx.tracker.set_alias(name, "champion", "1")
        champion_id = {"ref": f"models:/{name}@champion", "name": name, "version": "1", "uri": f"models:/{name}/1"}
        comparison = compare(_table(CHAMPION_DICE, CHAMPION_DICE, CHAMPION_DICE), challenger, (), 200, 0.95, 0)
    evaluation = {"champion": champion_id, "challenger": challenger_id, "held_out": "/held-out"}
    ctx.results.append(EvaluateResult(evaluation, 10, {}, comparison))
    return ctx


def _version(ctx: RunContext, name: str, version: str) -> dict[str, Any]:
    mv = ctx.tracker.client.get_model_version(name, version)
    return {"aliases": sorted(mv.aliases), "tags": dict(mv.tags)}


def _decision(ctx: RunContext) -> dict[str, Any]:
    return json.loads((ctx.run_dir / "promote" / "decision.json").read_text())


def test_a_better_challenger_is_promoted_and_the_old_champion_becomes_previous(store: Path) -> None:
    ctx = _context(store, "better", _shifted(0.125, 0.125, 0.125))
    out = promote.run(PromoteStep(step="promote"), ctx)
    assert out.to_manifest() == {
        "passed": True,
        "reasons": [],
        "model": "models:/better/2",
        "champion": "models:/better/2",
    }
    assert _version(ctx, "better", "1")["aliases"] == ["previous"]
    new = _version(ctx, "better", "2")
    assert new["aliases"] == ["champion"]
    assert new["tags"]["segops.promotion"] == "promoted" and new["tags"]["segops.replaced_version"] == "1"
    assert new["tags"]["segops.promotion_run"] == ctx.run_id
    decision = _decision(ctx)
    assert (decision["passed"], decision["champion_before"], decision["champion_after"]) == (True, "1", "2")
    assert [(c["name"], c["value"], c["passed"]) for c in decision["checks"]] == [
        ("mean_dice_gain", 0.125, True),
        ("case_regression", 0.0, True),
        ("class_1_dice_delta", 0.125, True),
        ("class_2_dice_delta", 0.125, True),
    ]
    run = ctx.tracker.client.get_run(ctx.run_id)
    assert run.data.metrics["promote_passed"] == 1.0 and run.data.tags["segops.promotion"] == "promoted"


def test_a_worse_challenger_is_refused_with_every_failed_check(store: Path) -> None:
    ctx = _context(store, "worse", _shifted(-0.125, -0.125, -0.125))
    out = promote.run(PromoteStep(step="promote"), ctx)
    reasons = [
        "mean Dice gain -0.125 < required 0.000 (95% CI -0.125 to -0.125, 4 cases)",
        "4 of 4 cases (100.0%) lost more than 0.050 Dice; at most 10.0% may",
        "class 1 mean Dice fell 0.625 -> 0.500 (delta -0.125, 4 cases); at most 0.000 drop allowed",
        "class 2 mean Dice fell 0.625 -> 0.500 (delta -0.125, 4 cases); at most 0.000 drop allowed",
    ]
    assert out.to_manifest() == {
        "passed": False,
        "reasons": reasons,
        "model": "models:/worse/2",
        "champion": "models:/worse/1",
    }
    assert _version(ctx, "worse", "1")["aliases"] == ["champion"]  # nothing moved
    rejected = _version(ctx, "worse", "2")
    assert rejected["aliases"] == []
    assert rejected["tags"]["segops.promotion"] == "rejected"
    assert rejected["tags"]["segops.rejected_reasons"] == "; ".join(reasons)
    decision = _decision(ctx)
    assert (decision["passed"], decision["reasons"]) == (False, reasons)
    assert (decision["champion_before"], decision["champion_after"]) == ("1", "1")
    assert ctx.tracker.client.get_run(ctx.run_id).data.metrics["promote_passed"] == 0.0


def test_a_class_that_drops_refuses_a_challenger_whose_mean_improves(store: Path) -> None:
    ctx = _context(store, "class-drop", _shifted(0.125, 0.25, -0.125))
    out = promote.run(PromoteStep(step="promote"), ctx)
    reason = "class 2 mean Dice fell 0.625 -> 0.500 (delta -0.125, 4 cases); at most 0.000 drop allowed"
    assert (out.passed, out.reasons) == (False, (reason,))
    assert _version(ctx, "class-drop", "1")["aliases"] == ["champion"]
    assert _version(ctx, "class-drop", "2")["tags"]["segops.rejected_reasons"] == reason
    # the same comparison passes a gate that allows that drop
    lenient = PromoteStep.model_validate({"step": "promote", "gate": {"per_class_max_drop": 0.125}})
    assert promote.run(lenient, ctx).passed is True
    assert _version(ctx, "class-drop", "2")["aliases"] == ["champion"]


def test_the_first_model_is_promoted_without_a_comparison(store: Path) -> None:
    ctx = _context(store, "first", None, versions=1)
    out = promote.run(PromoteStep(step="promote", alias="prod", previous_alias="old"), ctx)
    assert out.to_manifest() == {
        "passed": True,
        "reasons": [NO_CHAMPION],
        "model": "models:/first/1",
        "champion": "models:/first/1",
    }
    assert _version(ctx, "first", "1")["aliases"] == ["prod"]
    assert _version(ctx, "first", "1")["tags"]["segops.replaced_version"] == "none"
    assert (_decision(ctx)["champion_before"], _decision(ctx)["checks"]) == (None, [])


def test_promote_needs_an_evaluated_registered_challenger(store: Path) -> None:
    ctx = make_context(store, run="unregistered")
    with pytest.raises(StepError, match=r"^promote needs an evaluate step before it$"):
        promote.run(PromoteStep(step="promote"), ctx)
    ctx.results.append(
        EvaluateResult({"champion": None, "challenger": {"ref": "/ckpt"}, "held_out": "/held-out"}, 0, {})
    )
    with pytest.raises(StepError, match=r"the challenger is not a registered model version \(set register_model"):
        promote.run(PromoteStep(step="promote"), ctx)

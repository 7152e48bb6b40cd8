"""``promote``: the declarative gate decides whether the challenger becomes the champion.

On pass the ``champion`` alias moves to the challenger's version and ``previous`` to the old
champion's; on failure the challenger's version is tagged ``rejected`` with the reasons. The
decision, every check with its numbers, and the comparison it rests on are logged either way.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from segops.compare import apply_gate
from segops.config.schema import PromoteStep
from segops.errors import StepError
from segops.outputs.atomic import atomic_write_text
from segops.steps.context import RunContext
from segops.steps.results import EvaluateResult, PromoteResult

log = logging.getLogger(__name__)


def run(step: PromoteStep, ctx: RunContext) -> PromoteResult:
    evaluated = ctx.require(EvaluateResult, "promote needs an evaluate step before it")
    evaluation, comparison = evaluated.evaluation, evaluated.comparison
    challenger = evaluation["challenger"]
    if "version" not in challenger:
        raise StepError("promote: the challenger is not a registered model version (set register_model: true)")
    name, version = challenger["name"], challenger["version"]
    decision = apply_gate(comparison, step.gate)
    tracker = ctx.tracker
    old = tracker.alias_version(name, step.alias)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if decision.passed:
        if old is not None and old != version:
            tracker.set_alias(name, step.previous_alias, old)
        tracker.set_alias(name, step.alias, version)
        tracker.set_version_tags(
            name,
            version,
            {
                "segops.promotion": "promoted",
                "segops.promoted_at": now,
                "segops.replaced_version": old or "none",
                "segops.promotion_run": tracker.run_id or "",
            },
        )
        log.info("promoted %s version %s to @%s%s", name, version, step.alias, f" (was version {old})" if old else "")
    else:
        tracker.set_version_tags(
            name,
            version,
            {
                "segops.promotion": "rejected",
                "segops.rejected_at": now,
                "segops.rejected_reasons": "; ".join(decision.reasons),
                "segops.promotion_run": tracker.run_id or "",
            },
        )
        log.warning("rejected %s version %s: %s", name, version, "; ".join(decision.reasons))
    record = {
        "passed": decision.passed,
        "reasons": decision.reasons,
        "checks": decision.to_dict()["checks"],
        "gate": step.gate.model_dump(mode="json"),
        "challenger": challenger,
        "champion": evaluation["champion"],
        "champion_before": old,
        "champion_after": version if decision.passed else old,
        "decided_at": now,
    }
    path = atomic_write_text(ctx.run_dir / "promote" / "decision.json", json.dumps(record, indent=2, default=str))
    tracker.log_artifact(path, "promote")
    tracker.log_metrics({"promote_passed": float(decision.passed)})
    tracker.set_tags({"segops.promotion": "promoted" if decision.passed else "rejected"})
    champion = f"models:/{name}/{record['champion_after']}" if record["champion_after"] else None
    return PromoteResult(decision.passed, tuple(decision.reasons), f"models:/{name}/{version}", champion)


def reload(step: PromoteStep, outputs: dict[str, Any], ctx: RunContext) -> PromoteResult:
    """A finished promotion's decision, from its manifest outputs (the registry holds the rest)."""
    return PromoteResult.from_manifest(outputs)

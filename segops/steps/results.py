"""What each step hands to the steps after it, the manifest and the CLI: one frozen type per step.

A step's ``run`` returns its result; the runner stores ``result.to_manifest()`` as the step's
``outputs`` in ``manifest.json`` (the same flat JSON object as before: paths as strings, then the
step's MLflow metrics) and, when a run resumes, rebuilds the result with ``from_manifest`` — so a
resumed run sees exactly the types a fresh run sees, and there is no string-keyed state to forget.
Later steps find earlier results with :meth:`segops.steps.context.RunContext.latest`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from segops.compare import Comparison
    from segops.config.schema import DicomSource, ImageSource


def _metrics(outputs: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, v in outputs.items() if k.startswith(prefixes) and isinstance(v, int | float)}


def _path(value: Any) -> Path | None:
    return None if value in (None, "") else Path(value)


@dataclass(frozen=True)
class IngestResult:
    """The ingested dataset, its tables (quarantine, census, labels, unmatched-labels, series) and
    volumes folder when volumes were assembled."""

    source: DicomSource | ImageSource
    dataset: Path
    tables: Mapping[str, Path]
    volumes: Path | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        outputs: dict[str, Any] = {"dataset": str(self.dataset)}
        if self.volumes is not None:
            outputs["volumes"] = str(self.volumes)
        return outputs | {name: str(path) for name, path in self.tables.items()} | dict(self.metrics)

    @classmethod
    def from_manifest(cls, outputs: Mapping[str, Any], source: DicomSource | ImageSource) -> IngestResult:
        tables = {k: Path(v) for k, v in outputs.items() if isinstance(v, str) and k not in ("dataset", "volumes")}
        return cls(
            source, Path(outputs["dataset"]), tables, _path(outputs.get("volumes")), _metrics(outputs, ("ingest_",))
        )


@dataclass(frozen=True)
class TrainResult:
    """The kept checkpoint, the validation and test groups of the split, and the registered version if any.

    ``val_groups`` chose the checkpoint (and postprocessing); ``test_groups`` were touched by nothing
    and are what the segment step reports as held-out (empty: no test set). With ``folds`` > 1 the
    checkpoint is the folds' ensemble, every non-test group trained k-1 of its models (so
    ``val_groups`` is empty), ``best`` holds the cross-validation metrics (``cv_dice_mean``…) and
    ``best_epoch`` is -1 (each fold kept its own).
    """

    checkpoint: Path
    val_groups: frozenset[str]
    best_epoch: int
    select_metric: str
    best: Mapping[str, float]
    parent_model: str | None = None
    registered: tuple[str, str] | None = None  # (name, version)
    model_uri: str | None = None
    test_groups: frozenset[str] = frozenset()
    folds: int = 1

    def to_manifest(self) -> dict[str, Any]:
        outputs: dict[str, Any] = {
            "checkpoint": str(self.checkpoint),
            "best_epoch": self.best_epoch,
            **self.best,
            "select_metric": self.select_metric,
            "parent_model": self.parent_model,
            "folds": self.folds,
        }
        if self.registered is not None:
            outputs |= {
                "model_uri": self.model_uri,
                "registered_name": self.registered[0],
                "registered_version": self.registered[1],
            }
        return outputs

    @classmethod
    def from_manifest(cls, outputs: Mapping[str, Any], split_file: Path) -> TrainResult:
        split = json.loads(split_file.read_text(encoding="utf-8"))
        named = {"checkpoint", "best_epoch", "select_metric", "parent_model", "model_uri", "folds"}
        named |= {"registered_name", "registered_version"}
        best = {k: float(v) for k, v in outputs.items() if k not in named and isinstance(v, int | float)}
        registered = None
        if "registered_name" in outputs:
            registered = (str(outputs["registered_name"]), str(outputs["registered_version"]))
        return cls(
            Path(outputs["checkpoint"]),
            frozenset(split["val"]),
            int(outputs["best_epoch"]),
            str(outputs.get("select_metric", "")),
            best,
            outputs.get("parent_model"),
            registered,
            outputs.get("model_uri"),
            frozenset(split.get("test", ())),
            int(outputs.get("folds", 1)),
        )


@dataclass(frozen=True)
class SegmentResult:
    """Where a segment step wrote its tables (``root``) and its masks (``outputs_root``: the run
    folder or ``cluster.storage``), and its metrics (``segment_*``); ``review``: the review queue
    table (``review.parquet``), ``review_page``: its ``review/index.html`` (None with ``review.top: 0``
    or from a run before the review queue existed); both None, with ``risk`` False, when the step
    computed no risk (``review.enabled: false``); ``measurements``: one row per segmented object
    (``measurements.parquet``; None from a run before measurements existed)."""

    outputs: Path
    report: Path
    model_digest: str
    root: Path
    outputs_root: str
    metrics: Mapping[str, float]
    coco_results: Path | None = None
    quarantine: Path | None = None
    review: Path | None = None
    review_page: Path | None = None
    measurements: Path | None = None
    risk: bool = True
    class_names: Mapping[int, str] = field(default_factory=dict)  # the step's ``segments``

    @property
    def flagged(self) -> int | None:
        """Cases the review queue flagged (``segment_flagged_cases``); None without risk or from an older run."""
        value = self.metrics.get("segment_flagged_cases")
        return None if value is None else int(value)

    def to_manifest(self) -> dict[str, Any]:
        outputs: dict[str, Any] = {"outputs": str(self.outputs), "report": str(self.report)}
        outputs["model_digest"] = self.model_digest
        if self.coco_results is not None:
            outputs["coco_results"] = str(self.coco_results)
        if self.quarantine is not None:
            outputs["quarantine"] = str(self.quarantine)
        if self.review is not None:
            outputs["review"] = str(self.review)
        if self.review_page is not None:
            outputs["review_page"] = str(self.review_page)
        if self.measurements is not None:
            outputs["measurements"] = str(self.measurements)
        if not self.risk:
            outputs["risk"] = False
        if self.class_names:
            outputs["class_names"] = {str(c): name for c, name in self.class_names.items()}
        return outputs | {"root": str(self.root), "outputs_root": self.outputs_root} | dict(self.metrics)

    @classmethod
    def from_manifest(cls, outputs: Mapping[str, Any]) -> SegmentResult:
        root = outputs.get("root", str(Path(outputs["report"]).parent))
        return cls(
            Path(outputs["outputs"]),
            Path(outputs["report"]),
            str(outputs.get("model_digest", "")),
            Path(root),
            str(outputs.get("outputs_root", root)),
            _metrics(outputs, ("segment_",)),
            _path(outputs.get("coco_results")),
            _path(outputs.get("quarantine")),
            _path(outputs.get("review")),
            _path(outputs.get("review_page")),
            _path(outputs.get("measurements")),
            bool(outputs.get("risk", True)),
            {int(c): str(name) for c, name in (outputs.get("class_names") or {}).items()},
        )


@dataclass(frozen=True)
class EvaluateResult:
    """Who was evaluated (``evaluation``: challenger and champion identities), on how many cases,
    and the paired comparison (None without a champion)."""

    evaluation: Mapping[str, Any]
    cases: int
    metrics: Mapping[str, float]
    comparison: Comparison | None = None

    def to_manifest(self) -> dict[str, Any]:
        return {"evaluation": dict(self.evaluation), "cases": self.cases} | dict(self.metrics)


@dataclass(frozen=True)
class PromoteResult:
    """The gate's decision and the champion after it."""

    passed: bool
    reasons: tuple[str, ...]
    model: str
    champion: str | None

    def to_manifest(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": list(self.reasons), "model": self.model, "champion": self.champion}

    @classmethod
    def from_manifest(cls, outputs: Mapping[str, Any]) -> PromoteResult:
        return cls(bool(outputs["passed"]), tuple(outputs["reasons"]), outputs["model"], outputs.get("champion"))


StepResult = IngestResult | TrainResult | SegmentResult | EvaluateResult | PromoteResult
R = TypeVar("R", bound=StepResult)


def latest(results: Sequence[StepResult], kind: type[R]) -> R | None:
    """The last result of this kind among ``results`` (in step order), or None."""
    return next((r for r in reversed(results) if isinstance(r, kind)), None)

"""YAML → :class:`WorkflowSpec`, reporting every problem at once by dotted path.

Three layers of checks, all collected before anything is raised:
1. YAML syntax (with line/column),
2. structure and types (pydantic), rewritten into ``steps[1].model.arch: ...`` messages,
3. cross-step semantics (e.g. a ``train`` step with no ``ingest`` before it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from segops.config.schema import EvaluateStep, IngestStep, PromoteStep, SegmentStep, TrainStep, WorkflowSpec
from segops.data.instances import is_instance_labels
from segops.errors import WorkflowSpecError

log = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def load_workflow(path: str | Path) -> WorkflowSpec:
    """Read and validate a workflow file.

    Raises:
        WorkflowSpecError: listing every problem found, each as ``dotted.path: message``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowSpecError(str(path), [f"<file>: cannot read workflow file ({exc.strerror})"]) from exc
    return validate_workflow_text(text, source=str(path))


def validate_workflow_text(text: str, source: str = "<string>") -> WorkflowSpec:
    """Validate workflow YAML given as text. See :func:`load_workflow`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowSpecError(source, [f"<yaml>: invalid YAML at {where}: {problem}"]) from exc
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "an empty file"
        raise WorkflowSpecError(source, [f"<root>: expected a mapping with name and steps, got {kind}"])
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise WorkflowSpecError(source, [_format_error(err, data) for err in exc.errors()]) from exc
    problems = _semantic_problems(spec)
    if problems:
        raise WorkflowSpecError(source, problems)
    return spec


def spec_hash(spec: WorkflowSpec) -> str:
    """Stable sha256 of the validated spec (defaults filled in), independent of YAML layout."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def apply_tracking_env(spec: WorkflowSpec) -> WorkflowSpec:
    """The spec with ``MLFLOW_TRACKING_URI`` from the environment, when set, as ``tracking.uri``.

    Like ``RAY_ADDRESS`` over ``cluster.address``: the environment wins over the workflow file.
    Unlike the Ray address, the tracking URI is part of the run's identity (spec hash): the
    manifest's MLflow run lives on one server, so another server means another run.
    """
    env_uri = os.environ.get(TRACKING_URI_ENV, "").strip()
    if not env_uri:
        log.info("MLflow tracking URI %s (tracking.uri of the workflow)", _redacted(spec.tracking.uri))
        return spec
    if env_uri != spec.tracking.uri:
        log.info("MLflow tracking URI %s from the environment (%s), not tracking.uri %s of the workflow",
                 _redacted(env_uri), TRACKING_URI_ENV, _redacted(spec.tracking.uri))  # fmt: skip
    else:
        log.info("MLflow tracking URI %s from the environment (%s)", _redacted(env_uri), TRACKING_URI_ENV)
    return spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"uri": env_uri})})


def _redacted(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (URIs end up in logs)."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


# --------------------------------------------------------------------------- formatting


def _dotted_path(loc: tuple[Any, ...], data: Any) -> str:
    """Turn a pydantic error location into ``steps[1].model.arch``.

    Discriminated unions insert the tag (e.g. ``'train'``) into ``loc``; such elements are not
    keys of the input, so walking the input alongside ``loc`` tells them apart from real keys.
    """
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int) and isinstance(node, list):
            parts.append(f"[{item}]")
            node = node[item] if 0 <= item < len(node) else None
        elif isinstance(node, dict) and item in node:
            parts.append(f".{item}" if parts else str(item))
            node = node[item]
        elif isinstance(node, dict) and isinstance(item, str) and not _is_tag_of(node, item):
            # a missing or unknown key: still part of the path
            parts.append(f".{item}" if parts else str(item))
            node = None
        # else: a union tag inserted by pydantic, not a key in the file
    return "".join(parts) or "<root>"


def _is_tag_of(node: dict, item: str) -> bool:
    """True if ``item`` is the value of one of the discriminator keys in ``node``."""
    return any(node.get(key) == item for key in ("step", "kind", "arch"))


def _format_error(err: dict[str, Any], data: Any) -> str:
    loc = tuple(err["loc"])
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if etype == "union_tag_invalid":
        tag_key = ctx.get("discriminator", "").strip("'")
        expected = ctx.get("expected_tags", "").replace("'", "")
        path = _dotted_path(loc + (tag_key,), data)
        return f"{path}: {ctx.get('tag')!r} is not one of {expected}"
    if etype == "union_tag_not_found":
        tag_key = ctx.get("discriminator", "").strip("'")
        return f"{_dotted_path(loc + (tag_key,), data)}: required (it selects the kind of this entry)"
    path = _dotted_path(loc, data)
    if etype == "extra_forbidden":
        return f"{path}: unknown field (check the spelling; see the workflow reference in README.md)"
    if etype == "missing":
        return f"{path}: required field is missing"
    if etype == "literal_error":
        expected = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
        return f"{path}: {err.get('input')!r} is not one of {expected}"
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    given = err.get("input")
    if etype not in ("value_error", "assertion_error") and not isinstance(given, (dict, list)):
        msg = f"{msg} (got {given!r})"
    return f"{path}: {msg}"


# --------------------------------------------------------------------------- semantics


def _semantic_problems(spec: WorkflowSpec) -> list[str]:
    """Checks that need more than one step in view."""
    problems: list[str] = []
    seen_ingest = seen_train = seen_volumes = False
    last_ingest: IngestStep | None = None
    last_train: TrainStep | None = None
    for i, step in enumerate(spec.steps):
        if isinstance(step, TrainStep) and not seen_ingest:
            problems.append(f"steps[{i}]: a train step needs an ingest step before it (it trains on its dataset)")
        if isinstance(step, TrainStep) and last_ingest is not None:
            problems += _label_kind_problems(i, step, last_ingest)
            if step.model.spatial_dims == 3 and not last_ingest.volumes:
                problems.append(
                    f"steps[{i}].model.spatial_dims: a 3D model trains on volume records; "
                    "the ingest step before it needs volumes: true"
                )
        if isinstance(step, SegmentStep):
            semantic_model = step.model is None and last_train is not None and last_train.model.task != "instance"
            if semantic_model and "coco-rle" in step.outputs:
                problems.append(f"steps[{i}].outputs: 'coco-rle' needs an instance model (arch: maskrcnn)")
            trained_3d = step.model is None and last_train is not None and last_train.model.spatial_dims == 3
            if trained_3d and step.records != "volumes":
                problems.append(
                    f"steps[{i}].records: the train step's model is 3D (spatial_dims: 3) and segments volume "
                    f"records: set records: volumes (got {step.records!r})"
                )
            if step.model is None and not seen_train:
                problems.append(
                    f"steps[{i}].model: required when no train step comes before this segment step "
                    "(give a checkpoint directory or models:/name@alias)"
                )
            if step.source is None and not seen_ingest:
                problems.append(f"steps[{i}].source: required when no ingest step comes before this segment step")
            if step.records == "volumes" and step.source is None and not seen_volumes:
                problems.append(
                    f"steps[{i}].records: 'volumes' needs an ingest step with volumes: true before it "
                    "(or a source of kind dataset pointing at a volumes folder)"
                )
            if step.records == "volumes" and step.source is not None and step.source.kind != "dataset":
                problems.append(f"steps[{i}].records: 'volumes' reads volume records: source must be of kind dataset")
            if 0 in step.segments:
                problems.append(f"steps[{i}].segments: class 0 is background and cannot be a segment")
        if isinstance(step, EvaluateStep) and step.challenger is None and not seen_train:
            problems.append(f"steps[{i}].challenger: required when no train step comes before this evaluate step")
        if isinstance(step, PromoteStep) and not any(isinstance(s, EvaluateStep) for s in spec.steps[:i]):
            problems.append(f"steps[{i}]: a promote step needs an evaluate step before it (it applies its gate to that comparison)")
        if isinstance(step, IngestStep):
            last_ingest = step
        if isinstance(step, TrainStep):
            last_train = step
        seen_ingest |= isinstance(step, IngestStep)
        seen_volumes |= isinstance(step, IngestStep) and step.volumes
        seen_train |= isinstance(step, TrainStep)
    return problems


def _label_kind_problems(i: int, step: TrainStep, ingest: IngestStep) -> list[str]:
    """An instance model trains on instance labels, a semantic one on class maps."""
    labels = ingest.source.labels
    if labels is None:
        return [f"steps[{i}]: the ingest step before this train step has no labels (source.labels)"]
    instance_labels = is_instance_labels(labels)
    if step.model.task == "instance" and not instance_labels:
        return [
            f"steps[{i}].model.arch: {step.model.arch!r} trains on instance labels; the ingest source's labels "
            "must be kind instance-png, or kind coco with instances: true"
        ]
    if step.model.task == "semantic" and instance_labels:
        return [
            f"steps[{i}].model.arch: {step.model.arch!r} trains on class maps; the ingest source's labels are "
            "instance labels (use arch: maskrcnn, or labels that are class maps)"
        ]
    return []

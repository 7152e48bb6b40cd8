"""YAML → :class:`WorkflowSpec`, reporting every problem at once by dotted path.

A file that cannot be read as UTF-8 text (missing, a folder, an image) is one ``<file>`` problem.
Then the checks, all collected before anything is raised:
1. YAML syntax (with line/column), and keys given twice in one mapping (with their lines),
2. structure and types (pydantic), rewritten into ``steps[1].model.arch: ...`` messages,
3. cross-step semantics (e.g. a ``train`` step with no ``ingest`` before it), and local paths
   (sources, labels, checkpoint folders, extra datasets) that do not exist.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from segops.config.schema import EvaluateStep, IngestStep, PromoteStep, SegmentStep, TrainStep, WorkflowSpec
from segops.config.sources import is_instance_labels
from segops.errors import WorkflowSpecError

log = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def load_workflow(path: str | Path) -> WorkflowSpec:
    """Read and validate a workflow file; paths it names must exist (see :func:`validate_workflow_text`).

    Raises:
        WorkflowSpecError: listing every problem found, each as ``dotted.path: message``.
    """
    return validate_workflow_text(read_workflow_text(path), source=str(path))


def read_workflow_text(path: str | Path) -> str:
    """The text of a workflow file, which must be UTF-8.

    Raises:
        WorkflowSpecError: with one ``<file>`` problem when the file is missing, a folder, not
            readable, binary (e.g. an image passed by mistake) or not UTF-8.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkflowSpecError(str(path), [_unreadable(path, exc)]) from exc
    if b"\x00" in raw:
        raise WorkflowSpecError(str(path), [_binary_problem(path, raw)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problem = (
            f"<file>: cannot read workflow file: {path} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
            f"{exc.start}, line {line}); save it as UTF-8"
        )
        raise WorkflowSpecError(str(path), [problem]) from exc


def validate_workflow_text(text: str, source: str = "<string>", *, check_paths: bool = True) -> WorkflowSpec:
    """Validate workflow YAML given as text. See :func:`load_workflow`.

    Args:
        text: the YAML.
        source: what to call it in the error (a file name).
        check_paths: also require every local path it names (sources, labels, checkpoint
            folders, extra datasets) to exist, relative ones resolved from the current folder.
            Off for a workflow meant for another machine (e.g. a cluster's ConfigMap).
    """
    data, duplicates = _parse_yaml(text, source)
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "an empty file"
        raise WorkflowSpecError(source, [*duplicates, f"<root>: expected a mapping with name and steps, got {kind}"])
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise WorkflowSpecError(source, duplicates + [_format_error(err, data) for err in exc.errors()]) from exc
    problems = duplicates + _semantic_problems(spec)
    if check_paths:
        problems += _path_problems(spec)
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
        log.info(
            "MLflow tracking URI %s from the environment (%s), not tracking.uri %s of the workflow",
            _redacted(env_uri),
            TRACKING_URI_ENV,
            _redacted(spec.tracking.uri),
        )
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


# --------------------------------------------------------------------------- reading

#: Leading bytes of files that get passed as a workflow by mistake.
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"PK\x03\x04": "a zip archive",
    b"\x1f\x8b": "a gzip archive",
}


def _unreadable(path: Path, exc: OSError) -> str:
    """The problem for a workflow file that cannot be opened."""
    if isinstance(exc, FileNotFoundError):
        why = f"{path} does not exist" + _relative_note(path)
    elif isinstance(exc, IsADirectoryError) or path.is_dir():
        why = f"{path} is a folder; pass the workflow's .yaml file"
    elif isinstance(exc, PermissionError):
        why = f"permission denied reading {path} (check the file's permissions and owner)"
    else:
        why = f"{path}: {exc.strerror or exc}"
    return f"<file>: cannot read workflow file: {why}"


def _binary_problem(path: Path, raw: bytes) -> str:
    """The problem for a workflow file holding NUL bytes: an image, an archive, or UTF-16 text."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return f"<file>: cannot read workflow file: {path} is UTF-16 text, expected UTF-8; save it as UTF-8"
    kind = next((name for magic, name in _MAGIC.items() if raw.startswith(magic)), "binary data")
    if raw[128:132] == b"DICM":
        kind = "a DICOM file"
    nul = raw.find(b"\x00")
    return (
        f"<file>: cannot read workflow file: {path} is {kind} (NUL byte at offset {nul}), "
        "not YAML text; pass the workflow's .yaml file"
    )


def _relative_note(path: Path) -> str:
    """Where a relative path was looked for; nothing for an absolute one."""
    return "" if path.is_absolute() else f" (relative paths are resolved from the current folder, {Path.cwd()})"


class _DuplicateKeyLoader(yaml.SafeLoader):
    """A SafeLoader that records keys given twice in one mapping (PyYAML silently keeps the last).

    ``duplicates`` holds (mapping node, key, 1-based lines of each occurrence); ``root`` is the
    document's node tree, from which :func:`_node_paths` names where each mapping sits.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[yaml.MappingNode, Any, list[int]]] = []
        self.root: yaml.Node | None = None

    def get_single_node(self) -> yaml.Node | None:
        self.root = super().get_single_node()
        return self.root

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, list[int]] = {}
        for key_node, _ in node.value:  # before flatten_mapping: merged (<<) keys may be overridden
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if isinstance(key, Hashable):
                    lines.setdefault(key, []).append(key_node.start_mark.line + 1)
        self.duplicates += [(node, key, found) for key, found in lines.items() if len(found) > 1]
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: str) -> tuple[Any, list[str]]:
    """(data, one problem per duplicated key), or WorkflowSpecError on a YAML syntax error."""
    loader = _DuplicateKeyLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowSpecError(source, [f"<yaml>: invalid YAML at {where}: {problem}"]) from exc
    finally:
        loader.dispose()
    paths = _node_paths(loader.root) if loader.duplicates else {}
    problems = []
    for node, key, lines in sorted(loader.duplicates, key=lambda dup: dup[2]):
        parent = paths.get(id(node), "")
        where = f"{parent}.{key}" if parent else str(key)
        listed = ", ".join(map(str, lines[:-1])) + f" and {lines[-1]}"
        problems.append(f"{where}: duplicate key (lines {listed}); keep one")
    return data, problems


def _node_paths(root: yaml.Node | None) -> dict[int, str]:
    """``id(node)`` → dotted path (``steps[1].model``; ``""`` for the root) of every collection node."""
    paths: dict[int, str] = {}
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in paths:  # an alias: named where its anchor is
            continue
        paths[id(node)] = path
        if isinstance(node, yaml.SequenceNode):
            stack += [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            for key_node, child in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    stack.append((child, f"{path}.{key_node.value}" if path else key_node.value))
    return paths


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
            problems.append(
                f"steps[{i}]: a promote step needs an evaluate step before it (it applies its gate to that comparison)"
            )
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
            "must be kind instance-png, or coco, via, cvat, label-studio, supervisely, rle-csv, mask-folder, labelme, "
            "imagescope or yolo with "
            "instances: true"
        ]
    if step.model.task == "semantic" and instance_labels:
        return [
            f"steps[{i}].model.arch: {step.model.arch!r} trains on class maps; the ingest source's labels are "
            "instance labels (use arch: maskrcnn, or labels that are class maps)"
        ]
    return []


# --------------------------------------------------------------------------- paths


def input_paths(spec: WorkflowSpec) -> list[tuple[str, Path]]:
    """Every local path the workflow reads, as (dotted path, path as written).

    Sources and their labels, checkpoint folders (``model``, ``champion``, ``challenger``,
    ``init_from``) and ``extra_datasets``; model URIs (``models:/``, ``runs:/``, ``s3://``) are left out.
    """
    found: list[tuple[str, Path]] = []
    for i, step in enumerate(spec.steps):
        source = getattr(step, "source", None)
        if source is not None:
            found.append((f"steps[{i}].source.path", source.path))
            labels = getattr(source, "labels", None)
            if labels is not None:
                found.append((f"steps[{i}].source.labels.path", labels.path))
        for field in ("model", "champion", "challenger", "init_from"):
            ref = getattr(step, field, None)
            if isinstance(ref, str) and not _is_uri(ref):
                found.append((f"steps[{i}].{field}", Path(ref)))
        found += [
            (f"steps[{i}].extra_datasets[{k}]", path) for k, path in enumerate(getattr(step, "extra_datasets", ()))
        ]
    return found


def _is_uri(ref: str) -> bool:
    """``scheme:/…`` with a scheme of two letters or more (``C:/x`` is a Windows path)."""
    return len(urlsplit(ref).scheme) > 1


def _path_problems(spec: WorkflowSpec) -> list[str]:
    """One problem per local path that does not exist; relative paths resolve from the current folder,
    as ``segops run`` does."""
    return [
        f"{where}: {path} does not exist{_relative_note(path)}"
        for where, path in input_paths(spec)
        if not path.exists()
    ]

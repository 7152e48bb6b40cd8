"""Model checkpoints: a directory with ``model.pt`` (state dict) and ``segops.json`` (specs).

Only tensors are pickled, and they are loaded with ``weights_only=True``; everything needed
to rebuild the network and its preprocessing is plain JSON beside them.

An *ensemble* checkpoint (cross-validation, ``train.folds``) has no ``model.pt`` of its own: its
``segops.json`` names the fold checkpoint folders inside it (``"folds": ["fold_0", ...]``) and
:func:`load_checkpoint` returns them as one :class:`~segops.engine.ensemble.SoftmaxEnsemble`, so
everything that loads a checkpoint averages the folds' softmax without knowing.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from segops.config.schema import ModelSpec, PreprocessSpec
from segops.engine.ensemble import SoftmaxEnsemble
from segops.errors import CheckpointError
from segops.models import LoadReport, build_model, load_weights, weights_sources

WEIGHTS_FILE = "model.pt"
META_FILE = "segops.json"
#: The ``segops.json`` key of an ensemble checkpoint: its fold folders, in order.
FOLDS_KEY = "folds"
#: The ``segops.json`` key of the starting weights' lineage (origin, file, sha256, target).
INIT_WEIGHTS_KEY = "init_weights"
_MODEL_ADAPTER: TypeAdapter = TypeAdapter(ModelSpec)


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with the specs it was trained under."""

    model: nn.Module
    model_spec: Any
    preprocess: PreprocessSpec
    meta: dict[str, Any]


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    model_spec: Any,
    preprocess: PreprocessSpec,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights and metadata into ``directory`` (created), each file atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model-", suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, directory / WEIGHTS_FILE)
    _write_meta(directory, _spec_meta(model_spec, preprocess) | (extra or {}))
    return directory


def save_ensemble(
    directory: str | Path,
    folds: list[str],
    model_spec: Any,
    preprocess: PreprocessSpec,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Make ``directory`` an ensemble checkpoint of the fold checkpoints already inside it.

    Args:
        folds: the fold folders' names relative to ``directory`` (``["fold_0", "fold_1"]``), in order.

    Raises:
        CheckpointError: a fold folder is not a checkpoint of ``model_spec``.
    """
    directory = Path(directory)
    for name in folds:
        fold_meta = read_meta(directory / name)
        if fold_meta["model"] != model_spec.model_dump(mode="json"):
            raise CheckpointError(
                f"fold checkpoint {directory / name} has model spec {fold_meta['model']}, not the ensemble's"
            )
    _write_meta(directory, _spec_meta(model_spec, preprocess) | {FOLDS_KEY: list(folds)} | (extra or {}))
    return directory


def read_meta(directory: str | Path) -> dict[str, Any]:
    """A checkpoint's ``segops.json``.

    Raises:
        CheckpointError: ``directory`` has no ``segops.json``.
    """
    meta_file = Path(directory) / META_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{directory} is not a segops checkpoint: expected {META_FILE} in it")
    return json.loads(meta_file.read_text())


def update_meta(directory: str | Path, extra: dict[str, Any]) -> Path:
    """Add (or replace) top-level keys of a checkpoint's ``segops.json``, atomically."""
    directory = Path(directory)
    _write_meta(directory, read_meta(directory) | extra)
    return directory


def fold_dirs(directory: str | Path) -> list[Path]:
    """An ensemble checkpoint's fold folders, in order; empty for a single model."""
    meta = read_meta(directory)
    return [Path(directory) / name for name in meta.get(FOLDS_KEY, [])]


def weight_files(directory: str | Path) -> list[Path]:
    """The weights a checkpoint's predictions depend on: its ``model.pt``, or each fold's."""
    folds = fold_dirs(directory)
    return [d / WEIGHTS_FILE for d in folds] if folds else [Path(directory) / WEIGHTS_FILE]


def _spec_meta(model_spec: Any, preprocess: PreprocessSpec) -> dict[str, Any]:
    return {"model": model_spec.model_dump(mode="json"), "preprocess": preprocess.model_dump(mode="json")}


def _spec(kind: Any, meta: dict[str, Any], key: str, meta_file: Path) -> Any:
    """``meta[key]`` validated as ``kind`` (a pydantic model or TypeAdapter).

    Raises:
        CheckpointError: it does not validate, each problem by dotted path (a model folder written by
            a newer segops, with settings this one does not know, or an edited file).
    """
    validate = kind.validate_python if isinstance(kind, TypeAdapter) else kind.model_validate
    try:
        return validate(meta[key])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, (key, *e['loc'])))}: {e['msg']}" for e in exc.errors()[:5])
        raise CheckpointError(
            f"{meta_file} describes a model this segops cannot rebuild ({problems}): a model written by a newer "
            "segops needs that release (or later) to load it"
        ) from None


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp_meta = directory / f".{META_FILE}.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp_meta, directory / META_FILE)


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network from a checkpoint directory, in eval mode on ``device``.

    An ensemble checkpoint loads each fold once and returns their
    :class:`~segops.engine.ensemble.SoftmaxEnsemble` with the ensemble's ``segops.json`` as ``meta``.

    Raises:
        CheckpointError: files missing, or weights that do not fit the recorded spec.
    """
    directory = Path(directory)
    meta_file = directory / META_FILE
    if meta_file.is_file() and FOLDS_KEY in (meta := json.loads(meta_file.read_text())):
        folds = [load_checkpoint(directory / name, device) for name in meta[FOLDS_KEY]]
        if not folds:
            raise CheckpointError(f"ensemble checkpoint {directory} lists no folds in {META_FILE}")
        ensemble = SoftmaxEnsemble([f.model for f in folds]).to(device).eval()
        return LoadedModel(ensemble, folds[0].model_spec, _spec(PreprocessSpec, meta, "preprocess", meta_file), meta)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file() or not meta_file.is_file():
        raise CheckpointError(f"{directory} is not a segops checkpoint: expected {WEIGHTS_FILE} and {META_FILE} in it")
    meta = json.loads(meta_file.read_text())
    model_spec, preprocess = (
        _spec(_MODEL_ADAPTER, meta, "model", meta_file),
        _spec(PreprocessSpec, meta, "preprocess", meta_file),
    )
    model = build_model(model_spec)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {weights} do not match model spec {meta['model']}: {exc}") from exc
    model.to(device).eval()
    return LoadedModel(model=model, model_spec=model_spec, preprocess=preprocess, meta=meta)


@dataclass(frozen=True)
class InitialWeights:
    """A checkpoint of the untrained network with its starting weights loaded, and what loading did."""

    checkpoint: Path
    reports: list[LoadReport]

    def lineage(self) -> list[dict[str, Any]]:
        return [r.lineage() for r in self.reports]

    def describe(self) -> str:
        """``<origin> sha256:<hex>`` per source, comma-separated (a model version tag)."""
        return ", ".join(f"{r.origin} sha256:{r.sha256}" for r in self.reports)

    def params(self) -> dict[str, Any]:
        """MLflow params: ``train.init_weights`` (the origins) and per source ``train.init_weights.<i>.*``
        (file, target, sha256, and the counts of loaded, missing, unexpected and mismatched tensors)."""
        params: dict[str, Any] = {"train.init_weights": ", ".join(r.origin for r in self.reports)}
        for i, r in enumerate(self.reports):
            params |= {
                f"train.init_weights.{i}.{key}": value
                for key, value in (
                    ("file", r.file),
                    ("target", r.target or "model"),
                    ("sha256", r.sha256),
                    ("loaded", r.loaded),
                    ("missing", len(r.missing)),
                    ("unexpected", len(r.unexpected)),
                    ("mismatched", len(r.mismatched)),
                )
            }
        return params


def initial_checkpoint(directory: str | Path, model_spec: Any, preprocess: PreprocessSpec) -> InitialWeights | None:
    """Build ``model_spec``'s network, load its starting weights (``weights``, ``backbone_weights``,
    ``encoder_weights``, ``weights_path``) and save it as a checkpoint in ``directory``, with their
    lineage under ``init_weights`` in ``segops.json``. Training workers then warm-start from this
    folder, so none of them needs the caches. None when the spec names no starting weights.

    Raises:
        CheckpointError: a file is missing from the cache or does not fit (see :mod:`segops.models.weights`).
    """
    if not weights_sources(model_spec):
        return None
    model = build_model(model_spec)
    reports = load_weights(model, model_spec)
    lineage = [r.lineage() for r in reports]
    save_checkpoint(directory, model, model_spec, preprocess, extra={INIT_WEIGHTS_KEY: lineage})
    return InitialWeights(Path(directory), reports)


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel, if wrapped."""
    return getattr(model, "module", model)

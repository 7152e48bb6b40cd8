"""Model checkpoints: a directory with ``model.pt`` (state dict) and ``segops.json`` (specs).

Only tensors are pickled, and they are loaded with ``weights_only=True``; everything needed
to rebuild the network and its preprocessing is plain JSON beside them.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter
from torch import nn

from segops.config.schema import ModelSpec, PreprocessSpec
from segops.errors import CheckpointError
from segops.models import build_model

WEIGHTS_FILE = "model.pt"
META_FILE = "segops.json"
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
    meta = {
        "model": model_spec.model_dump(mode="json"),
        "preprocess": preprocess.model_dump(mode="json"),
        **(extra or {}),
    }
    tmp_meta = directory / f".{META_FILE}.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp_meta, directory / META_FILE)
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network from a checkpoint directory, in eval mode on ``device``.

    Raises:
        CheckpointError: files missing, or weights that do not fit the recorded spec.
    """
    directory = Path(directory)
    weights, meta_file = directory / WEIGHTS_FILE, directory / META_FILE
    if not weights.is_file() or not meta_file.is_file():
        raise CheckpointError(f"{directory} is not a segops checkpoint: expected {WEIGHTS_FILE} and {META_FILE} in it")
    meta = json.loads(meta_file.read_text())
    model_spec = _MODEL_ADAPTER.validate_python(meta["model"])
    preprocess = PreprocessSpec.model_validate(meta["preprocess"])
    model = build_model(model_spec)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {weights} do not match model spec {meta['model']}: {exc}") from exc
    model.to(device).eval()
    return LoadedModel(model=model, model_spec=model_spec, preprocess=preprocess, meta=meta)


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel, if wrapped."""
    return getattr(model, "module", model)

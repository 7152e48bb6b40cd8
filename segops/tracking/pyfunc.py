"""A segops checkpoint as an MLflow pyfunc model.

The logged model holds the checkpoint folder (state dict + JSON spec) as its ``checkpoint``
artifact and :class:`SegmentationPyfunc` as its Python model, so it loads with
``mlflow.pyfunc.load_model`` and predicts masks. MLflow pickles the model instance by reference:
models logged before this module existed name ``segops.tracking.SegmentationPyfunc``, which the
package still exports, so they keep loading.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from segops.tracking.store import use_tracking_uri

#: The pyfunc artifact that holds the segops checkpoint folder.
CHECKPOINT_ARTIFACT = "checkpoint"


class SegmentationPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: (N, C, H, W) float32 raw images → (N, H, W) uint8 class maps (semantic
    models) or int32 instance label maps, class * 65536 + instance (instance models); for a 3D
    model (N, C, Z, H, W) volumes → (N, Z, H, W) class maps. ``params={"spacing": [row, column]}``
    (mm) gives the images' pixel spacing to a model trained with ``preprocess.spacing``, which
    resamples them to its own; without it, images are taken as they are."""

    def load_context(self, context: Any) -> None:
        import torch

        from segops.engine.checkpoint import load_checkpoint

        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._loaded = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT], self._device)

    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        from segops.engine.predict import predict_label_maps

        images = np.asarray(model_input, dtype=np.float32)
        if images.ndim == self._loaded.model_spec.spatial_dims + 1:  # (N, H, W) or (N, Z, H, W) gray
            images = images[:, None]
        spacing = [float(v) for v in (params or {}).get("spacing") or ()]
        given = spacing if len(spacing) == 2 and min(spacing) > 0 else None  # the default [0, 0]: not given
        return np.stack(predict_label_maps(self._loaded, list(images), self._device, spacing=given))


def log_pyfunc_model(
    run_id: str, tracking_uri: str, checkpoint_dir: Path, registered_name: str, example: np.ndarray
) -> str:
    """Log a checkpoint as the pyfunc model ``model`` of a run and register it; returns the new version.

    Args:
        example: (N, C, H, W) float32 raw images used for the signature and input example;
            (N, C, Z, H, W) volumes for a 3D model.
    """
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    from segops.engine.checkpoint import load_checkpoint
    from segops.engine.predict import predict_label_maps

    loaded = load_checkpoint(checkpoint_dir)
    output = np.stack(predict_label_maps(loaded, list(example)))
    # any batch size and image size (infer_signature would pin them to the example's)
    spatial = (-1,) * (example.ndim - 2)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, example.shape[1], *spatial))]),
        outputs=Schema([TensorSpec(output.dtype, (-1, *spatial))]),
        params=ParamSchema([ParamSpec("spacing", "double", [0.0, 0.0], (-1,))]),  # (row, column) mm; 0: not given
    )
    use_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id), _without_registry_prints():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SegmentationPyfunc(),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_dir)},
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
            registered_model_name=registered_name,
            await_registration_for=60,
        )
    return str(info.registered_model_version)


#: What ``mlflow.register_model`` prints to stderr itself; segops logs the registered version instead.
REGISTRY_PRINTS = ("Successfully registered model", "Created version", "Registered model")  # …already exists


@contextmanager
def _without_registry_prints() -> Iterator[None]:
    """``sys.stderr`` captured during the block and written back after it, less MLflow's
    registration prints (anything else, log lines included, still appears)."""
    held = io.StringIO()
    try:
        with redirect_stderr(held):
            yield
    finally:
        kept = [line for line in held.getvalue().splitlines(True) if not line.startswith(REGISTRY_PRINTS)]
        sys.stderr.write("".join(kept))


def _pip_requirements() -> list[str]:
    """Pinned requirements, so MLflow does not spend seconds inferring them in a subprocess."""
    reqs = []
    for package in ("segops", "torch", "monai", "numpy", "pydantic"):
        try:
            reqs.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            reqs.append(package)
    return reqs

"""MLflow: the only module that imports it.

One MLflow run per workflow run, owned by the driver (Ray workers never create runs). The
trained model is logged as a pyfunc that wraps a segops checkpoint (state dict + JSON spec)
and registered, so it loads with ``mlflow.pyfunc.load_model`` and predicts masks.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
from mlflow.entities import Metric, Param
from mlflow.models import Model, infer_signature
from mlflow.tracking import MlflowClient

from segops.config.schema import TrackingSpec
from segops.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint"


def _quiet_mlflow() -> None:
    """Keep MLflow's INFO chatter (DB migrations, "Validating input example"...) out of the terminal."""
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # we pass a PythonModel instance on purpose (it is importable from segops, not pickled code)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)


def default_artifact_location(uri: str) -> str | None:
    """For a local sqlite store, keep artifacts beside the database file in ``mlartifacts/``."""
    if not uri.startswith("sqlite:///"):
        return None
    db_path = Path(uri[len("sqlite:///") :]).resolve()
    return (db_path.parent / "mlartifacts").as_uri()


@dataclass(frozen=True)
class RegisteredModel:
    """Where a logged model lives."""

    name: str
    version: str
    model_uri: str  # models:/name/version


class RunTracker:
    """The driver's handle on its MLflow run."""

    def __init__(self, spec: TrackingSpec):
        _quiet_mlflow()
        self.spec = spec
        self.client = MlflowClient(tracking_uri=spec.uri, registry_uri=spec.uri)
        self.run_id: str | None = None

    def start(self, run_name: str, tags: dict[str, str], run_id: str | None = None) -> str:
        """Create the run (or reopen ``run_id``) in the spec's experiment; returns the run id."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return run_id
        experiment_id = self._experiment_id()
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        log.info("MLflow run %s in experiment %r at %s", self.run_id, self.spec.experiment, self.spec.uri)
        return self.run_id

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.spec.experiment)
        if experiment is not None:
            return experiment.experiment_id
        location = self.spec.artifact_location or default_artifact_location(self.spec.uri)
        return self.client.create_experiment(self.spec.experiment, artifact_location=location)

    def end(self, status: str = "FINISHED") -> None:
        """Close the run as FINISHED, FAILED or KILLED."""
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params (values stringified and cut to MLflow's 6000-character limit)."""
        items = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow's per-batch limit
            self.client.log_batch(self._run, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log finite numeric metrics; NaN/inf values are skipped with a debug log."""
        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            if value is None or not np.isfinite(value):
                log.debug("skipping non-finite metric %s=%r", key, value)
                continue
            items.append(Metric(key, float(value), now, step or 0))
        for start in range(0, len(items), 1000):
            self.client.log_batch(self._run, metrics=items[start : start + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self._run, key, value)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self._run, str(path), artifact_path)
        else:
            self.client.log_artifact(self._run, str(path), artifact_path)

    def log_model(self, checkpoint_dir: Path, registered_name: str, example: np.ndarray) -> RegisteredModel:
        """Log a checkpoint as a pyfunc model and register a new version of ``registered_name``.

        Args:
            example: (N, C, H, W) float32 raw images used for the signature and input example.
        """
        from segops.engine.checkpoint import load_checkpoint
        from segops.engine.predict import predict_label_maps

        loaded = load_checkpoint(checkpoint_dir)
        output = np.stack(predict_label_maps(loaded, list(example)))
        signature = infer_signature(example, output)
        mlflow.set_tracking_uri(self.spec.uri)
        mlflow.set_registry_uri(self.spec.uri)
        with mlflow.start_run(run_id=self._run):
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
        version = str(info.registered_model_version)
        self.client.set_model_version_tag(registered_name, version, "segops.run_id", self._run)
        log.info("registered model %s version %s", registered_name, version)
        return RegisteredModel(registered_name, version, f"models:/{registered_name}/{version}")

    @property
    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("RunTracker.start() must be called first")
        return self.run_id


def download_checkpoint(model_uri: str, tracking_uri: str, dst: Path) -> Path:
    """Fetch the segops checkpoint inside a logged model (``models:/…`` or ``runs:/…``).

    Raises:
        CheckpointError: the URI does not resolve, or the model holds no segops checkpoint.
    """
    _quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except Exception as exc:
        raise CheckpointError(f"cannot download model {model_uri!r} from {tracking_uri}: {exc}") from exc
    artifacts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts", {})
    if CHECKPOINT_ARTIFACT not in artifacts or not (local / artifacts[CHECKPOINT_ARTIFACT]["path"]).is_dir():
        raise CheckpointError(f"model {model_uri!r} is not a segops model: it has no {CHECKPOINT_ARTIFACT!r} artifact")
    return local / artifacts[CHECKPOINT_ARTIFACT]["path"]


def is_model_uri(value: str) -> bool:
    """True for MLflow model URIs (``models:/``, ``runs:/``), False for filesystem paths."""
    return urlparse(value).scheme in ("models", "runs")


def _pip_requirements() -> list[str]:
    """Pinned requirements, so MLflow does not spend seconds inferring them in a subprocess."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for package in ("segops", "torch", "monai", "numpy", "pydantic"):
        try:
            reqs.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            reqs.append(package)
    return reqs


class SegmentationPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: (N, C, H, W) float32 raw images → (N, H, W) uint8 class maps (semantic
    models) or int32 instance label maps, class * 1000 + instance (instance models)."""

    def load_context(self, context: Any) -> None:
        import torch

        from segops.engine.checkpoint import load_checkpoint

        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._loaded = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT], self._device)

    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        from segops.engine.predict import predict_label_maps

        images = np.asarray(model_input, dtype=np.float32)
        if images.ndim == 3:  # (N, H, W) gray
            images = images[:, None]
        return np.stack(predict_label_maps(self._loaded, list(images), self._device))


os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

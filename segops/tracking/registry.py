"""Model references: which strings name a logged model, and fetching the checkpoint inside one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.models import Model

from segops.errors import CheckpointError
from segops.tracking.pyfunc import CHECKPOINT_ARTIFACT
from segops.tracking.store import _quiet_mlflow, use_tracking_uri


@dataclass(frozen=True)
class RegisteredModel:
    """Where a logged model lives."""

    name: str
    version: str
    model_uri: str  # models:/name/version


def is_model_uri(value: str) -> bool:
    """True for MLflow model URIs (``models:/``, ``runs:/``), False for filesystem paths."""
    return urlparse(value).scheme in ("models", "runs")


def download_checkpoint(model_uri: str, tracking_uri: str, dst: Path) -> Path:
    """Fetch the segops checkpoint inside a logged model (``models:/…`` or ``runs:/…``).

    Raises:
        CheckpointError: the URI does not resolve, or the model holds no segops checkpoint.
    """
    _quiet_mlflow()
    use_tracking_uri(tracking_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except Exception as exc:
        raise CheckpointError(f"cannot download model {model_uri!r} from {tracking_uri}: {exc}") from exc
    artifacts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts", {})
    if CHECKPOINT_ARTIFACT not in artifacts or not (local / artifacts[CHECKPOINT_ARTIFACT]["path"]).is_dir():
        raise CheckpointError(f"model {model_uri!r} is not a segops model: it has no {CHECKPOINT_ARTIFACT!r} artifact")
    return local / artifacts[CHECKPOINT_ARTIFACT]["path"]

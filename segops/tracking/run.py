"""The driver's MLflow run: one per workflow run (Ray workers never create runs).

Params, metrics, tags, artifacts and dataset inputs go to the run; the trained model is logged
as a pyfunc (:mod:`segops.tracking.pyfunc`) and registered, and the registry's aliases and
version tags are set through the same handle.
"""

from __future__ import annotations

import logging
import subprocess
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.tracking import MlflowClient

from segops.config.schema import TrackingSpec
from segops.tracking.pyfunc import log_pyfunc_model
from segops.tracking.registry import RegisteredModel
from segops.tracking.store import _quiet_mlflow, default_artifact_location

log = logging.getLogger(__name__)

_PARAM_CHARS = 6000  # MLflow's limit on a param value
_TAG_CHARS = 5000  # and on a model version tag value
_PARAMS_PER_BATCH, _METRICS_PER_BATCH = 100, 1000  # MLflow's per-batch limits
#: Packages whose versions decide results, recorded as ``pkg.<name>`` tags.
_LINEAGE_PACKAGES = ("segops", "torch", "torchvision", "monai", "ray", "mlflow", "pydicom", "numpy", "pyarrow")


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
        items = [Param(key, str(value)[:_PARAM_CHARS]) for key, value in params.items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(self._run, params=items[start : start + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log finite numeric metrics; NaN/inf values are skipped with a debug log."""
        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            if value is None or not np.isfinite(value):
                log.debug("skipping non-finite metric %s=%r", key, value)
                continue
            items.append(Metric(key, float(value), now, step or 0))
        for start in range(0, len(items), _METRICS_PER_BATCH):
            self.client.log_batch(self._run, metrics=items[start : start + _METRICS_PER_BATCH])

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

    def log_model(
        self,
        checkpoint_dir: Path,
        registered_name: str,
        example: np.ndarray,
        version_tags: dict[str, str] | None = None,
    ) -> RegisteredModel:
        """Log a checkpoint as a pyfunc model and register a new version of ``registered_name``.

        Args:
            example: (N, C, H, W) float32 raw images used for the signature and input example;
                (N, C, Z, H, W) volumes for a 3D model.
            version_tags: set on the new version, beside ``segops.run_id``.
        """
        version = log_pyfunc_model(self._run, self.spec.uri, checkpoint_dir, registered_name, example)
        self.set_version_tags(registered_name, version, {"segops.run_id": self._run} | (version_tags or {}))
        log.info("registered model %s version %s", registered_name, version)
        return RegisteredModel(registered_name, version, f"models:/{registered_name}/{version}")

    def log_dataset(self, name: str, source: str, table: Any, digest: str, context: str) -> None:
        """Record a dataset as an input of the run (``mlflow.data``): name, source, digest, schema,
        and its per-case metadata table as the dataset's profile (counts per column).

        Args:
            table: a pandas DataFrame of per-case metadata (no pixels).
            context: ``training``, ``validation`` or ``evaluation``.
        """
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local path is meant
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(table, source=source, name=name, digest=digest[:36])
        tags = [InputTag(key="mlflow.data.context", value=context)]
        self.client.log_inputs(self._run, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])

    def run_dataset_inputs(self, run_id: str | None = None) -> list[dict[str, str]]:
        """The datasets logged as inputs of a run: name, digest, source, context, profile."""
        run = self.client.get_run(run_id or self._run)
        out = []
        for item in run.inputs.dataset_inputs if run.inputs else []:
            tags = {t.key: t.value for t in item.tags}
            out.append(
                {
                    "name": item.dataset.name,
                    "digest": item.dataset.digest,
                    "source": item.dataset.source,
                    "context": tags.get("mlflow.data.context", ""),
                    "profile": item.dataset.profile or "",
                }
            )
        return out

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version number an alias points at, or None (no such model or alias)."""
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except Exception:  # MlflowException RESOURCE_DOES_NOT_EXIST: no model, or no alias yet
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value)[:_TAG_CHARS])

    @property
    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("RunTracker.start() must be called first")
        return self.run_id


def lineage_tags() -> dict[str, str]:
    """segops' git commit (when running from a checkout) and the versions of the packages that
    decide results, as ``segops.git_commit`` and ``pkg.<name>`` tags."""
    tags: dict[str, str] = {}
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            tags["segops.git_commit"] = commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass  # not a checkout (an installed wheel): the package version below identifies the code
    for package in _LINEAGE_PACKAGES:
        try:
            tags[f"pkg.{package}"] = version(package)
        except PackageNotFoundError:
            continue
    return tags

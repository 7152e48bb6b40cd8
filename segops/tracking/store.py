"""Which MLflow store a process talks to, and how quietly.

The lowest module of the package: the run tracker, the registry and the audit reader all point
MLflow at a store through these functions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import mlflow

_QUIET_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # a bar per artifact download clutters logs


def _quiet_mlflow() -> None:
    """Keep MLflow's INFO chatter (DB migrations, "Validating input example"...) and its download
    progress bars out of the terminal (an explicit setting in the environment wins)."""
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # we pass a PythonModel instance on purpose (it is importable from segops, not pickled code)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)


def default_artifact_location(uri: str) -> str | None:
    """For a local sqlite store, keep artifacts beside the database file in ``mlartifacts/``."""
    if not uri.startswith("sqlite:///"):
        return None
    db_path = Path(uri[len("sqlite:///") :]).resolve()
    return (db_path.parent / "mlartifacts").as_uri()


def use_tracking_uri(uri: str) -> None:
    """Point MLflow's fluent API (tracking and registry) at ``uri`` in this process only.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` (and the registry variable)
    into the environment, and segops reads that variable as the user's override of a
    workflow's ``tracking.uri``: left there, one workflow's URI would silently redirect the
    next workflow run in the same process. The environment is put back as it was.
    """
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

"""MLflow sqlite stores for tests: real stores, without paying MLflow's schema migrations each time.

Creating an MLflow sqlite database runs its schema migrations (2-4 s on the 2-core machine). Every
store here is a copy of one migrated, empty database made once per test process, so each test or
module still gets a store of its own, and MLflow treats it exactly as a database it created.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_template: Path | None = None


def _migrated_template() -> Path:
    global _template
    if _template is None:
        from mlflow.tracking import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="segops-mlflow-template-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{path}", registry_uri=f"sqlite:///{path}").search_registered_models()
        _template = path
    return _template


def sqlite_store(folder: Path, name: str = "mlflow.db") -> str:
    """The URI of an MLflow sqlite store ``folder/name``: a copy of the migrated empty database,
    unless that file already exists (a rerun or a later context on the same folder keeps it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists():
        shutil.copyfile(_migrated_template(), target)
    return f"sqlite:///{target}"

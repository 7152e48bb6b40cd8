"""``MLFLOW_TRACKING_URI`` in the environment wins over the workflow's ``tracking.uri``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from segops.config import validate_workflow_text
from segops.config.load import apply_tracking_env, spec_hash

WORKFLOW = """
name: env-uri
tracking: {uri: "sqlite:///from-the-file.db", experiment: env}
steps:
  - step: ingest
    source: {kind: dicom, path: data/none}
"""  # data/none is never read: these tests validate with check_paths=False


def test_without_the_variable_the_workflow_uri_is_used(monkeypatch, caplog) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = validate_workflow_text(WORKFLOW, check_paths=False)
    with caplog.at_level(logging.INFO, logger="segops"):
        assert apply_tracking_env(spec) is spec
    assert "sqlite:///from-the-file.db (tracking.uri of the workflow)" in caplog.text


def test_the_variable_wins_and_the_log_says_where_it_came_from(monkeypatch, caplog) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    spec = validate_workflow_text(WORKFLOW, check_paths=False)
    with caplog.at_level(logging.INFO, logger="segops"):
        resolved = apply_tracking_env(spec)
    assert resolved.tracking.uri == "http://127.0.0.1:5999"
    assert resolved.tracking.experiment == "env" and resolved.steps == spec.steps
    assert spec.tracking.uri == "sqlite:///from-the-file.db"  # the loaded spec is left as it was
    assert "http://127.0.0.1:5999 from the environment (MLFLOW_TRACKING_URI)" in caplog.text
    assert "not tracking.uri sqlite:///from-the-file.db" in caplog.text


def test_a_password_in_the_uri_is_not_logged(monkeypatch, caplog) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret@tracking.example:5000")
    with caplog.at_level(logging.INFO, logger="segops"):
        resolved = apply_tracking_env(validate_workflow_text(WORKFLOW, check_paths=False))
    assert resolved.tracking.uri == "http://alice:s3cret@tracking.example:5000"
    assert "s3cret" not in caplog.text and "http://alice:***@tracking.example:5000" in caplog.text


def test_an_empty_variable_is_ignored(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")
    spec = validate_workflow_text(WORKFLOW, check_paths=False)
    assert apply_tracking_env(spec).tracking.uri == "sqlite:///from-the-file.db"


def test_the_tracking_server_is_part_of_the_run_identity(monkeypatch) -> None:
    spec = validate_workflow_text(WORKFLOW, check_paths=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert spec_hash(apply_tracking_env(spec)) != spec_hash(spec)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-the-file.db")
    assert spec_hash(apply_tracking_env(spec)) == spec_hash(spec)  # same URI either way: same run


def test_run_workflow_hands_the_environment_uri_to_the_tracker(monkeypatch, tmp_path: Path) -> None:
    """No Ray, no MLflow: stop the runner at the point it opens its tracker, and look at the URI."""
    from segops.workflows import run_workflow

    class Stop(Exception):
        pass

    seen: list[str] = []

    def tracker(tracking) -> None:
        seen.append(tracking.uri)
        raise Stop

    monkeypatch.setattr("segops.cluster.runtime.ensure_ray", lambda cluster: {})
    monkeypatch.setattr("segops.tracking.RunTracker", tracker)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    spec = validate_workflow_text(WORKFLOW.replace("steps:", f"output_dir: {tmp_path}\nsteps:"), check_paths=False)
    with pytest.raises(Stop):
        run_workflow(spec)
    assert seen == ["http://127.0.0.1:5999"]


def test_pointing_mlflow_at_a_store_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """``mlflow.set_tracking_uri`` writes MLFLOW_TRACKING_URI; segops must not leave it there,
    or one workflow's store would override the next workflow's tracking.uri in this process."""
    import mlflow

    from segops.tracking import use_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    use_tracking_uri(f"sqlite:///{tmp_path}/a.db")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/a.db" == mlflow.get_registry_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user-choice:5000")
    use_tracking_uri(f"sqlite:///{tmp_path}/b.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://user-choice:5000"

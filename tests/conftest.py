"""Shared fixtures. Tests make their own small data; nothing here reads ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# segops lets MLFLOW_TRACKING_URI override a workflow's tracking.uri: a developer's shell setting
# must not send the suite's runs to their server (tests that want a server set it themselves)
os.environ.pop("MLFLOW_TRACKING_URI", None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before every test's fixtures: tests that call ``mlflow.set_tracking_uri`` (which writes
    MLFLOW_TRACKING_URI into the environment) must not redirect later tests' workflow runs."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)


os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

REPO = Path(__file__).resolve().parents[1]


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ct_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic CT archive: 3 series × 6 slices with masks."""
    from segops.synth import make_ct_archive

    out = tmp_path_factory.mktemp("ct")
    make_ct_archive(out, series=3, slices=6, seed=3)
    return out


@pytest.fixture(scope="session")
def inspection_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segops.synth import make_inspection_archive

    out = tmp_path_factory.mktemp("inspection")
    make_inspection_archive(out, count=8, seed=5)
    return out


@pytest.fixture(scope="session")
def ray_session():
    """One local 2-CPU Ray for the whole session (start-up and shutdown cost seconds each; modules
    share it). Tests that need a cluster of their own (several nodes, a killed driver) start it
    in subprocesses."""
    import ray

    from segops.cluster.runtime import ensure_ray
    from segops.config.schema import ClusterSpec

    ensure_ray(ClusterSpec(num_cpus=2))
    yield
    ray.shutdown()

"""What importing segops does to the process: usage reporting of MLflow and Ray stays off unless
the user's environment turns it on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from segops import NO_USAGE_REPORTING

#: Where MLflow's telemetry turns itself off on its own (CI services, pytest): a child process run
#: from the suite drops them, so what it sees is a user's shell.
_CI_VARIABLES = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE")

_PROBE = """
import os, sys
if sys.argv[1] == "segops":
    import segops  # noqa: F401
import mlflow.telemetry
print(mlflow.telemetry.get_telemetry_client() is not None, os.environ.get("RAY_USAGE_STATS_ENABLED"))
"""


def _child(first: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in _CI_VARIABLES and k not in NO_USAGE_REPORTING}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, first], env=clean | env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(
    ("first", "env", "expected"),
    [
        ("mlflow", {}, ["True", "None"]),  # MLflow alone starts its telemetry client: the probe can fail
        ("segops", {}, ["False", "0"]),
        ("segops", {"MLFLOW_DISABLE_TELEMETRY": "false", "RAY_USAGE_STATS_ENABLED": "1"}, ["True", "1"]),
    ],
    ids=["mlflow-alone", "segops-first", "user-turned-it-on"],
)
def test_importing_segops_turns_usage_reporting_off_unless_the_user_set_it(first, env, expected) -> None:
    assert _child(first, **env) == expected

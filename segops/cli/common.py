"""What every ``segops`` command shares: the consoles, exit codes, logging set-up, common options."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True, soft_wrap=True)
# when piped (CI logs, `| tee`), rich would assume 80 columns and fold tables into ribbons
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)

EXIT_SPEC_ERROR = 2
EXIT_DRIFT = 3  # segops drift: a feature of the input moved from the training data
_TRACKING_URI = typer.Option(
    "sqlite:///mlruns.db", "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI."
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    logging.getLogger("segops").setLevel(logging.INFO)

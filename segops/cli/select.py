"""``segops select``: which cases of a finished run to label next, written as a labelling package."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from segops.cli.common import EXIT_SPEC_ERROR, _setup_logging, console, out


def select(
    run: str = typer.Argument(..., help="Run folder, or a run id under runs/."),
    budget: int = typer.Option(..., "--budget", min=1, help="Cases to pick."),
    out_dir: Path = typer.Option(None, "--out", help="Package folder (default: <run folder>/select-<budget>)."),
    include_labelled: bool = typer.Option(
        False, "--include-labelled", help="Labelled cases are candidates too (default: unlabelled ones only)."
    ),
    pool: int = typer.Option(None, "--pool", min=1, help="Embed only the K riskiest candidates (default: all)."),
    num_cpus: int = typer.Option(None, help="CPUs for a local Ray (default: all)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show INFO logs of every library."),
) -> None:
    """Pick N cases to label next: risky ones, unlike each other (risk-weighted k-center on the model's
    encoder embeddings), and write a labelling package: manifest.csv, images, the current masks as
    pre-annotations, and the ingest step that feeds the labelled package to workflows/retrain.yaml.
    Exit 0: written; 1: it failed; 2: no such run or nothing to pick from."""
    _setup_logging(verbose)
    from segops.errors import CheckpointError, SegopsError, StepError
    from segops.steps.select import select_for_labelling

    try:
        package = select_for_labelling(run, budget, out_dir, include_labelled, num_cpus, pool)
    except (SegopsError, FileNotFoundError) as exc:
        console.print(f"[bold red]select failed:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR if isinstance(exc, StepError | CheckpointError) else 1) from None
    manifest = package.manifest
    table = Table(title=f"{len(manifest)} of {package.candidates} candidate case(s) to label, in this order")
    for column, justify in (("rank", "right"), ("case", "left"), ("risk", "right"), ("apart", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    table.add_column("why the model doubts it", overflow="fold")
    for row in manifest.to_dict("records"):
        frame = f" [{row['frame']}]" if int(row["frame"]) else ""
        apart = "-" if row["selection_distance"] == float("inf") else f"{row['selection_distance']:.2f}"
        risk = "-" if row["risk"] != row["risk"] else f"{row['risk']:.3f}"
        table.add_row(str(row["rank"]), f"{row['rel_path']}{frame}", risk, apart, str(row["risk_reasons"] or "-"))
    out.print(table)
    out.print(f"[green]labelling package[/] {package.folder} (what to do: {package.folder / 'README.txt'})")

"""``segops audit``: which model segmented which case, trained on what, and why it replaced another."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import typer

from segops.cli.common import _TRACKING_URI, EXIT_SPEC_ERROR, _setup_logging, console, out

audit_app = typer.Typer(
    no_args_is_help=True,
    help="Show an auditor which model segmented which case, trained on what, and why it replaced another.",
)
_OUT = typer.Option(None, "--out", help="Report folder (default: audit/<name>/).")
_NO_LOG = typer.Option(False, "--no-log", help="Do not log the report to MLflow (experiment segops-audit).")


@contextmanager
def _auditing(tracking_uri: str):
    """The reader an audit command works with; a SegopsError inside (a run, model or table it cannot
    find) exits 2 with the reason, no traceback."""
    _setup_logging(False)
    logging.getLogger("segops.tracking").setLevel(logging.WARNING)  # the audit run is announced below
    from segops.errors import SegopsError
    from segops.tracking import AuditReader

    try:
        yield AuditReader(tracking_uri)
    except SegopsError as exc:
        console.print(f"[bold red]audit failed:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR) from None


def _print_report(report, reader, no_log: bool, run_name: str, tags: dict[str, str]) -> None:
    from segops.audit import to_rich

    for section in report.sections:
        if section.terminal:
            out.print(to_rich(section))
    out.print(f"report: {report.index}")
    if not no_log:
        run_id = reader.log_audit(report.folder, run_name, tags, report.mlflow_metrics)
        out.print(f"logged to MLflow run {run_id} (experiment segops-audit) at {reader.uri}")


@audit_app.command("models")
def audit_models(
    name: str = typer.Argument(None, help="Registered model name (default: every model)."),
    tracking_uri: str = _TRACKING_URI,
) -> None:
    """List registered model versions: aliases, promotion outcome, source run and its headline metrics."""
    with _auditing(tracking_uri) as reader:
        versions = reader.model_versions(name)
    from segops.audit import to_rich, versions_section

    if not versions:
        out.print(f"no registered models at {tracking_uri}")
        return
    out.print(to_rich(versions_section(versions)))


@audit_app.command("compare")
def audit_compare(
    a: str = typer.Argument(..., help="A: MLflow run id, segops run id, models:/name/<version> or models:/name@alias."),
    b: str = typer.Argument(..., help="B: the same kinds; B − A is reported (negative: B is worse)."),
    tracking_uri: str = _TRACKING_URI,
    worst: int = typer.Option(6, "--worst", min=0, help="Overlay images of the N cases with the largest Dice drop."),
    out_dir: Path = _OUT,
    no_log: bool = _NO_LOG,
) -> None:
    """Compare two runs or model versions: metrics, per-case Dice paired by case id, worst cases."""
    with _auditing(tracking_uri) as reader:
        from segops import audit

        refs = reader.resolve(a), reader.resolve(b)
        folder = out_dir or Path("audit") / f"compare-{refs[0].slug}-vs-{refs[1].slug}"
        tables = reader.case_tables(*refs, folder / "data")
        sides = []
        for key, ref, table in zip("AB", refs, tables):
            cases, note = audit.load_cases(table.path, table.uri)
            model = (ref.model_name, ref.model_version) if ref.model_version else None
            sides.append(
                audit.Side(
                    key,
                    ref.text,
                    ref.label,
                    reader.run_details(ref.run_id),
                    cases,
                    table.uri,
                    f"{table.why}; {note}",
                    model,
                )
            )
        report = audit.write_compare_report(folder, *sides, worst=worst, tracking_uri=tracking_uri)
        tags = {
            "segops.audit.kind": "compare",
            "segops.audit.a": a,
            "segops.audit.b": b,
            "segops.audit.a_run_id": refs[0].run_id,
            "segops.audit.b_run_id": refs[1].run_id,
        }
        _print_report(report, reader, no_log, audit.slug(f"audit-compare-{refs[0].slug}-{refs[1].slug}"), tags)


@audit_app.command("run")
def audit_run(
    run_id: str = typer.Argument(..., help="MLflow run id, segops run id (runs/<run-id>) or a model URI."),
    tracking_uri: str = _TRACKING_URI,
    out_dir: Path = _OUT,
    no_log: bool = _NO_LOG,
) -> None:
    """What one run used and made: data (dataset inputs, split), models (registered, used), outputs."""
    with _auditing(tracking_uri) as reader:
        from segops import audit
        from segops.tracking import SEGMENT_REPORT

        ref = reader.resolve(run_id)
        details = reader.run_details(ref.run_id)
        folder = out_dir or Path("audit") / ref.slug
        cases, note = None, ""
        if any(path == SEGMENT_REPORT for path, _ in details.artifacts):
            local = reader.download(ref.run_id, SEGMENT_REPORT, folder / "data")
            cases, note = audit.load_cases(local, f"runs:/{ref.run_id}/{SEGMENT_REPORT}", heldout_only=False)
        report = audit.write_run_report(folder, details, cases, note, tracking_uri)
        tags = {"segops.audit.kind": "run", "segops.audit.run_id": ref.run_id}
        _print_report(report, reader, no_log, f"audit-run-{ref.run_id[:8]}", tags)

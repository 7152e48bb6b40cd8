"""``segops`` command line: thin — parse, call, print. Heavy imports happen inside commands."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from typer.models import OptionInfo

if TYPE_CHECKING:  # imported lazily: --help and validate stay instant
    from segops.steps.results import TrainResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Segment image archives as distributed workflows.",
)
synth_app = typer.Typer(no_args_is_help=True, help="Write deterministic synthetic archives (for demos and tests).")
app.add_typer(synth_app, name="synth")
console = Console(stderr=True, soft_wrap=True)
# when piped (CI logs, `| tee`), rich would assume 80 columns and fold tables into ribbons
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)

EXIT_SPEC_ERROR = 2


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    logging.getLogger("segops").setLevel(logging.INFO)


def _load(path: Path):
    """(validated spec, text) of a workflow file, read once; exit 2 listing every problem."""
    from segops.config.load import read_workflow_text, validate_workflow_text
    from segops.errors import WorkflowSpecError

    try:
        text = read_workflow_text(path)
        return validate_workflow_text(text, source=str(path)), text
    except WorkflowSpecError as exc:
        console.print(f"[bold red]invalid workflow[/] {exc.source}: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            console.print(f"  • {problem}", markup=False, highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR) from None


@app.command()
def validate(workflow: Path = typer.Argument(..., help="Workflow YAML file.")) -> None:
    """Check a workflow file and list every problem by dotted path (exit 2 if any)."""
    spec, _ = _load(workflow)
    steps = ", ".join(s.step for s in spec.steps)
    out.print(f"[green]ok[/] {workflow}: workflow {spec.name!r} with steps: {steps}")


@app.command()
def run(
    workflow: Path = typer.Argument(..., help="Workflow YAML file."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show INFO logs of every library."),
    new: bool = typer.Option(False, "--new", help="Start a fresh run even if this workflow ran (or half ran) before."),
) -> None:
    """Validate, then run a workflow end to end on local Ray (or RAY_ADDRESS) with MLflow tracking.

    Running the same workflow again resumes it: finished steps and written outputs are skipped.
    """
    _setup_logging(verbose)
    spec, text = _load(workflow)  # exits 2 before Ray starts if the file is invalid
    from segops.errors import SegopsError
    from segops.workflows import run_workflow

    try:
        result = run_workflow(spec, text, new_run=new)
    except (SegopsError, FileNotFoundError) as exc:
        console.print(f"[bold red]run failed:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    _print_summary(result)


def _print_summary(result) -> None:
    import pandas as pd

    from segops.metrics import HEADLINE_METRICS
    from segops.steps.results import IngestResult, SegmentResult, TrainResult

    ingest, train, segment = (result.latest(kind) for kind in (IngestResult, TrainResult, SegmentResult))
    if ingest is not None and "census" in ingest.tables:
        from segops.data.census import census_summary

        summary = census_summary(pd.read_parquet(ingest.tables["census"]), weight="records")
        out.print(census_rich_table(summary, "census of ingested records (every shape: census.parquet)"))
    title = f"run {result.run_id}" + (" (resumed)" if result.resumed else "")
    table = Table(title=title, show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("run folder", str(result.run_dir))
    if train is not None:
        table.add_row("checkpoint", str(train.checkpoint))
        if train.model_uri is not None:
            table.add_row("registered model", train.model_uri)
    if segment is not None:
        root = segment.report.parent
        for folder in ("masks", "segs"):
            if (root / folder).is_dir():
                table.add_row(folder, str(root / folder))
        if "://" in segment.outputs_root:
            table.add_row("outputs (masks, SEGs)", segment.outputs_root)
        table.add_row("report", str(segment.report))
    table.add_row("MLflow run", f"{result.mlflow_run_id} at {result.tracking_uri}")
    metrics = segment.metrics if segment is not None else {}
    # held-out (test), then validation, then all cases; foreground Dice first in each: on mostly empty
    # data the plain mean is high even for a model that predicts nothing
    for key in (k for k in HEADLINE_METRICS if k.startswith("segment_")):
        if key in _SPLIT_ROWS:
            row = _split_row(key, metrics, train)
            if row is not None:
                table.add_row(*row)
        elif key in metrics:
            value = metrics[key]
            table.add_row(
                key.removeprefix("segment_"),
                f"{value:.0f}" if key in ("segment_outputs", "segment_failed") else f"{value:.4f}",
            )
    if metrics.get("segment_empty_prediction_fraction") == 1.0:
        table.add_row(
            "[red]warning[/]",
            "[red]the model predicted no foreground on any segmented image: it learnt "
            "background only (see val_fg_dice in the training history)[/]",
        )
    out.print(table)
    uri = result.tracking_uri
    out.print(f"Open the run in MLflow:  mlflow ui --backend-store-uri {uri}  (then http://127.0.0.1:5000)")


#: The summary rows that head the held-out and the validation figures: (label, what the part is).
_SPLIT_ROWS = {
    "segment_heldout_cases": ("held-out (test)", "touched by nothing before this step"),
    "segment_val_cases": ("validation", "chose the checkpoint: flatters the model"),
    "segment_labelled_cases": ("all labelled", "train, validation and test together"),
}
NO_TEST_SET = "no test set (split.test_fraction: 0 or too few groups): no held-out figures"


def _split_row(key: str, metrics: Mapping[str, float], train: TrainResult | None) -> tuple[str, str] | None:
    """The row heading a part of the split: its case count, or why there are no held-out figures.
    None when there is nothing to say (no train step and no such cases; no validation cases)."""
    label, what = _SPLIT_ROWS[key]
    cases = int(metrics.get(key, 0))
    if key == "segment_heldout_cases" and train is not None and not train.test_groups:
        return label, NO_TEST_SET
    if key == "segment_val_cases" and train is not None and train.folds > 1 and "cv_dice_mean" in train.best:
        fg = train.best.get("cv_fg_dice_mean")
        return "cross-validation", f"{train.folds} folds, out-of-fold Dice {train.best['cv_dice_mean']:.4f}" + (
            "" if fg is None else f", foreground Dice {fg:.4f}"
        )
    if cases == 0:
        return None
    if train is None:  # a model from elsewhere: which cases it saw is not known here
        what = "every labelled case" if key == "segment_labelled_cases" else what
    return label, f"{cases} case{'s' if cases != 1 else ''}; {what}"


@app.command()
def census(
    folder: Path = typer.Argument(..., help="Archive folder."),
    kind: str = typer.Option("dicom", help="dicom or images"),
    num_cpus: int = typer.Option(None, help="CPUs for a local Ray (default: all)."),
) -> None:
    """Count files per status x modality x transfer syntax x photometric x channels, with their shapes
    summarised (range, median, most frequent), reading headers only."""
    _setup_logging(False)
    if kind not in ("dicom", "images"):
        console.print(f"[red]--kind must be dicom or images, got {kind!r}[/]")
        raise typer.Exit(EXIT_SPEC_ERROR)
    from segops.cluster.datasets import census_rows
    from segops.cluster.runtime import ensure_ray
    from segops.config.schema import ClusterSpec, DicomSource, ImageSource

    source = DicomSource(kind="dicom", path=folder) if kind == "dicom" else ImageSource(kind="images", path=folder)
    ensure_ray(ClusterSpec(num_cpus=num_cpus))
    rows = census_rows(source)
    if rows.empty:
        out.print(f"no {kind} files under {folder}")
        return
    from segops.data.census import census_summary

    out.print(census_rich_table(census_summary(rows), f"census of {folder}"))


def census_rich_table(df, title: str) -> Table:
    """A pandas census as a rich table, transfer syntax UIDs shown with their names."""
    table = Table(title=title)
    for column in df.columns:
        justify = "right" if df[column].dtype.kind in "iuf" else "left"
        # room for a codec name on one line ("JPEG Baseline (Process 1)"); the shape text wraps instead
        min_width = 25 if column == "transfer_syntax" else None
        table.add_column(column, overflow="fold", justify=justify, min_width=min_width)
    for _, row in df.iterrows():
        table.add_row(*[_ts_label(v) if c == "transfer_syntax" else str(v) for c, v in row.items()])
    return table


def _ts_label(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid and uid[0].isdigit() else str(uid)


@app.command()
def plan(
    folder: Path = typer.Argument(..., help="Folder of images (or DICOM) and their masks."),
    output: Path = typer.Option(
        Path("workflow.yaml"), "--output", "-o", help="Workflow file to write (fingerprint.json goes beside it)."
    ),
    labels: Path = typer.Option(None, "--labels", help="Mask folder or COCO JSON file (default: guessed)."),
    pattern: str = typer.Option(
        None, "--pattern", help="Mask path per image, e.g. '{rel_stem}_mask.png' (default: guessed)."
    ),
    task: str = typer.Option(None, "--task", help="semantic or instance (default: guessed from the masks)."),
    foreground_value: int = typer.Option(
        None, "--foreground-value", help="The stored mask value that is foreground (e.g. 0)."
    ),
    budget_minutes: float = typer.Option(10.0, "--budget-minutes", min=0.1, help="Training time to plan epochs for."),
    name: str = typer.Option(None, "--name", help="Workflow name (default: the folder's name)."),
    num_cpus: int = typer.Option(None, help="CPUs for a local Ray (default: all)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show INFO logs of every library."),
) -> None:
    """Plan a workflow from the data: detect pairing and mask kind, fingerprint the archive, apply
    nnU-Net-style rules."""
    _setup_logging(verbose)
    if task not in (None, "semantic", "instance"):
        console.print(f"[red]--task must be semantic or instance, got {task!r}[/]")
        raise typer.Exit(EXIT_SPEC_ERROR)
    from segops.data.pairing import PlanOverrides
    from segops.data.planning import PlanSettings
    from segops.errors import SegopsError
    from segops.steps.plan import plan_workflow

    overrides = PlanOverrides(labels=labels, pattern=pattern, task=task, foreground_value=foreground_value)
    try:
        result = plan_workflow(folder, output, overrides, PlanSettings(budget_minutes=budget_minutes), name, num_cpus)
    except SegopsError as exc:
        console.print(f"[bold red]plan failed:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    fp = result.fingerprint
    out.print(
        f"[green]planned[/] {result.workflow} ({result.detection.pairing} pairing, {result.detection.mask_kind} masks, "
        f"{fp.n_labelled}/{fp.n_images} images labelled); fingerprint in {result.fingerprint_file}"
    )
    out.print(f"check it with: segops validate {result.workflow}; run it with: segops run {result.workflow}")


# Options the synth commands share (typer's Annotated style: the default stays in each signature).
_Seed = Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")]


def _count(items: str) -> OptionInfo:
    """``--count``: how many ``items`` (images, photos, slices) an archive holds; at least one."""
    return typer.Option(min=1, help=f"Number of {items}.")


def _share(of_what: str) -> OptionInfo:
    """A fraction in [0, 1], e.g. ``--defect-free``: the share of photos without a defect."""
    return typer.Option(min=0.0, max=1.0, help=f"Share of {of_what}.")


@synth_app.command("ct")
def synth_ct(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write images/ and labels/ into.")],
    series: Annotated[int, typer.Option(min=1, help="Number of CT series.")] = 6,
    slices: Annotated[int, typer.Option(min=1, help="Slices per series.")] = 20,
    seed: _Seed = 0,
) -> None:
    """CT-like DICOM series with ellipsoid lesions and one mask PNG per slice."""
    from segops.synth import make_ct_archive

    summary = make_ct_archive(out_dir, series=series, slices=slices, seed=seed)
    out.print(
        f"wrote {summary.n_images} DICOM slices to {summary.images} ({summary.n_foreground} with lesion), "
        f"masks in {summary.labels}"
    )


@synth_app.command("inspection")
def synth_inspection(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write images/ and labels/ into.")],
    count: Annotated[int, _count("images")] = 40,
    seed: _Seed = 0,
    rgb_fraction: Annotated[float, _share("RGB (vs gray) images")] = 0.5,
) -> None:
    """Textured surface photos with scratches and blobs, and binary mask PNGs."""
    from segops.synth import make_inspection_archive

    summary = make_inspection_archive(out_dir, count=count, seed=seed, rgb_fraction=rgb_fraction)
    out.print(
        f"wrote {summary.n_images} images to {summary.images} ({summary.n_foreground} with defects), masks in "
        f"{summary.labels}"
    )


@synth_app.command("defects")
def synth_defects(
    out_dir: Annotated[
        Path, typer.Argument(help="Folder for <kind>/part-NNNN.jpg + .png masks, README.png, dataset.jpg.")
    ],
    count: Annotated[int, _count("photos")] = 60,
    size: Annotated[int, typer.Option(min=32, help="Largest side in pixels (sides vary from 2/3 of it up).")] = 96,
    seed: _Seed = 0,
    defect_free: Annotated[float, _share("photos without a defect")] = 0.7,
) -> None:
    """Grayscale JPEG surface photos with rare defects (0.2-24 % of the area), anti-aliased mask PNG beside each."""
    from segops.synth import make_defect_archive

    summary = make_defect_archive(out_dir, count=count, seed=seed, size=size, defect_free=defect_free)
    out.print(
        f"wrote {summary.n_images} photos to {summary.images} ({summary.n_foreground} with defects), "
        "each mask beside its image (binarise at 128)"
    )


@synth_app.command("instances")
def synth_instances(
    out_dir: Annotated[Path, typer.Argument(help="Folder for images/, instances/, classes/, annotations.json.")],
    count: Annotated[int, _count("images")] = 40,
    size: Annotated[int, typer.Option(min=48, help="Image height and width in pixels.")] = 128,
    seed: _Seed = 0,
    classes: Annotated[int, typer.Option(min=1, max=3, help="Object classes: 1 cell, 2 + rod, 3 + ring.")] = 2,
) -> None:
    """Microscopy-like scenes of touching and overlapping objects, with instance-id PNGs, class PNGs and COCO JSON."""
    from segops.synth import make_instance_archive

    summary = make_instance_archive(out_dir, count=count, size=size, seed=seed, classes=classes)
    out.print(
        f"wrote {summary.n_images} images with {summary.n_instances} objects ({', '.join(summary.class_names)}) to "
        f"{summary.images}; instance ids in {summary.instances}, classes in {summary.classes}, COCO in "
        f"{summary.annotations}"
    )


@synth_app.command("membranes")
def synth_membranes(
    out_dir: Annotated[Path, typer.Argument(help="Folder for images/<k>.png and labels/<k>.png.")],
    count: Annotated[int, _count("slices")] = 10,
    size: Annotated[int, typer.Option(min=32, help="Slice height and width in pixels.")] = 128,
    seed: _Seed = 0,
) -> None:
    """EM-like cell tilings with dark membranes, labelled as ISBI 2012 (0 = membrane, 255 = interior)."""
    from segops.synth import make_membrane_archive

    summary = make_membrane_archive(out_dir, count=count, size=size, seed=seed)
    out.print(f"wrote {summary.n_images} slices to {summary.images}, labels in {summary.labels}")


# --------------------------------------------------------------------------- audit
audit_app = typer.Typer(
    no_args_is_help=True,
    help="Show an auditor which model segmented which case, trained on what, and why it replaced another.",
)
app.add_typer(audit_app, name="audit")
_TRACKING_URI = typer.Option(
    "sqlite:///mlruns.db", "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI."
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

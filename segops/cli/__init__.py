"""``segops`` command line: thin — parse, call, print. Heavy imports happen inside commands."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from segops.cli.audit import audit_app
from segops.cli.common import _TRACKING_URI, EXIT_DRIFT, EXIT_SPEC_ERROR, _setup_logging, console, out
from segops.cli.select import select as select_command
from segops.cli.synth import synth_app

if TYPE_CHECKING:  # imported lazily: --help and validate stay instant
    from segops.steps.results import TrainResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Segment image archives as distributed workflows.",
)
app.add_typer(synth_app, name="synth")
app.add_typer(audit_app, name="audit")
app.command("select")(select_command)
__all__ = ["EXIT_DRIFT", "EXIT_SPEC_ERROR", "app", "census_rich_table"]


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
        for folder in ("masks", "segs", "rtstruct"):
            if (root / folder).is_dir():
                table.add_row(folder, str(root / folder))
        if "://" in segment.outputs_root:
            table.add_row("outputs (masks, SEGs)", segment.outputs_root)
        table.add_row("report", str(segment.report))
        if not segment.risk:
            table.add_row("review queue", "off: no risk computed (segment.review.enabled: false)")
        elif segment.flagged is not None:
            page = segment.review_page or segment.review
            where = f": {page}" if page is not None else ""
            table.add_row("review queue", f"{segment.flagged} case(s) flagged{where}")
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
    for row in _class_rows(metrics, segment.class_names if segment is not None else {}):
        table.add_row(*row)
    if metrics.get("segment_empty_prediction_fraction") == 1.0:
        table.add_row(
            "[red]warning[/]",
            "[red]the model predicted no foreground on any segmented image: it learnt "
            "background only (see val_fg_dice in the training history)[/]",
        )
    alarm = _false_alarms(metrics)
    if alarm:
        table.add_row("[red]warning[/]", f"[red]{alarm}[/]")
    out.print(table)
    uri = result.tracking_uri
    out.print(f"Open the run in MLflow:  mlflow ui --backend-store-uri {uri}  (then http://127.0.0.1:5000)")


#: Per-class Dice below which the summary warns that the class is not found.
MISSED_CLASS_DICE = 0.1
#: Classes the summary names one by one; of more (TotalSegmentator's 117), the lowest.
MAX_CLASSES_SHOWN = 12


def _class_rows(metrics: Mapping[str, float], names: Mapping[int, str]) -> list[tuple[str, str]]:
    """The most trustworthy part's Dice per class (held-out, else validation, else all; models of two or
    more foreground classes), and a warning naming each class below :data:`MISSED_CLASS_DICE`: the
    mean over classes hides a structure the model never finds."""
    parts = (("heldout_", "held-out"), ("val_", "validation"), ("", "labelled"))
    found = [(f"segment_{key}class_", name) for key, name in parts]
    found = [(prefix, name) for prefix, name in found if any(k.startswith(prefix) for k in metrics)]
    if not found:
        return []
    prefix, part = found[0]
    classes = sorted({int(k[len(prefix) :].split("_")[0]) for k in metrics if k.startswith(prefix)})
    dice = {c: metrics[f"{prefix}{c}_dice_mean"] for c in classes}
    label = {c: names.get(c, f"class {c}") for c in classes}
    shown = classes if len(classes) <= MAX_CLASSES_SHOWN else sorted(classes, key=lambda c: (dice[c], c))
    text = " · ".join(
        f"{label[c]} {dice[c]:.4f} ({metrics[f'{prefix}{c}_cases']:.0f})" for c in shown[:MAX_CLASSES_SHOWN]
    )
    more = len(classes) - MAX_CLASSES_SHOWN
    text += f" · and {more} more above (the lowest shown; every class in MLflow)" if more > 0 else ""
    rows = [(f"{part} Dice per class", f"{text}  (cases whose truth or mask holds the class)")]
    missed = [c for c in classes if dice[c] < MISSED_CLASS_DICE]
    if missed:  # every one named: these are what the user must know
        rows.append(
            (
                "[red]warning[/]",
                f"[red]{', '.join(label[c] for c in missed)}: {part} Dice below {MISSED_CLASS_DICE} — the model "
                "does not find it, which the mean over classes hides. Small structures need more training "
                "(train.epochs), a larger patch or foreground_oversample; see dice_per_class in report.parquet[/]",
            )
        )
    return rows


#: Share of clean (empty-truth) cases given a mask at which the summary warns of false alarms.
FALSE_ALARM_WARNING = 0.5


def _false_alarms(metrics: Mapping[str, float]) -> str | None:
    """A warning when half or more of the clean cases of the most trustworthy part (held-out, else
    validation, else all) got a mask: on rare defects the foreground Dice can look fine meanwhile."""
    for key, part in (("heldout_", "held-out"), ("val_", "validation"), ("", "labelled")):
        share = metrics.get(f"segment_{key}empty_flagged")
        if share is not None:
            if share < FALSE_ALARM_WARNING:
                return None
            return (
                f"{share:.0%} of the {part} cases with nothing to segment (clean parts) got a mask: false alarms "
                "that the foreground Dice does not count; see report.parquet (fg_fraction > 0 where "
                "label_fg_fraction is 0). The postprocessing clears such specks when the cases that choose it "
                "(validation, with training cases where it holds too few defects) hold at least 5 clean and 5 "
                "defective ones (else train.folds); else train longer or on more clean images"
            )
    return None


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
    if key == "segment_val_cases" and train is not None and train.select_metric.startswith("none"):
        what = "chose the postprocessing, not the epoch (select: last)"
    if train is None:  # a model from elsewhere: which cases it saw is not known here
        what = "every labelled case" if key == "segment_labelled_cases" else what
    groups = {"segment_heldout_cases": train.test_groups, "segment_val_cases": train.val_groups} if train else {}
    return label, f"{cases} case{'s' if cases != 1 else ''}{_of_groups(cases, len(groups.get(key, ())))}; {what}"


#: Fewer held-out (or validation) groups than this: the summary says the figure moves with the split.
FEW_GROUPS = 5


def _of_groups(cases: int, groups: int) -> str:
    """ " of N groups" where a part's cases come from fewer groups (series, patients, folders), with a
    caution where they are few: a held-out figure over 3 parts moved by 0.54 foreground Dice between two
    split seeds in benchmarks/grouped_split.py."""
    if not 0 < groups < cases:
        return ""
    said = f" of {groups} group{'s' if groups != 1 else ''}"
    if groups < FEW_GROUPS:
        said += " (few: varies with split.seed; train.folds scores every group)"
    return said


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
    from segops.data.detection import PlanOverrides
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
        f"{result.detection.n_paired}/{result.detection.n_images} images labelled); fingerprint of the "
        f"{fp.n_labelled} labelled in {result.fingerprint_file}"
        + (f"; {fp.left_out} file(s) left out, named in the warning above" if fp.left_out else "")
    )
    for key in _PLAN_DECISIONS:  # the guesses that decide which images train, said here, not only in the file
        if key in result.detection.notes:
            out.print(f"  {key}: {result.detection.notes[key]}", highlight=False)
    out.print(f"check it with: segops validate {result.workflow}; run it with: segops run {result.workflow}")


#: Detection notes ``segops plan`` prints: what decides which images train and which are left out.
_PLAN_DECISIONS = ("path", "labels.empty_when_missing", "exclude", "skip", "modalities", "group_by")


@app.command()
def drift(
    folder: Path = typer.Argument(..., help="Folder of images, DICOM or volumes, or an ingested dataset folder."),
    model: str = typer.Option(..., "--model", help="models:/name@alias, models:/name/3, or a checkpoint folder."),
    kind: str = typer.Option(None, "--kind", help="images, dicom, volumes or dataset (default: guessed)."),
    sample: int = typer.Option(200, "--sample", min=1, help="Images compared (the first ones read)."),
    out_dir: Path = typer.Option(Path("drift"), "--out", help="Folder for drift.json, drift.html and the model."),
    tracking_uri: str = _TRACKING_URI,
    num_cpus: int = typer.Option(None, help="CPUs for a local Ray (default: all)."),
) -> None:
    """Is this data like the model's training data? Compares a sample's intensity histogram (PSI),
    sizes, spacing and mean intensity (KS), census and encoder embeddings with what the model stored.
    Exit 0: nothing moved; 3: drift found; 1: the check failed; 2: no such model or --kind."""
    _setup_logging(False)
    import pandas as pd

    from segops.config.steps import DriftSpec
    from segops.errors import CheckpointError, SegopsError, StepError
    from segops.steps.drift import drift_check

    try:
        found = drift_check(folder, model, tracking_uri, out_dir, DriftSpec(sample=sample), kind, num_cpus)
    except (SegopsError, FileNotFoundError) as exc:
        console.print(f"[bold red]drift check failed:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR if isinstance(exc, StepError | CheckpointError) else 1) from None
    report = found.report
    table = pd.DataFrame(report.table())[["feature", "train", "new", "distance", "threshold", "moved"]]
    table[["distance", "threshold"]] = table[["distance", "threshold"]].map(lambda v: "-" if v != v else f"{v:.3g}")
    table["moved"] = table["moved"].map({True: "YES", False: "no"})
    out.print(census_rich_table(table, f"drift of {folder} ({report.n_new} images) vs training ({report.n_train})"))
    if not report.moved:
        out.print(f"[green]ok[/]: nothing moved; report: {found.html_path}")
        return
    out.print(f"[bold red]drift:[/] {', '.join(r.feature for r in report.moved)} moved; report: {found.html_path}")
    raise typer.Exit(EXIT_DRIFT)

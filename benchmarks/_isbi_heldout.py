"""The ISBI 2012 held-out slices and how every benchmark row is scored on them.

Shared by ``vs_nnunet.py`` and ``quality.py``. The held-out slices are not listed anywhere: they
come from segops' own code, as a run would compute them: the recipe's ingest source decoded by
:func:`segops.data.decode.decode_file` (labels mapped to classes by the recipe, 1 = membrane),
then :func:`segops.data.splits.split_groups` with the recipe's ``train.split``; the *test* groups
are the held-out set. Every prediction (segops' mask PNGs, nnU-Net's) is scored against those
decoded labels with the same functions: :func:`segops.metrics.case_scores` (Dice of class 1, pixel
error) and :func:`segops.metrics.rand_error` with the segment step's ``boundary_class``.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from segops.config.load import validate_workflow_text
from segops.config.schema import WorkflowSpec
from segops.data.decode import decode_file, list_source_files
from segops.data.labels import build_resolver, read_mask_png
from segops.data.planning import STARTUP_S, epoch_cost
from segops.data.records import STATUS_OK
from segops.data.splits import Split, split_groups
from segops.metrics import case_scores, rand_error

log = logging.getLogger(__name__)

WORKFLOW = Path("workflows/isbi2012.yaml")
#: 5 of 30 slices: with seed 0 the same 5 that the recipe's former ``val_fraction: 0.1667`` held out.
HELDOUT_FRACTION = 0.1667


def step_of(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    """The first step of ``kind`` in a workflow dict (the dict itself, so edits stick)."""
    return next(s for s in doc["steps"] if s["step"] == kind)


def load_recipe(path: Path = WORKFLOW) -> dict[str, Any]:
    """The ISBI recipe as a dict, ready to derive variants from.

    A recipe from before the three-way split (``split: {val_fraction: f}``, whose validation
    slices were the held-out ones) gets ``split: {test_fraction: f, seed}``: the same slices,
    now held out as the test split. Segment steps with their own ``source`` (the challenge's
    unlabelled test slices) are dropped: there is nothing to score on them.
    """
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    train = step_of(doc, "train")
    split = dict(train.get("split") or {})
    if "test_fraction" not in split:
        split = {"test_fraction": split.get("val_fraction", HELDOUT_FRACTION), "seed": split.get("seed", 0)}
    train["split"] = split
    doc["steps"] = [s for s in doc["steps"] if not (s["step"] == "segment" and "source" in s)]
    return doc


def derive(doc: dict[str, Any], name: str, out: Path, **train_changes: Any) -> dict[str, Any]:
    """A copy of ``doc`` named ``name``, its runs and MLflow store under ``out``, ``train`` updated."""
    new = copy.deepcopy(doc)
    new["name"] = name
    new["output_dir"] = str(out / "runs")
    new["tracking"] = {**new.get("tracking", {}), "uri": f"sqlite:///{out / 'mlruns.db'}"}
    step_of(new, "train").update(train_changes)
    return new


def validated(doc: dict[str, Any]) -> WorkflowSpec:
    return validate_workflow_text(yaml.safe_dump(doc, sort_keys=False), doc["name"])


@dataclass(frozen=True)
class Case:
    """A labelled slice as segops ingests it."""

    case_id: str
    group_id: str
    rel_path: str
    source_uri: str
    label: np.ndarray  # (H, W) uint8 class indices; 1 = the recipe's foreground (membrane)
    image: np.ndarray | None = None  # (C, H, W) float32 as segops decodes it


def labelled_cases(spec: WorkflowSpec) -> list[Case]:
    """Every labelled slice of the ingest step's source, decoded by segops' ingest code (no Ray)."""
    source = next(s for s in spec.steps if s.step == "ingest").source
    resolver = build_resolver(source.labels) if source.labels is not None else None
    rows = [r for f in list_source_files(source) for r in decode_file(f["path"], f["rel_path"], source, resolver)]
    return [
        Case(
            r["case_id"],
            r["group_id"],
            r["rel_path"],
            r["source_uri"],
            np.asarray(r["label"], dtype=np.uint8),
            np.asarray(r["image"], dtype=np.float32),
        )
        for r in rows
        if r["status"] == STATUS_OK and r.get("label") is not None
    ]


def split_of(spec: WorkflowSpec, cases: list[Case]) -> Split:
    """The train step's split of these cases, as ``segops.steps.train`` computes it."""
    split = next(s for s in spec.steps if s.step == "train").split
    return split_groups([c.group_id for c in cases], split.val_fraction, split.test_fraction, split.seed)


def heldout_cases(spec: WorkflowSpec) -> tuple[Split, list[Case]]:
    """(the split, the labelled cases of its test groups, by relative path)."""
    cases = labelled_cases(spec)
    split = split_of(spec, cases)
    if not split.test:
        raise SystemExit(f"{spec.name}: the split holds no test groups out; set train.split.test_fraction")
    test = set(split.test)
    return split, sorted((c for c in cases if c.group_id in test), key=lambda c: c.rel_path)


def boundary_class(spec: WorkflowSpec) -> int:
    segment = next(s for s in spec.steps if s.step == "segment")
    return segment.boundary_class if segment.boundary_class is not None else 1


def score(preds: dict[str, np.ndarray], cases: list[Case], classes: int, boundary: int) -> dict[str, Any]:
    """Mean Dice (foreground classes), pixel error and Rand error over ``cases``, and per case.

    Args:
        preds: case id → (H, W) predicted class map.
    """
    per_case = {}
    for case in cases:
        pred = preds[case.case_id]
        per_case[case.rel_path] = case_scores(pred, case.label, classes) | {
            "rand_error": rand_error(pred, case.label, boundary)
        }
    mean = {k: float(np.nanmean([s[k] for s in per_case.values()])) for k in ("dice", "pixel_error", "rand_error")}
    return mean | {"cases": len(cases), "per_case": per_case}


def result_row(
    scored: dict[str, Any], train_s: float, inference_s: float, slices: int, epochs: Any, **extra: Any
) -> dict[str, Any]:
    """The columns every benchmark row has, in this order: the held-out scores of :func:`score`
    (pixel error, Rand error, Dice), training minutes, inference seconds and the slices they
    segmented, epochs; then ``extra``; last the per-case scores."""
    return {
        **{k: scored[k] for k in ("pixel_error", "rand_error", "dice")},
        "train_minutes": train_s / 60,
        "inference_s": inference_s,
        "inference_slices": slices,
        "epochs": epochs,
        **extra,
        "per_case": scored["per_case"],
    }


# --------------------------------------------------------------------------- segops runs


def _seconds(step: dict[str, Any]) -> float:
    return (datetime.fromisoformat(step["finished"]) - datetime.fromisoformat(step["started"])).total_seconds()


def run_segops(doc: dict[str, Any], path: Path, new_run: bool) -> Path:
    """Write ``doc`` to ``path`` and run (or resume) it; the run folder."""
    from segops.workflows import run_workflow

    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(doc, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return run_workflow(validated(doc), text, new_run=new_run).run_dir


@dataclass(frozen=True)
class SegopsRun:
    run_dir: Path
    train_s: float
    segment_s: float
    segmented: int  # slices the segment step segmented (all labelled ones, not only the held-out)
    test_groups: frozenset[str]
    masks: dict[str, Path]  # case id → mask PNG
    workflow: dict[str, Any]
    probabilities: dict[str, Path]  # case id → softmax .npz (segment outputs: [probabilities]), else empty


def read_run(run_dir: Path) -> SegopsRun:
    """A finished segops run's times, split and masks, from its manifest and report."""
    import pandas as pd

    manifest = json.loads((run_dir / "manifest.json").read_text())
    if manifest.get("state") != "done":
        raise SystemExit(f"segops run {run_dir} is not finished (state {manifest.get('state')!r})")
    train = next(s for s in manifest["steps"] if s["step"] == "train")
    segment = next(s for s in manifest["steps"] if s["step"] == "segment")
    report = pd.read_parquet(segment["outputs"]["report"])
    split = json.loads((run_dir / "split.json").read_text())
    outputs = pd.read_parquet(segment["outputs"]["outputs"])
    probs = {}
    if "probabilities_path" in outputs.columns:
        probs = {c: Path(p) for c, p in zip(outputs["case_id"], outputs["probabilities_path"]) if p}
    return SegopsRun(
        run_dir,
        _seconds(train),
        _seconds(segment),
        len(report),
        frozenset(split.get("test", ())),
        dict(zip(report["case_id"], (Path(p) for p in report["mask_path"]))),
        yaml.safe_load((run_dir / "workflow.yaml").read_text()),
        probs,
    )


def score_run(
    run: SegopsRun, split: Split, cases: list[Case], classes: int, boundary: int, raw: bool = False
) -> dict[str, Any]:
    """Score a run's masks of the held-out cases; refuses a run whose test split is not ``split``'s.

    ``raw``: score the argmax of the saved softmax instead (the prediction before postprocessing).
    """
    if run.test_groups != frozenset(split.test):
        raise SystemExit(
            f"segops run {run.run_dir} held out other slices ({len(run.test_groups)} test groups) than the "
            f"benchmark's split ({len(split.test)}); run the benchmark's own workflow"
        )
    if raw:
        if not all(c.case_id in run.probabilities for c in cases):
            raise SystemExit(f"segops run {run.run_dir} saved no probabilities (segment outputs: [probabilities])")
        preds = {c.case_id: _argmax(run.probabilities[c.case_id]) for c in cases}
    else:
        preds = {c.case_id: read_mask_png(run.masks[c.case_id], c.label.shape) for c in cases}
    return score(preds, cases, classes, boundary)


def _argmax(path: Path) -> np.ndarray:
    with np.load(path) as saved:
        return saved["classes"][np.argmax(saved["probabilities"], axis=0)].astype(np.uint8)


# --------------------------------------------------------------------------- budget → epochs


def probe_epochs(
    spec: WorkflowSpec, minutes: float, n_train: int, n_val: int, image_shape: tuple[int, ...], folds: int = 1
) -> int:
    """Epochs of the train step that fit ``minutes``: the planner's epoch-time formula
    (:mod:`segops.data.planning`) with seconds per patch timed by the planner's own probe
    (:func:`segops.steps.plan.probe_seconds`: one thread, as a Ray Train worker runs) at the batch a
    worker's step holds (``batch_size`` x ``patches_per_image`` patches: per-patch time depends on
    it, for DynUNet by ~30 %). With ``folds: k``, k models train one after another, each on (k-1)/k."""
    from segops.steps.plan import probe_seconds

    step = next(s for s in spec.steps if s.step == "train")
    if folds > 1:
        total = n_train + n_val
        n_val, n_train = total / folds, total - total / folds
    plan = step.model.model_dump(mode="json") | {
        "batch": step.samples_per_step,
        "patch_size": list(step.preprocess.patch_size),
    }
    per_patch = probe_seconds(plan)
    tiles = max(1.0, float(np.prod(image_shape)) / float(np.prod(step.preprocess.patch_size)))
    epoch_s = epoch_cost(
        n_train * step.patches_per_image, n_val * tiles, per_patch, step.scaling.workers, n_train
    ).total
    epochs = max(1, int((60 * minutes - folds * STARTUP_S) // (folds * epoch_s)))
    log.info("probe: %.3f s per patch, ~%.1f s per epoch, %d epoch(s) in %g min", per_patch, epoch_s, epochs, minutes)
    return epochs

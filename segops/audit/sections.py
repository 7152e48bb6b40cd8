"""The tables of an audit report, built from what runs recorded: model versions, the two sides of a
comparison, per-case Dice, run metrics, evaluation and promotion decisions, one run's data, models,
outputs and steps. Documents a run lacks, or holds in an unexpected shape, give fewer rows, not errors.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pandas as pd

from segops.audit.tables import Section, Side, fmt, when

if TYPE_CHECKING:  # plain dataclasses; importing segops.tracking at run time would load MLflow
    from segops.tracking import RunDetails, VersionInfo

#: The few run metrics a model-version listing shows, with short headers.
_VERSION_METRICS = {
    "best_val_dice": "val Dice",
    "best_val_mask_ap": "val mask AP",
    "segment_heldout_dice_mean": "held-out Dice",
    "segment_heldout_mask_ap50": "held-out AP50",
    "evaluate_challenger_dice_mean": "eval Dice",
    "evaluate_dice_gain": "gain vs champion",
}
_NONE = ("", "none", "None", "null", "()", "[]")  # how "not set" was written into params and tags


# --------------------------------------------------------------------------- model versions


def versions_section(versions: list[VersionInfo]) -> Section:
    """Registered model versions: aliases, promotion outcome, lineage and the source run's headline metrics."""
    metric_keys = [k for k in _VERSION_METRICS if any(k in v.metrics for v in versions)]
    headers = [_VERSION_METRICS[k] for k in metric_keys]
    columns = ("model", "version", "aliases", "created", "promotion", "run", "parent", *headers)
    rows = []
    for v in versions:
        promotion = v.tags.get("segops.promotion", "")
        if v.tags.get("segops.replaced_version") not in (None, *_NONE):
            promotion += f", replaced v{v.tags['segops.replaced_version']}"
        if v.tags.get("segops.rejected_reasons"):
            promotion += f": {v.tags['segops.rejected_reasons']}"
        run = f"{v.run_id[:8]} {v.run_name}".strip() or "-"
        rows.append(
            (
                v.name,
                v.version,
                ", ".join(v.aliases) or "-",
                when(v.created_ms)[:16],
                promotion or "-",
                run,
                _parent(None, v),
                *(fmt(v.metrics.get(k)) for k in metric_keys),
            )
        )
    note = "created: UTC; metrics of the run that logged the version: " + ", ".join(
        f"{_VERSION_METRICS[k]} = {k}" for k in metric_keys
    )
    return Section("registered model versions", columns, rows, note=note)


# --------------------------------------------------------------------------- compare


def _version_of(side: Side) -> VersionInfo | None:
    if side.model is None:
        return None
    return next((v for v in side.run.models if (v.name, v.version) == side.model), None)


def compared_section(a: Side, b: Side) -> Section:
    """Who is A and who is B: model, run, data trained on, lineage and which per-case table is used."""
    rows = []
    fields = (
        ("named", lambda s: s.ref),
        ("model", lambda s: s.label),
        ("run registered", lambda s: ", ".join(_version_label(v) for v in s.run.models) or "-"),
        ("MLflow run", lambda s: f"{s.run.run_id} ({s.run.run_name})" if s.run.run_name else s.run.run_id),
        ("workflow", lambda s: s.run.tags.get("segops.workflow", "-")),
        ("started", lambda s: when(s.run.start_ms)),
        ("git commit", lambda s: s.run.tags.get("segops.git_commit", "-")),
        ("trained on", lambda s: _datasets_text(s.run, "training")),
        ("validated on", lambda s: _datasets_text(s.run, "validation")),
        ("evaluated on", lambda s: _datasets_text(s.run, "evaluation")),
        (
            "train / val cases",
            lambda s: f"{s.run.params.get('train.cases', '-')} / {s.run.params.get('val.cases', '-')}",
        ),
        ("warm start from", lambda s: _parent(s.run, _version_of(s))),
        ("promotion", lambda s: _promotion(_version_of(s))),
        ("per-case table", lambda s: s.table),
        ("cases used", lambda s: s.why),
    )
    for name, get in fields:
        rows.append((name, get(a), get(b)))
    return Section("compared", ("", "A", "B"), rows)


def _version_label(v: VersionInfo) -> str:
    return f"{v.name} v{v.version}" + "".join(f" @{a}" for a in v.aliases)


def _datasets_text(run: RunDetails, context: str) -> str:
    found = [d for d in run.datasets if d.get("context") == context]
    return (
        "; ".join(f"{d.get('name')} @{str(d.get('digest', ''))[:12]} ({source_text(d.get('source'))})" for d in found)
        or "-"
    )


def source_text(source: Any) -> str:
    """A dataset source as MLflow stores it (JSON such as ``{"uri": "/data/ct"}``) as its URI or path."""
    try:
        parsed = json.loads(source) if isinstance(source, str) else source
    except ValueError:
        return str(source)
    if isinstance(parsed, dict):
        return str(next((parsed[k] for k in ("uri", "path", "url") if parsed.get(k)), json.dumps(parsed)))
    return str(source if source is not None else "")


def _parent(run: RunDetails | None, version: VersionInfo | None) -> str:
    """The warm-start parent: the version's ``segops.parent_model`` tag, else the run's params."""
    candidates = [version.tags.get("segops.parent_model") if version else None]
    candidates += [run.params.get(k) for k in ("train.parent_model", "init_from")] if run else []
    return next((c for c in candidates if c not in (None, *_NONE)), "-")


def _promotion(version: VersionInfo | None) -> str:
    if version is None:
        return "-"
    tags = version.tags
    text = tags.get("segops.promotion", "-")
    if tags.get("segops.replaced_version") not in (None, *_NONE):
        text += f", replaced v{tags['segops.replaced_version']}"
    if tags.get("segops.rejected_reasons"):
        text += f" ({tags['segops.rejected_reasons']})"
    if tags.get("segops.promotion_run"):
        text += f", decided in run {tags['segops.promotion_run'][:8]}"
    aliases = f"aliases {', '.join(version.aliases)}" if version.aliases else ""
    return "; ".join(t for t in (text if text != "-" else "", aliases) if t) or "-"


def paired_section(stats: dict[str, Any]) -> Section:
    rows = [
        ("cases in table", fmt(stats["cases_a"]), fmt(stats["cases_b"]), ""),
        ("cases paired by case id", fmt(stats["cases"]), fmt(stats["cases"]), ""),
        ("mean Dice (paired)", fmt(stats["dice_mean_a"]), fmt(stats["dice_mean_b"]), fmt(stats["delta_mean"])),
        ("median Dice (paired)", fmt(stats["dice_median_a"]), fmt(stats["dice_median_b"]), ""),
    ]
    if "iou_mean_a" in stats:
        diff = stats["iou_mean_b"] - stats["iou_mean_a"]
        rows.append(("mean IoU (paired)", fmt(stats["iou_mean_a"]), fmt(stats["iou_mean_b"]), fmt(diff)))
    note = (
        f"B better on {stats['better_in_b']}, worse on {stats['worse_in_b']}, unchanged on {stats['unchanged']} "
        f"case(s); only in A: {stats['only_in_a']}, only in B: {stats['only_in_b']}"
    )
    return Section("per-case Dice", ("", "A", "B", "B − A"), rows, note)


def metrics_section(a: dict[str, float], b: dict[str, float], keys: list[str] | None) -> Section:
    """Run metrics side by side; ``keys=None``: every metric (page only), else these (terminal too)."""
    names = sorted(set(a) | set(b)) if keys is None else keys
    rows = []
    for k in names:
        diff = b[k] - a[k] if k in a and k in b else None
        rows.append((k, fmt(a.get(k)), fmt(b.get(k)), fmt(diff)))
    title = "run metrics (all, latest value)" if keys is None else "run metrics"
    return Section(title, ("metric", "A", "B", "B − A"), rows, terminal=keys is not None)


def worst_section(paired: pd.DataFrame, overlays: list[tuple[str | None, str]]) -> Section:
    rows = []
    for rank, (row, (path, note)) in enumerate(zip(paired.head(len(overlays)).to_dict("records"), overlays), start=1):
        rows.append(
            (
                str(rank),
                str(row["case_id"]),
                str(row.get("rel_path", "")),
                str(row.get("modality", "") or ""),
                fmt(row["dice_a"]),
                fmt(row["dice_b"]),
                fmt(row["delta"]),
                path or "-",
                note,
            )
        )
    columns = ("#", "case id", "path", "modality", "Dice A", "Dice B", "B − A", "overlay", "note")
    return Section("largest Dice drops (B − A)", columns, rows, note="overlays: A outline blue, B outline orange")


def decision_sections(runs: list[tuple[str, RunDetails]]) -> list[Section]:
    """Per distinct run: its evaluation (``evaluate/comparison.json`` scalars) and its promotion decision
    (``promote/decision.json``: outcome, reasons, the models, each gate check), read defensively."""
    sections, seen = [], set()
    for key, run in runs:
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        where = f"run {run.run_id[:8]} ({key})"
        comparison = run.documents.get("evaluate/comparison.json")
        if isinstance(comparison, dict):
            rows = [(k, fmt(v)) for k, v in comparison.items() if isinstance(v, (int, float, str)) or v is None]
            sections.append(Section(f"evaluation recorded by {where}", ("", "value"), rows, "evaluate/comparison.json"))
        decision = run.documents.get("promote/decision.json")
        if isinstance(decision, dict):
            sections += _decision(decision, where)
    return sections


def _decision(decision: dict[str, Any], where: str) -> list[Section]:
    reasons = decision.get("reasons")
    rows = [
        ("passed", fmt(decision.get("passed"))),
        ("reasons", ("; ".join(map(str, reasons)) or "-") if isinstance(reasons, list) else fmt(reasons)),
        *((role, _model_text(decision.get(role))) for role in ("challenger", "champion")),
    ]
    rows += [
        (k, fmt(v)) for k, v in decision.items() if k not in ("passed", "reasons", "checks", "challenger", "champion")
    ]
    sections = [Section(f"promotion decision recorded by {where}", ("", "value"), rows, "promote/decision.json")]
    checks = decision.get("checks")
    if isinstance(checks, dict):  # {name: {...}} rather than [{"name": ...}]
        checks = [(v if isinstance(v, dict) else {"value": v}) | {"name": k} for k, v in checks.items()]
    if isinstance(checks, list) and checks:
        columns = ("check", "rule", "value", "threshold", "passed")
        checks = [c if isinstance(c, dict) else {"name": c} for c in checks]
        rows = [tuple(fmt(c.get(k)) for k in ("name", "rule", "value", "threshold", "passed")) for c in checks]
        sections.append(Section(f"gate checks ({where})", columns, rows))
    return sections


def _model_text(model: Any) -> str:
    if isinstance(model, dict) and "name" in model:
        extra = {k: v for k, v in model.items() if k not in ("name", "version")}
        return f"{model['name']} v{model.get('version', '?')}" + (f" {fmt(extra)}" if extra else "")
    return fmt(model)


# --------------------------------------------------------------------------- one run


def run_section(run: RunDetails) -> Section:
    packages = ", ".join(f"{k[4:]} {v}" for k, v in sorted(run.tags.items()) if k.startswith("pkg."))
    rows = [
        ("MLflow run", run.run_id),
        ("run name", run.run_name or "-"),
        ("experiment", run.experiment),
        ("status", run.status),
        ("started", when(run.start_ms)),
        ("ended", when(run.end_ms)),
        ("segops run id", run.tags.get("segops.run_id", "-")),
        ("workflow", run.tags.get("segops.workflow", "-")),
        ("spec hash", run.tags.get("segops.spec_hash", "-")),
        ("git commit", run.tags.get("segops.git_commit", "-")),
        ("packages", packages or "-"),
    ]
    return Section("run", ("", "value"), rows)


def datasets_section(run: RunDetails) -> Section:
    rows = [
        (d.get("context") or "-", d.get("name", ""), d.get("digest", ""), source_text(d.get("source")))
        for d in run.datasets
    ]
    note = "" if rows else "this run logged no dataset inputs"
    return Section("dataset inputs (mlflow.data)", ("context", "name", "digest", "source"), rows, note)


def data_section(run: RunDetails) -> Section:
    """Case counts, the train/val split and the folders the workflow read."""
    rows = [(k, run.params[k]) for k in ("train.cases", "val.cases") if k in run.params]
    split = run.documents.get("train/split.json")
    if isinstance(split, dict):
        rows += [
            (f"{k} groups (train/split.json)", fmt(len(v)) if isinstance(v, list) else fmt(v)) for k, v in split.items()
        ]
    for key in ("train.datasets", "extra_datasets", "train.parent_model", "init_from"):
        if run.params.get(key) not in (None, *_NONE):
            rows.append((key, run.params[key]))
    for index, step in enumerate(_workflow_steps(run)):
        source = step.get("source")
        if isinstance(source, dict):
            labels = source.get("labels") if isinstance(source.get("labels"), dict) else {}
            text = f"{source.get('kind', '?')}: {source.get('path', '?')}" + (
                f" (labels {labels.get('kind', '?')}: {labels.get('path', '?')})" if labels else ""
            )
            rows.append((f"steps[{index}] {step.get('step', '?')} source", text))
    return Section("data", ("", "value"), rows, note="" if rows else "nothing recorded")


def models_section(run: RunDetails) -> Section:
    """Models this run registered, and the models its steps used (from the workflow file and decision)."""
    rows = []
    for v in run.models:
        detail = _promotion(v) if "segops.promotion" in v.tags else ", ".join(f"@{a}" for a in v.aliases)
        rows.append(("registered by this run", f"models:/{v.name}/{v.version}", detail or "-"))
        if _parent(None, v) != "-":
            rows.append(("  warm-started from", _parent(None, v), f"parent of v{v.version}"))
    own = "this run's trained model" + "".join(f" (models:/{v.name}/{v.version})" for v in run.models[-1:])
    digests = {}
    for step in _manifest_steps(run):
        if isinstance(step.get("outputs"), dict) and step["outputs"].get("model_digest"):
            digests[step.get("index")] = step["outputs"]["model_digest"]
    for index, step in enumerate(_workflow_steps(run)):
        for key in ("model", "champion", "challenger", "init_from"):
            if key == "model" and step.get("step") != "segment":
                continue
            if key in step or (key == "model" and step.get("step") == "segment"):
                value = step.get(key) or (own if key in ("model", "challenger") else "-")
                digest = f"weights sha256 {digests[index]}" if index in digests else ""
                rows.append((f"steps[{index}] {step.get('step')}.{key}", str(value), digest or "-"))
    decision = run.documents.get("promote/decision.json")
    if isinstance(decision, dict):
        rows += [(f"promote: {role}", _model_text(decision.get(role)), "") for role in ("challenger", "champion")]
    return Section("models", ("role", "model", "detail"), rows, note="" if rows else "no model recorded")


def outputs_section(run: RunDetails) -> Section:
    """Artifacts by folder: file count and size."""
    folders: dict[str, list[int]] = {}
    for path, size in run.artifacts:
        folder = path.rsplit("/", 1)[0] if "/" in path else "."
        entry = folders.setdefault(folder, [0, 0])
        entry[0] += 1
        entry[1] += size
    rows = [(f, fmt(n), _size(b)) for f, (n, b) in sorted(folders.items())]
    files = [p for p, _ in run.artifacts if p.count("/") <= 1 and not p.startswith("workflow/")]
    note = "files: " + ", ".join(files[:20]) + (" …" if len(files) > 20 else "") if files else "no artifacts"
    return Section("outputs (MLflow artifacts)", ("folder", "files", "size"), rows, note)


def steps_section(run: RunDetails) -> Section:
    rows = []
    for step in _manifest_steps(run):
        outputs = step.get("outputs") if isinstance(step.get("outputs"), dict) else {}
        shown = {k: v for k, v in outputs.items() if not isinstance(v, (int, float)) or k.startswith("best_")}
        rows.append(
            (
                str(step.get("index", "")),
                str(step.get("step", "")),
                str(step.get("state", "")),
                str(step.get("finished") or "-"),
                fmt(shown) if shown else "-",
            )
        )
    note = "" if rows else "no workflow/manifest.json (it is logged when a run finishes)"
    return Section("steps (workflow/manifest.json)", ("#", "step", "state", "finished", "outputs"), rows, note)


def _workflow_steps(run: RunDetails) -> list[dict[str, Any]]:
    doc = run.documents.get("workflow/workflow.yaml")
    steps = doc.get("steps") if isinstance(doc, dict) else None
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _manifest_steps(run: RunDetails) -> list[dict[str, Any]]:
    doc = run.documents.get("workflow/manifest.json")
    steps = doc.get("steps") if isinstance(doc, dict) else None
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)

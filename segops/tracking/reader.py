"""The read side for audits: what runs recorded, which model versions exist, which per-case tables to pair.

Everything here only reads the tracking store (plus logging an audit's report folder), and reads it
defensively: a tag, metric or artifact that a run does not have is left out, never an error.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mlflow.exceptions import MlflowException

from segops.config.schema import TrackingSpec
from segops.errors import AuditLookupError
from segops.metrics import HEADLINE_METRICS
from segops.tracking.run import RunTracker
from segops.tracking.store import _quiet_mlflow

log = logging.getLogger(__name__)

AUDIT_EXPERIMENT = "segops-audit"
SEGMENT_REPORT = "segment/report.parquet"
EVALUATE_CHALLENGER = "evaluate/challenger_cases.parquet"
EVALUATE_CHAMPION = "evaluate/champion_cases.parquet"
#: Small JSON/YAML artifacts an audit reads when a run has them.
RUN_DOCUMENTS = (
    "workflow/manifest.json",
    "workflow/workflow.yaml",
    "train/split.json",
    "evaluate/comparison.json",
    "promote/decision.json",
)
_MAX_ARTIFACTS = 2000


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version, with the headline metrics of the run that logged it."""

    name: str
    version: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created_ms: int
    status: str
    run_id: str  # the MLflow run that logged it ("" if unknown)
    run_name: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class AuditRef:
    """What an audit reference (run id, segops run id, ``models:/name/3``, ``models:/name@alias``) names."""

    text: str  # as given
    run_id: str  # the MLflow run whose records describe it
    label: str  # for people: "seg-unet v3 @champion", "run 1a2b3c4d (quickstart-…)"
    slug: str  # for file and run names
    model_name: str | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class CaseTable:
    """A per-case table downloaded from a run, and why that table was chosen."""

    path: Path
    run_id: str
    artifact: str
    why: str

    @property
    def uri(self) -> str:
        return f"runs:/{self.run_id}/{self.artifact}"


@dataclass(frozen=True)
class RunDetails:
    """What a run recorded: tags, params, metrics, dataset inputs, artifacts, the model versions it logged,
    and its small JSON/YAML documents (manifest, workflow file, split, evaluation, promotion decision)."""

    run_id: str
    run_name: str
    experiment: str
    status: str
    start_ms: int | None
    end_ms: int | None
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    datasets: list[dict[str, str]]
    artifacts: list[tuple[str, int]]  # (path, bytes)
    models: list[VersionInfo]
    documents: dict[str, Any]


class AuditReader:
    """Read-only questions an auditor asks of a tracking store (and logging the audit's own report)."""

    def __init__(self, tracking_uri: str):
        _quiet_mlflow()
        if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).is_file():
            # MLflow would silently create an empty database for a mistyped path
            raise AuditLookupError(
                f"no MLflow database at {tracking_uri!r}: the file does not exist; pass --tracking-uri"
            )
        self.uri = tracking_uri
        self._tracker = RunTracker(TrackingSpec(uri=tracking_uri))
        self.client = self._tracker.client
        self._runs: dict[str, Any] = {}
        self._documents: dict[str, dict[str, Any]] = {}

    # ---- model registry

    def model_versions(self, name: str | None = None) -> list[VersionInfo]:
        """Every version of every registered model (or of ``name``), newest version first per model.

        Raises:
            AuditLookupError: ``name`` is not a registered model.
        """
        models = _all_pages(lambda token: self.client.search_registered_models(page_token=token))
        if name is not None:
            known = sorted(m.name for m in models)
            models = [m for m in models if m.name == name]
            if not models:
                raise AuditLookupError(
                    f"no registered model {name!r} at {self.uri}; registered: {', '.join(known) or 'none'}"
                )
        out = []
        for model in sorted(models, key=lambda m: m.name):
            aliases: dict[str, list[str]] = {}
            for alias, version in (model.aliases or {}).items():
                aliases.setdefault(str(version), []).append(alias)
            versions = _all_pages(
                lambda token, n=model.name: self.client.search_model_versions(f"name='{n}'", page_token=token)
            )
            for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
                out.append(self._version_info(mv, tuple(sorted(aliases.get(str(mv.version), [])))))
        return out

    def _version_info(self, mv: Any, aliases: tuple[str, ...]) -> VersionInfo:
        tags = dict(mv.tags or {})
        run_id = mv.run_id or tags.get("segops.run_id", "")
        run = self._get_run(run_id) if run_id else None
        metrics = dict(run.data.metrics) if run else {}
        return VersionInfo(
            name=mv.name,
            version=str(mv.version),
            aliases=aliases,
            tags=tags,
            created_ms=int(mv.creation_timestamp or 0),
            status=str(mv.status or ""),
            run_id=run_id,
            run_name=run.info.run_name if run else "",
            metrics={k: metrics[k] for k in HEADLINE_METRICS if k in metrics},
        )

    # ---- references

    def resolve(self, ref: str) -> AuditRef:
        """Resolve an MLflow run id, a segops run id (``<workflow>-<hash>``), ``runs:/<id>/…``,
        ``models:/name/<version>``, ``models:/name/latest`` or ``models:/name@alias``.

        Raises:
            AuditLookupError: nothing by that reference exists (the message says what was looked for).
        """
        ref = ref.strip()
        if ref.startswith("models:/"):
            return self._resolve_model(ref)
        run_id = ref[len("runs:/") :].split("/")[0] if ref.startswith("runs:/") else ref
        run = self._get_run(run_id, must=False) or self._run_by_segops_id(run_id)
        if run is None:
            raise AuditLookupError(
                f"no MLflow run {ref!r} at {self.uri}: pass an MLflow run id (32 hex), a segops run id "
                "(runs/<run-id>), models:/<name>/<version> or models:/<name>@<alias>"
            )
        run_id, name = run.info.run_id, run.info.run_name or ""
        label = f"run {run_id[:8]}" + (f" ({name})" if name else "")
        return AuditRef(ref, run_id, label, f"run-{run_id[:8]}")

    def _resolve_model(self, ref: str) -> AuditRef:
        body = ref[len("models:/") :]
        try:
            if "@" in body:
                name, alias = body.split("@", 1)
                mv = self.client.get_model_version_by_alias(name, alias)
            else:
                name, _, version = body.partition("/")
                if version == "latest":
                    versions = self.client.search_model_versions(f"name='{name}'")
                    version = str(max(int(v.version) for v in versions)) if versions else "none"
                mv = self.client.get_model_version(name, version)
        except MlflowException as exc:  # no such model, version or alias
            raise AuditLookupError(f"no model version {ref!r} at {self.uri}: {_mlflow_message(exc)}") from None
        info = self._version_info(mv, tuple(self.client.get_model_version(mv.name, str(mv.version)).aliases or ()))
        if not info.run_id or self._get_run(info.run_id, must=False) is None:
            raise AuditLookupError(f"{ref!r} (version {info.version} of {info.name!r}) has no MLflow run on record")
        label = f"{info.name} v{info.version}" + "".join(f" @{a}" for a in info.aliases)
        return AuditRef(ref, info.run_id, label, f"{info.name}-v{info.version}", info.name, info.version)

    def _run_by_segops_id(self, value: str) -> Any | None:
        """The newest MLflow run tagged ``segops.run_id = value`` (the folder name under ``runs/``)."""
        if not value or "'" in value:
            return None
        ids = [e.experiment_id for e in self.client.search_experiments()]
        runs = (
            self.client.search_runs(
                ids,
                filter_string=f"tags.`segops.run_id` = '{value}'",
                max_results=1,
                order_by=["attributes.start_time DESC"],
            )
            if ids
            else []
        )
        return runs[0] if runs else None

    # ---- runs

    def run_details(self, run_id: str) -> RunDetails:
        """Everything an audit shows about one run (documents it lacks are simply absent)."""
        run = self._get_run(run_id)
        experiment = self.client.get_experiment(run.info.experiment_id)
        models = [
            self._version_info(mv, tuple(self.client.get_model_version(mv.name, str(mv.version)).aliases or ()))
            for mv in self.client.search_model_versions(f"run_id='{run_id}'")
        ]
        return RunDetails(
            run_id=run_id,
            run_name=run.info.run_name or "",
            experiment=experiment.name if experiment else "",
            status=run.info.status,
            start_ms=run.info.start_time,
            end_ms=run.info.end_time,
            tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            datasets=self._tracker.run_dataset_inputs(run_id),
            artifacts=self.artifact_files(run_id),
            models=sorted(models, key=lambda v: (v.name, int(v.version))),
            documents=self.documents(run_id),
        )

    def artifact_files(self, run_id: str, path: str | None = None) -> list[tuple[str, int]]:
        """Every artifact file of a run as ``(path, bytes)``, breadth first (at most 2000)."""
        out: list[tuple[str, int]] = []
        folders = [path]
        while folders and len(out) < _MAX_ARTIFACTS:
            for item in self.client.list_artifacts(run_id, folders.pop(0)):
                if item.is_dir:
                    folders.append(item.path)
                else:
                    out.append((item.path, int(item.file_size or 0)))
        return sorted(out[:_MAX_ARTIFACTS])

    def has_artifact(self, run_id: str, path: str) -> bool:
        parent = path.rsplit("/", 1)[0] if "/" in path else None
        return any(item.path == path and not item.is_dir for item in self.client.list_artifacts(run_id, parent))

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        """Copy one artifact of a run into ``dst`` (as ``dst/<file name>``: folders in ``path`` are dropped)."""
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    def documents(self, run_id: str) -> dict[str, Any]:
        """The run's :data:`RUN_DOCUMENTS` that exist, parsed (JSON or YAML); unreadable ones are skipped."""
        if run_id in self._documents:
            return self._documents[run_id]
        found: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="segops-audit-") as tmp:
            for path in RUN_DOCUMENTS:
                if not self.has_artifact(run_id, path):
                    continue
                try:
                    text = self.download(run_id, path, Path(tmp)).read_text(encoding="utf-8")
                    found[path] = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
                except (MlflowException, OSError, ValueError, yaml.YAMLError) as exc:  # must not stop the audit
                    log.warning("cannot read %s of run %s: %s", path, run_id, exc)
        self._documents[run_id] = found
        return found

    # ---- per-case tables

    def case_tables(self, a: AuditRef, b: AuditRef, dst: Path) -> tuple[CaseTable, CaseTable]:
        """The per-case tables to pair for ``a`` and ``b``, downloaded under ``dst/a`` and ``dst/b``.

        When one side's run evaluated the other side's model as its champion, both tables come from that
        evaluation (the same frozen held-out cases, scored in one run). Otherwise each side's own table:
        for a model version, its run's ``evaluate/challenger_cases.parquet`` if present, else that run's
        ``segment/report.parquet``; for a run, its ``segment/report.parquet``, else the evaluate table.

        Raises:
            AuditLookupError: a side's run holds no per-case table.
        """
        for champion, challenger, first in ((a, b, True), (b, a, False)):
            if self._evaluated_as_champion(challenger.run_id, champion):
                why = f"{champion.label} as evaluated (champion) in the run of {challenger.label}, same held-out cases"
                champ = self._fetch(challenger.run_id, EVALUATE_CHAMPION, dst / ("a" if first else "b"), why)
                why = f"{challenger.label} (challenger) in its own evaluation against {champion.label}"
                chall = self._fetch(challenger.run_id, EVALUATE_CHALLENGER, dst / ("b" if first else "a"), why)
                return (champ, chall) if first else (chall, champ)
        return self._own_table(a, dst / "a"), self._own_table(b, dst / "b")

    def _own_table(self, ref: AuditRef, dst: Path) -> CaseTable:
        order = (EVALUATE_CHALLENGER, SEGMENT_REPORT) if ref.model_version else (SEGMENT_REPORT, EVALUATE_CHALLENGER)
        for artifact in order:
            if artifact == EVALUATE_CHALLENGER and ref.model_version and not self._is_challenger(ref):
                continue
            if self.has_artifact(ref.run_id, artifact):
                return self._fetch(ref.run_id, artifact, dst, f"{ref.label}: {artifact} of run {ref.run_id[:8]}")
        raise AuditLookupError(
            f"{ref.text!r} (MLflow run {ref.run_id}) has no per-case table: looked for {' and '.join(order)}"
        )

    def _fetch(self, run_id: str, artifact: str, dst: Path, why: str) -> CaseTable:
        return CaseTable(self.download(run_id, artifact, dst), run_id, artifact, why)

    def _evaluated_as_champion(self, run_id: str, ref: AuditRef) -> bool:
        if not ref.model_version or run_id == ref.run_id or not self.has_artifact(run_id, EVALUATE_CHAMPION):
            return False
        return _names_model(_evaluated_models(self.documents(run_id)).get("champion"), ref)

    def _is_challenger(self, ref: AuditRef) -> bool:
        """False when the run's own evaluation names a different model as its challenger."""
        named = _evaluated_models(self.documents(ref.run_id)).get("challenger")
        return named is None or _names_model(named, ref)

    # ---- writing the audit

    def log_audit(self, folder: Path, run_name: str, tags: dict[str, str], metrics: dict[str, float]) -> str:
        """Log an audit's report folder as the artifacts of a new run in experiment ``segops-audit``;
        returns its run id."""
        tracker = RunTracker(TrackingSpec(uri=self.uri, experiment=AUDIT_EXPERIMENT))
        run_id = tracker.start(run_name, {"segops.audit": "true"} | tags)
        try:
            tracker.log_metrics(metrics)
            tracker.log_artifact(folder)
        except BaseException:
            tracker.end("FAILED")
            raise
        tracker.end()
        return run_id

    def _get_run(self, run_id: str, must: bool = True) -> Any | None:
        if run_id not in self._runs:
            try:
                self._runs[run_id] = self.client.get_run(run_id)
            except MlflowException as exc:  # RESOURCE_DOES_NOT_EXIST (or a malformed id)
                if must:
                    raise AuditLookupError(f"no MLflow run {run_id!r} at {self.uri}: {_mlflow_message(exc)}") from None
                return None
        return self._runs[run_id]


def _evaluated_models(documents: dict[str, Any]) -> dict[str, Any]:
    """``{"champion": …, "challenger": …}`` as the promotion decision (or else the comparison, at its top
    level or under ``evaluation``) names them."""
    comparison = documents.get("evaluate/comparison.json")
    nested = comparison.get("evaluation") if isinstance(comparison, dict) else None  # a malformed file is no error
    for doc in (documents.get("promote/decision.json"), comparison, nested):
        if isinstance(doc, dict) and ("champion" in doc or "challenger" in doc):
            return {k: doc[k] for k in ("champion", "challenger") if doc.get(k)}
    return {}


def _names_model(named: Any, ref: AuditRef) -> bool:
    """Whether ``{"name", "version"}`` (or a ``models:/name/version`` string) names ``ref``'s model version."""
    if isinstance(named, str):
        return named in (ref.text, f"models:/{ref.model_name}/{ref.model_version}")
    if isinstance(named, dict):
        if named.get("uri") == f"models:/{ref.model_name}/{ref.model_version}":
            return True
        return str(named.get("name")) == ref.model_name and str(named.get("version")) == ref.model_version
    return False


def _all_pages(search: Any) -> list[Any]:
    items, token = [], None
    while True:
        page = search(token)
        items.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return items


def _mlflow_message(exc: Exception) -> str:
    return str(getattr(exc, "message", exc)).splitlines()[0][:300]

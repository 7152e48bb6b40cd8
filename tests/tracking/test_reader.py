"""AuditReader on runs and model versions written here into a real sqlite MLflow store.

Run A logged model ``m`` v1 and a segment report; run B logged v2 and evaluated v2 (challenger)
against v1 (champion); run C recorded nothing an audit can pair. Aliases: champion → v2,
previous → v1. ``orphan`` v1 has no run on record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from segops.config.schema import TrackingSpec
from segops.errors import AuditLookupError
from segops.tracking import (
    EVALUATE_CHALLENGER,
    EVALUATE_CHAMPION,
    SEGMENT_REPORT,
    AuditReader,
    AuditRef,
    CaseTable,
    RunTracker,
    VersionInfo,
)
from segops.tracking.reader import _evaluated_models, _names_model
from tests.stores import sqlite_store

DECISION = {"passed": True, "champion": {"name": "m", "version": "1"}, "challenger": {"name": "m", "version": "2"}}


def _write(folder: Path, rel: str, content: object) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, pd.DataFrame):
        content.to_parquet(path, index=False)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    return path


def _run(uri: str, name: str, metrics: dict[str, float], files: dict[str, object], folder: Path) -> str:
    tracker = RunTracker(TrackingSpec(uri=uri, experiment="wf"))
    run_id = tracker.start(name, {"segops.run_id": name, "segops.workflow": "wf"})
    tracker.log_params({"model.arch": "unet", "train.cases": 12})
    tracker.log_metrics(metrics)
    for rel, content in files.items():
        path = _write(folder / name, rel, content)
        tracker.log_artifact(path, str(Path(rel).parent))
    tracker.end()
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("reader")
    uri = sqlite_store(root / "store")
    table = pd.DataFrame({"case_id": ["c1", "c2"], "dice": [0.5, 0.75]})
    run_a = _run(
        uri,
        "wf-aaaa",
        {"best_val_dice": 0.8, "segment_heldout_dice_mean": 0.7, "segment_heldout_fg_dice_mean": 0.6, "loss": 0.1},
        {
            SEGMENT_REPORT: table,
            "workflow/manifest.json": {"run_id": "wf-aaaa"},
            "workflow/workflow.yaml": "name: wf\n",
        },
        root,
    )
    files = {EVALUATE_CHAMPION: table, EVALUATE_CHALLENGER: table.assign(dice=[0.625, 1.0])}
    run_b = _run(
        uri,
        "wf-bbbb",
        {"evaluate_challenger_dice_mean": 0.8125, "evaluate_dice_gain": 0.1875},
        files | {"promote/decision.json": DECISION},
        root,
    )
    run_c = _run(uri, "wf-cccc", {}, {}, root)
    tracker = RunTracker(TrackingSpec(uri=uri))
    for model, run_id in (("m", run_a), ("m", run_b), ("orphan", None)):
        if run_id in (run_a, None):
            tracker.client.create_registered_model(model)
        tracker.client.create_model_version(model, source=f"{root}/model", run_id=run_id)
    tracker.set_alias("m", "champion", "2")
    tracker.set_alias("m", "previous", "1")
    return {"uri": uri, "root": root, "a": run_a, "b": run_b, "c": run_c, "table": table}


def _version(store: dict, version: str) -> VersionInfo:
    return next(v for v in AuditReader(store["uri"]).model_versions("m") if v.version == version)


def test_a_missing_database_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        AuditLookupError, match=r"no MLflow database at 'sqlite:///.*/none.db': the file does not exist"
    ):
        AuditReader(f"sqlite:///{tmp_path}/none.db")
    assert not (tmp_path / "none.db").exists()


def test_model_versions_newest_first_with_aliases_and_headline_metrics(store: dict) -> None:
    versions = AuditReader(store["uri"]).model_versions()
    assert [(v.name, v.version, v.aliases, v.run_id, v.run_name, v.status) for v in versions] == [
        ("m", "2", ("champion",), store["b"], "wf-bbbb", "READY"),
        ("m", "1", ("previous",), store["a"], "wf-aaaa", "READY"),
        ("orphan", "1", (), "", "", "READY"),
    ]
    # in HEADLINE_METRICS order; "loss" is not a headline metric
    assert list(versions[1].metrics.items()) == [
        ("best_val_dice", 0.8),
        ("segment_heldout_fg_dice_mean", 0.6),
        ("segment_heldout_dice_mean", 0.7),
    ]
    assert versions[0].metrics == {"evaluate_challenger_dice_mean": 0.8125, "evaluate_dice_gain": 0.1875}
    assert [v.version for v in AuditReader(store["uri"]).model_versions("m")] == ["2", "1"]


def test_an_unknown_model_lists_the_registered_ones(store: dict) -> None:
    with pytest.raises(AuditLookupError, match=r"^no registered model 'x' at sqlite:///.*; registered: m, orphan$"):
        AuditReader(store["uri"]).model_versions("x")


def test_resolve_runs_by_mlflow_id_runs_uri_and_segops_id(store: dict) -> None:
    reader, a, b = AuditReader(store["uri"]), store["a"], store["b"]
    assert reader.resolve(f" {a} ") == AuditRef(a, a, f"run {a[:8]} (wf-aaaa)", f"run-{a[:8]}")
    assert reader.resolve(f"runs:/{a}/segment") == AuditRef(
        f"runs:/{a}/segment", a, f"run {a[:8]} (wf-aaaa)", f"run-{a[:8]}"
    )
    assert reader.resolve("wf-bbbb") == AuditRef("wf-bbbb", b, f"run {b[:8]} (wf-bbbb)", f"run-{b[:8]}")


def test_resolve_model_versions_by_number_alias_and_latest(store: dict) -> None:
    reader, a, b = AuditReader(store["uri"]), store["a"], store["b"]
    assert reader.resolve("models:/m/1") == AuditRef("models:/m/1", a, "m v1 @previous", "m-v1", "m", "1")
    assert reader.resolve("models:/m@champion") == AuditRef("models:/m@champion", b, "m v2 @champion", "m-v2", "m", "2")
    assert reader.resolve("models:/m/latest").model_version == "2"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nope", r"^no MLflow run 'nope' at sqlite:///.*: pass an MLflow run id \(32 hex\)"),
        ("models:/m/9", r"^no model version 'models:/m/9' at sqlite:///"),
        ("models:/m@gone", r"^no model version 'models:/m@gone' at sqlite:///"),
        ("models:/orphan/1", r"^'models:/orphan/1' \(version 1 of 'orphan'\) has no MLflow run on record$"),
    ],
)
def test_resolve_says_what_it_looked_for(store: dict, ref: str, message: str) -> None:
    with pytest.raises(AuditLookupError, match=message):
        AuditReader(store["uri"]).resolve(ref)


def test_run_details_hold_exactly_what_the_run_recorded(store: dict) -> None:
    details = AuditReader(store["uri"]).run_details(store["a"])
    folder = store["root"] / "wf-aaaa"
    sizes = {rel: (folder / rel).stat().st_size for rel in (SEGMENT_REPORT, "workflow/manifest.json")}
    assert (details.run_id, details.run_name, details.experiment, details.status) == (
        store["a"],
        "wf-aaaa",
        "wf",
        "FINISHED",
    )
    assert details.start_ms is not None and details.end_ms is not None and details.end_ms >= details.start_ms
    assert details.tags == {"segops.run_id": "wf-aaaa", "segops.workflow": "wf"}
    assert details.params == {"model.arch": "unet", "train.cases": "12"}
    assert details.metrics == {
        "best_val_dice": 0.8,
        "segment_heldout_dice_mean": 0.7,
        "segment_heldout_fg_dice_mean": 0.6,
        "loss": 0.1,
    }
    assert details.datasets == []
    assert details.artifacts == [
        (SEGMENT_REPORT, sizes[SEGMENT_REPORT]),
        ("workflow/manifest.json", sizes["workflow/manifest.json"]),
        ("workflow/workflow.yaml", len("name: wf\n")),
    ]
    assert details.models == [_version(store, "1")]
    assert details.documents == {
        "workflow/manifest.json": {"run_id": "wf-aaaa"},
        "workflow/workflow.yaml": {"name": "wf"},
    }


def test_artifact_lookup_and_download(store: dict, tmp_path: Path) -> None:
    reader, b = AuditReader(store["uri"]), store["b"]
    assert reader.has_artifact(b, "promote/decision.json") and not reader.has_artifact(b, "promote")
    assert not reader.has_artifact(b, SEGMENT_REPORT)
    assert reader.artifact_files(b, "promote") == [("promote/decision.json", len(json.dumps(DECISION)))]
    local = reader.download(b, "promote/decision.json", tmp_path / "x")
    assert local == tmp_path / "x" / "decision.json" and json.loads(local.read_text()) == DECISION
    assert reader.documents(b) == {"promote/decision.json": DECISION}


def test_versions_evaluated_in_one_run_are_paired_from_that_run(store: dict, tmp_path: Path) -> None:
    reader, b = AuditReader(store["uri"]), store["b"]
    v1, v2 = reader.resolve("models:/m/1"), reader.resolve("models:/m/2")
    champ, chall = reader.case_tables(v1, v2, tmp_path)
    assert champ == CaseTable(
        tmp_path / "a" / "champion_cases.parquet",
        b,
        EVALUATE_CHAMPION,
        "m v1 @previous as evaluated (champion) in the run of m v2 @champion, same held-out cases",
    )
    assert chall == CaseTable(
        tmp_path / "b" / "challenger_cases.parquet",
        b,
        EVALUATE_CHALLENGER,
        "m v2 @champion (challenger) in its own evaluation against m v1 @previous",
    )
    assert chall.uri == f"runs:/{b}/{EVALUATE_CHALLENGER}"
    assert pd.read_parquet(champ.path)["dice"].tolist() == [0.5, 0.75]
    assert pd.read_parquet(chall.path)["dice"].tolist() == [0.625, 1.0]
    # the other way round: the same two tables, sides swapped
    first, second = reader.case_tables(v2, v1, tmp_path / "swapped")
    assert (first.artifact, second.artifact) == (EVALUATE_CHALLENGER, EVALUATE_CHAMPION)
    assert (first.path, second.path) == (
        tmp_path / "swapped" / "a" / "challenger_cases.parquet",
        tmp_path / "swapped" / "b" / "champion_cases.parquet",
    )


def test_runs_are_paired_from_their_own_tables(store: dict, tmp_path: Path) -> None:
    reader, a, b = AuditReader(store["uri"]), store["a"], store["b"]
    ta, tb = reader.case_tables(reader.resolve(a), reader.resolve(b), tmp_path)
    assert (ta.run_id, ta.artifact, ta.why) == (
        a,
        SEGMENT_REPORT,
        f"run {a[:8]} (wf-aaaa): {SEGMENT_REPORT} of run {a[:8]}",
    )
    assert (tb.run_id, tb.artifact) == (b, EVALUATE_CHALLENGER)  # no segment report: its evaluation's table
    assert ta.path.read_bytes() == (store["root"] / "wf-aaaa" / SEGMENT_REPORT).read_bytes()
    with pytest.raises(
        AuditLookupError, match=r"has no per-case table: looked for segment/report.parquet and evaluate"
    ):
        reader.case_tables(reader.resolve(a), reader.resolve(store["c"]), tmp_path / "c")


def test_log_audit_writes_a_run_in_the_audit_experiment(store: dict, tmp_path: Path) -> None:
    folder = tmp_path / "report"
    _write(folder, "index.html", "<html></html>")
    _write(folder, "summary.json", {"delta": 0.25})
    reader = AuditReader(store["uri"])
    run_id = reader.log_audit(folder, "audit-a-vs-b", {"segops.audit.a": "m v1"}, {"delta_mean": 0.25})
    details = reader.run_details(run_id)
    assert (details.experiment, details.run_name, details.status) == ("segops-audit", "audit-a-vs-b", "FINISHED")
    assert details.tags == {"segops.audit": "true", "segops.audit.a": "m v1"}
    assert details.metrics == {"delta_mean": 0.25}
    assert details.artifacts == [("index.html", 13), ("summary.json", len(json.dumps({"delta": 0.25})))]


def test_evaluated_models_come_from_the_decision_or_else_the_comparison() -> None:
    champion, challenger = {"name": "m", "version": "1"}, {"name": "m", "version": "2"}
    nested = {"evaluate/comparison.json": {"evaluation": {"champion": champion, "challenger": challenger}}}
    assert _evaluated_models(nested) == {"champion": champion, "challenger": challenger}
    top = {"evaluate/comparison.json": {"champion": champion, "n_cases": 6}}
    assert _evaluated_models(top) == {"champion": champion}
    both = {"promote/decision.json": {"challenger": challenger, "champion": None}} | nested
    assert _evaluated_models(both) == {"challenger": challenger}
    assert _evaluated_models({}) == {} and _evaluated_models({"evaluate/comparison.json": ["x"]}) == {}


def test_names_model_matches_name_and_version_uri_or_reference_text() -> None:
    ref = AuditRef("models:/m@champion", "r", "m v2 @champion", "m-v2", "m", "2")
    assert _names_model({"name": "m", "version": 2}, ref) is True
    assert _names_model({"uri": "models:/m/2", "name": "other"}, ref) is True
    assert _names_model("models:/m/2", ref) is True and _names_model("models:/m@champion", ref) is True
    assert _names_model({"name": "m", "version": "1"}, ref) is False
    assert _names_model("models:/m/1", ref) is False and _names_model(None, ref) is False

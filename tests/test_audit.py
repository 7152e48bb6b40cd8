"""``segops audit`` against a real MLflow sqlite store written with segops' own RunTracker.

Two workflow runs segment the same ten image cases (real PNGs and mask PNGs on disk, Dice computed
from them); each registers a version of one model (a real tiny U-Net checkpoint). The second run
also records an evaluation of both versions and a promotion decision, and the aliases are moved
as the promote step moves them: ``champion`` → v2, ``previous`` → v1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from segops.cli import app
from segops.compare import TOLERANCE
from segops.data.records import path_case_id
from segops.metrics import dice_score, iou_score
from segops.outputs.reports import REPORT_COLUMNS
from tests.stores import sqlite_store

runner = CliRunner()
MODEL = "wf-unet"
N_CASES = 10
TRAIN_CASES = (8, 9)  # split "train" in both reports
VAL_CASES = (6,)  # split "val" (chose the checkpoint); every other case is held out ("test")
ONLY_IN_A = 7  # B's report lacks this case
NO_IMAGE = 1  # its image file is deleted after scoring: its overlay must be skipped with a note
NO_MASK_B = 0  # B's mask file is deleted: its overlay shows A's outline only
# B's centre shift per case (A's is always 1 pixel): cases 0, 1, 2 get much worse in B, case 3 better
SHIFT_B = {0: 12, 1: 10, 2: 8, 3: 0}


def _disk(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def _write_cases(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images, A and B masks on disk, and the two segment reports scored from them."""
    rng = np.random.default_rng(0)
    rows: dict[str, list[dict]] = {"a": [], "b": []}
    for i in range(N_CASES):
        rel = f"scan-{i:02d}.png"
        cy, cx, r = 24 + rng.integers(-4, 5), 24 + rng.integers(-4, 5), 9 + i % 3
        truth = _disk(48, cy, cx, r)
        image = np.clip(60 + 140 * truth + rng.normal(0, 12, truth.shape), 0, 255).astype(np.uint8)
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(image).save(root / "images" / rel)
        for side, shift in (("a", 1), ("b", SHIFT_B.get(i, 2))):
            if side == "b" and i == ONLY_IN_A:
                continue
            pred = _disk(48, cy + shift, cx, r)
            mask_path = root / f"masks-{side}" / rel
            mask_path.parent.mkdir(exist_ok=True)
            Image.fromarray(pred * 255).save(mask_path)
            rows[side].append(
                {
                    "case_id": path_case_id(rel),
                    "split": "train" if i in TRAIN_CASES else "val" if i in VAL_CASES else "test",
                    "source_uri": str(root / "images" / rel),
                    "rel_path": rel,
                    "frame": 0,
                    "modality": "XC",
                    "dice": dice_score(pred, truth),
                    "iou": iou_score(pred, truth),
                    "fg_fraction": float(pred.mean()),
                    "label_fg_fraction": float(truth.mean()),
                    "mask_path": str(mask_path),
                }
            )
    return tuple(pd.DataFrame(rows[s], columns=list(REPORT_COLUMNS)) for s in ("a", "b"))


def _evaluate_table(report: pd.DataFrame) -> pd.DataFrame:
    """The evaluate step's per-case table: held-out cases of the frozen set (first 6), all split "test"."""
    cases = report[report["split"] == "test"].head(6)
    table = cases[["case_id", "dice", "iou", "modality", "rel_path", "source_uri", "mask_path", "split"]].copy()
    table["dice_per_class"] = [json.dumps({"1": d}) for d in table["dice"]]
    return table


def _log_run(tracker, root: Path, name: str, report: pd.DataFrame, extra: dict[str, object]) -> str:
    from segops.outputs.reports import write_table

    run_id = tracker.start(
        name,
        {
            "segops.workflow": "wf",
            "segops.run_id": name,
            "segops.spec_hash": "ab" * 32,
            "segops.git_commit": "0123abcd",
            "pkg.segops": "0.1.0",
        },
    )
    tracker.log_params({"workflow.name": "wf", "model.arch": "unet", "train.cases": 12, "val.cases": 8})
    meta = report[["case_id", "rel_path", "modality"]]
    tracker.log_dataset("wf-images", str(root / "images"), meta, name[-1] * 16, "training")
    held, val = report[report["split"] == "test"], report[report["split"] == "val"]
    tracker.log_metrics(
        {
            "best_val_dice": float(val["dice"].mean()) + 0.01,
            "segment_heldout_dice_mean": float(held["dice"].mean()),
            "segment_val_dice_mean": float(val["dice"].mean()),
            "segment_outputs": 10.0,
        }
    )
    out = root / name
    out.mkdir()
    for path in write_table(report, out / "report"):
        tracker.log_artifact(path, "segment")
    split = {"train": ["g8", "g9"], "val": ["g6"], "test": [f"g{i}" for i in (0, 1, 2, 3, 4, 5, 7)]}
    (out / "split.json").write_text(json.dumps(split))
    tracker.log_artifact(out / "split.json", "train")
    (out / "workflow.yaml").write_text(
        "name: wf\nsteps:\n  - step: ingest\n    source: {kind: images, path: %s}\n  - step: segment\n    model: null\n"
        % (root / "images")
    )
    tracker.log_artifact(out / "workflow.yaml", "workflow")
    for artifact, content in extra.items():
        path = out / Path(artifact).name
        if isinstance(content, pd.DataFrame):
            content.to_parquet(path, index=False)
        else:
            path.write_text(json.dumps(content))
        tracker.log_artifact(path, str(Path(artifact).parent))
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from segops.config.schema import PreprocessSpec, TrackingSpec, UNetSpec
    from segops.engine.checkpoint import save_checkpoint
    from segops.models import build_model
    from segops.tracking import RunTracker

    root = tmp_path_factory.mktemp("audit")
    report_a, report_b = _write_cases(root)
    (root / "masks-b" / f"scan-{NO_MASK_B:02d}.png").unlink()
    (root / "images" / f"scan-{NO_IMAGE:02d}.png").unlink()
    spec = UNetSpec(arch="unet", channels=(4, 8), strides=(2,), num_res_units=0)
    checkpoint = save_checkpoint(root / "checkpoint", build_model(spec), spec, PreprocessSpec())
    example = np.random.default_rng(1).normal(size=(1, 1, 16, 16)).astype(np.float32)
    uri = sqlite_store(root)

    tracker = RunTracker(TrackingSpec(uri=uri, experiment="wf"))
    run_a = _log_run(tracker, root, "wf-aaaaaaaaaaaa", report_a, {})
    tracker.log_model(checkpoint, MODEL, example)
    tracker.end()
    # as the evaluate and promote steps write them
    champion = {"ref": f"models:/{MODEL}@champion", "name": MODEL, "version": "1", "uri": f"models:/{MODEL}/1"}
    challenger = {"ref": str(root / "checkpoint"), "name": MODEL, "version": "2", "uri": f"models:/{MODEL}/2"}
    checks = [
        {"name": "mean_dice_gain", "value": 0.01, "threshold": 0.0, "passed": True, "rule": "gain >= 0.000 <b>&</b>"},
        {"name": "case_regression", "value": 0.0, "threshold": 0.1, "passed": True, "rule": "cases losing > 0.05"},
    ]
    decision = {
        "passed": True,
        "reasons": [],
        "checks": checks,
        "gate": {"min_mean_dice_gain": 0.0},
        "challenger": challenger,
        "champion": champion,
        "champion_before": "1",
        "champion_after": "2",
    }
    comparison = {
        "evaluation": {"champion": champion, "challenger": challenger, "held_out": str(root / "images")},
        "n_cases": 6,
        "dice_mean_diff": 0.01,
        "classes": [{"class": 1, "delta": 0.01}],
    }
    extra = {
        "evaluate/champion_cases.parquet": _evaluate_table(report_a),
        "evaluate/challenger_cases.parquet": _evaluate_table(report_b),
        "evaluate/comparison.json": comparison,
        "promote/decision.json": decision,
    }
    tracker = RunTracker(TrackingSpec(uri=uri, experiment="wf"))
    run_b = _log_run(tracker, root, "wf-bbbbbbbbbbbb", report_b, extra)
    tracker.log_dataset("frozen-heldout", str(root / "images"), report_b[["case_id"]], "f" * 16, "evaluation")
    tracker.log_model(checkpoint, MODEL, example, {"segops.parent_model": f"models:/{MODEL}/1"})
    tracker.set_version_tags(
        MODEL, "2", {"segops.promotion": "promoted", "segops.replaced_version": "1", "segops.promotion_run": run_b}
    )
    tracker.set_alias(MODEL, "champion", "2")
    tracker.set_alias(MODEL, "previous", "1")
    tracker.end()
    return {"uri": uri, "root": root, "run_a": run_a, "run_b": run_b, "report_a": report_a, "report_b": report_b}


def _audit(*args: str) -> object:
    result = runner.invoke(app, ["audit", *args])
    return result


def _png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 5000, path
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 300 and img.height >= 300, (path, img.size)
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10, f"{path} is (nearly) blank"
    return pixels


def test_models_lists_versions_with_aliases_promotion_and_metrics(store: dict) -> None:
    from segops.tracking import AuditReader

    versions = AuditReader(store["uri"]).model_versions()
    assert [(v.name, v.version, v.aliases) for v in versions] == [
        (MODEL, "2", ("champion",)),
        (MODEL, "1", ("previous",)),
    ]
    assert versions[0].run_id == store["run_b"] and versions[0].tags["segops.promotion"] == "promoted"
    assert versions[0].metrics["segment_heldout_dice_mean"] == pytest.approx(
        store["report_b"].query("split == 'test'")["dice"].mean()
    )
    result = _audit("models", "--tracking-uri", store["uri"])
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.output.splitlines() if MODEL in line]  # rich: "│" between cells
    cells = [[c.strip() for c in row] for row in rows]
    assert [c[2:6:3] for c in cells] == [["2", "promoted, replaced v1"], ["1", "-"]], result.output
    assert [c[3] for c in cells] == ["champion", "previous"] and "wf-bbbbbbbbbbbb" in result.output
    assert f"models:/{MODEL}/1" in result.output  # v2's warm-start parent
    result = _audit("models", "nope", "--tracking-uri", store["uri"])
    assert result.exit_code == 2 and "no registered model 'nope'" in result.output and MODEL in result.output


def test_compare_two_runs_writes_report_plots_overlays_and_logs_it(store: dict, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = _audit(
        "compare", store["run_a"], store["run_b"], "--tracking-uri", store["uri"], "--worst", "3", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'index.html'}" in result.output and "per-case Dice" in result.output

    # the numbers, recomputed from the two reports' held-out rows
    a = store["report_a"].query("split == 'test'")
    b = store["report_b"].query("split == 'test'")
    paired = a.merge(b, on="case_id", suffixes=("_a", "_b"))
    paired["delta"] = paired["dice_b"] - paired["dice_a"]
    summary = json.loads((out / "summary.json").read_text())
    stats = summary["paired"]
    assert (stats["cases_a"], stats["cases_b"], stats["cases"], stats["only_in_a"], stats["only_in_b"]) == (
        len(a),
        len(b),
        len(paired),
        1,
        0,
    )
    assert stats["dice_mean_a"] == pytest.approx(paired["dice_a"].mean())
    assert stats["dice_mean_b"] == pytest.approx(paired["dice_b"].mean())
    assert stats["delta_mean"] == pytest.approx(paired["delta"].mean())
    assert stats["worse_in_b"] == int((paired["delta"] < -TOLERANCE).sum())
    assert summary["a"]["table"] == f"runs:/{store['run_a']}/segment/report.parquet"
    assert "held-out rows (split = test): 7 of 10" in summary["a"]["rows"]

    worst = summary["worst"]
    expected = paired.sort_values("delta")["case_id"].head(3).tolist()
    assert [w["case_id"] for w in worst] == expected == [path_case_id(f"scan-{i:02d}.png") for i in (0, 1, 2)]
    assert worst[0]["overlay"] and "B mask not on this machine" in worst[0]["note"]  # drawn with A's outline only
    assert worst[1]["overlay"] is None and worst[1]["note"].startswith("skipped: image")  # image deleted
    assert worst[2]["overlay"] and worst[2]["note"] == ""

    html = (out / "index.html").read_text()
    for name in ("scatter.png", "histogram.png", worst[0]["overlay"], worst[2]["overlay"]):
        assert f'src="{name}"' in html
        _png(out / name)
    assert len(list((out / "overlays").glob("*.png"))) == 2
    assert sorted(summary["files"]) == sorted(
        ["index.html", "summary.json", "scatter.png", "histogram.png", worst[0]["overlay"], worst[2]["overlay"]]
    )
    assert "wf-images @" in html  # what each side was trained on

    client = MlflowClient(store["uri"])
    experiment = client.get_experiment_by_name("segops-audit")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`segops.audit.a` = '{store['run_a']}'")
    assert len(runs) == 1 and runs[0].info.run_name.startswith("audit-compare-run-")
    logged = {f.path for f in client.list_artifacts(runs[0].info.run_id)}
    assert {"index.html", "summary.json", "scatter.png", "histogram.png", "overlays"} <= logged
    assert runs[0].data.metrics["paired_cases"] == len(paired)


def test_compare_model_versions_pairs_the_evaluation_and_shows_the_decision(store: dict, tmp_path: Path) -> None:
    out = tmp_path / "models"
    client = MlflowClient(store["uri"])
    before = client.get_experiment_by_name("segops-audit")
    result = _audit(
        "compare",
        f"models:/{MODEL}@previous",
        f"models:/{MODEL}@champion",
        "--tracking-uri",
        store["uri"],
        "--out",
        str(out),
        "--no-log",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    # v1 was scored as champion in v2's own run: both sides come from that evaluation, on the same frozen cases
    assert summary["a"]["table"] == f"runs:/{store['run_b']}/evaluate/champion_cases.parquet"
    assert summary["b"]["table"] == f"runs:/{store['run_b']}/evaluate/challenger_cases.parquet"
    assert summary["a"]["model"] == {"name": MODEL, "version": "1"} and summary["paired"]["cases"] == 6
    assert summary["decisions"]["B"]["passed"] is True
    assert "promotion decision" in result.output and "mean_dice_gain" in result.output
    html = (out / "index.html").read_text()
    assert "gain &gt;= 0.000 &lt;b&gt;&amp;&lt;/b&gt;" in html and "<b>&" not in html  # values are escaped
    after = client.get_experiment_by_name("segops-audit")
    if before is not None:
        assert len(client.search_runs([after.experiment_id])) == len(client.search_runs([before.experiment_id]))


def test_audit_run_shows_data_models_and_outputs(store: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _audit("run", "wf-bbbbbbbbbbbb", "--tracking-uri", store["uri"], "--out", str(out), "--no-log")
    assert result.exit_code == 0, result.output  # a segops run id resolves to its MLflow run
    text = result.output
    for expected in (
        "wf-images",
        "frozen-heldout",
        "evaluation",
        "training",
        f"models:/{MODEL}/2",
        "champion",
        f"models:/{MODEL}/1",
        "segment",
        "evaluate",
        "promote",
        "segment_heldout_dice_mean",
        "segment_val_dice_mean",
        str(store["root"] / "images"),
        "val groups",
        "test groups",
        "test: held out from training and checkpoint choice",
    ):
        assert expected in text, expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == store["run_b"]
    assert {(d["name"], d["context"]) for d in summary["datasets"]} == {
        ("wf-images", "training"),
        ("frozen-heldout", "evaluation"),
    }
    assert [(m["version"], m["aliases"]) for m in summary["models"]] == [("2", ["champion"])]
    assert {k: v["cases"] for k, v in summary["cases"].items()} == {"test": 6, "val": 1, "train": 2}
    assert list(summary["cases"]) == ["test", "val", "train"]  # held-out first
    assert summary["cases"]["test"]["dice_mean"] == pytest.approx(
        store["report_b"].query("split == 'test'")["dice"].mean()
    )
    _png(out / "histogram.png")
    assert 'src="histogram.png"' in (out / "index.html").read_text()


def test_unknown_references_exit_2_with_a_clear_message(store: dict, tmp_path: Path) -> None:
    result = _audit("compare", "0" * 32, store["run_b"], "--tracking-uri", store["uri"], "--out", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert f"no MLflow run '{'0' * 32}'" in result.output and "models:/<name>@<alias>" in result.output
    result = _audit("run", f"models:/{MODEL}@nope", "--tracking-uri", store["uri"], "--no-log")
    assert result.exit_code == 2 and f"no model version 'models:/{MODEL}@nope'" in result.output
    result = _audit("models", "--tracking-uri", f"sqlite:///{tmp_path}/typo.db")
    assert result.exit_code == 2 and "no MLflow database" in result.output
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "x").exists()


def test_tables_without_common_cases_are_refused() -> None:
    from segops.audit import AuditError, Side, write_compare_report

    run = None  # never reached: the refusal comes first
    a = Side("A", "a", "a", run, pd.DataFrame({"case_id": ["1"], "dice": [0.5]}), "runs:/a/t", "")
    b = Side("B", "b", "b", run, pd.DataFrame({"case_id": ["2"], "dice": [0.5]}), "runs:/b/t", "")
    with pytest.raises(AuditError, match="no case is in both tables"):
        write_compare_report(Path("unused"), a, b)


def test_the_evaluated_models_are_read_from_the_decision_or_the_comparison() -> None:
    from segops.tracking.reader import AuditRef, _evaluated_models, _names_model

    v1 = AuditRef(f"models:/{MODEL}@previous", "r" * 32, f"{MODEL} v1", f"{MODEL}-v1", MODEL, "1")
    comparison_only = {"evaluate/comparison.json": {"evaluation": {"champion": {"name": MODEL, "version": "1"}}}}
    assert _names_model(_evaluated_models(comparison_only)["champion"], v1)
    decision = {"promote/decision.json": {"champion": {"uri": f"models:/{MODEL}/1"}, "challenger": None}}
    assert _evaluated_models(decision | comparison_only) == {"champion": {"uri": f"models:/{MODEL}/1"}}
    assert _names_model(f"models:/{MODEL}/1", v1) and not _names_model({"name": MODEL, "version": "2"}, v1)
    assert _evaluated_models({"promote/decision.json": ["not", "a", "dict"]}) == {}


def test_pairing_merges_image_columns_and_counts_changes_with_the_gate_tolerance() -> None:
    from segops.audit import pair_cases, paired_stats

    a = pd.DataFrame(
        {
            "case_id": ["p", "q", "r", "s", "t"],
            "dice": [0.5, 0.5, 0.5, 0.5, 0.9],
            "source_uri": ["/p.png", None, "/r.png", "/s.png", "/t.png"],
            "mask_path": ["a/p.png", "a/q.png", "a/r.png", "a/s.png", "a/t.png"],
        }
    )
    b = pd.DataFrame(
        {
            "case_id": ["q", "p", "r", "s", "u"],
            # p: float noise, q: a one-voxel change on a large volume, r: better, s: worse
            "dice": [0.5 - 1e-7, 0.5 + 1e-12, 0.75, 0.25, 0.1],
            "source_uri": ["/q.png", "/other.png", "/r.png", "/s.png", "/u.png"],
            "mask_path": ["b/q.png", "b/p.png", "b/r.png", "b/s.png", "b/u.png"],
        }
    )
    paired = pair_cases(a, b)
    assert list(paired.columns) == ["case_id", "dice_a", "mask_path_a", "dice_b", "mask_path_b", "source_uri", "delta"]
    assert list(paired["case_id"]) == ["s", "q", "p", "r"]  # largest drop first
    assert list(paired["source_uri"]) == ["/s.png", "/q.png", "/p.png", "/r.png"]  # A's, else B's
    assert list(paired["mask_path_b"]) == ["b/s.png", "b/q.png", "b/p.png", "b/r.png"]
    stats = paired_stats(a, b, paired)
    assert (stats["cases"], stats["only_in_a"], stats["only_in_b"]) == (4, 1, 1)
    assert (stats["better_in_b"], stats["worse_in_b"], stats["unchanged"]) == (1, 2, 1)


def test_load_cases_keeps_test_rows_else_says_it_fell_back_to_validation_rows(tmp_path: Path) -> None:
    from segops.audit import load_cases

    def table(splits: list[str]) -> Path:
        path = tmp_path / f"{'-'.join(splits)}.parquet"
        frame = pd.DataFrame({"case_id": [f"c{i}" for i in range(len(splits))], "dice": 0.5, "split": splits})
        frame.to_parquet(path, index=False)
        return path

    cases, note = load_cases(table(["train", "val", "test", "test", "-"]))
    assert list(cases["case_id"]) == ["c2", "c3"] and note == "held-out rows (split = test): 2 of 5"
    cases, note = load_cases(table(["train", "val", "val"]))  # no test set, or a report from before the test split
    assert list(cases["case_id"]) == ["c1", "c2"]
    assert note == "no test rows: validation rows (split = val, they chose the checkpoint): 2 of 3"
    cases, note = load_cases(table(["train", "-"]))
    assert len(cases) == 2 and note == "all 2 rows"
    cases, note = load_cases(table(["train", "val", "test", "test", "-"]), heldout_only=False)
    assert len(cases) == 5 and note == "all 5 rows"

"""``segops select`` on a finished run made by hand (an images-folder segment step, a real tiny U-Net
checkpoint, no Ray): the picks, the package's files, and a retrain workflow fed by the package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from segops.config import validate_workflow_text
from segops.config.schema import MaskPngLabels, PreprocessSpec, UNetSpec, WindowIntensity
from segops.data.labels import mask_file_counts
from segops.data.mask_files import read_mask_png
from segops.data.records import path_case_id
from segops.engine.checkpoint import save_checkpoint
from segops.errors import StepError
from segops.models import build_model
from segops.outputs.case_outputs import checkpoint_digest
from segops.outputs.manifest import RunManifest, StepState
from segops.steps.results import SegmentResult
from segops.steps.select import candidate_cases, find_run, select_for_labelling

REPO = Path(__file__).resolve().parents[2]
SPEC = UNetSpec(arch="unet", channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(32, 32))
N_DISTINCT, N_COPIES = 8, 5


def _texture(rng: np.random.Generator, shape=(32, 32)) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    slope = rng.uniform(-3, 3, 2)
    base = rng.uniform(40, 200) + slope[0] * yy + slope[1] * xx + rng.normal(0, rng.uniform(2, 30), shape)
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run folder as a workflow leaves it: 8 distinct images plus 5 copies of image 0 (the riskiest),
    a mask per image, image 7 labelled; ``outputs.parquet``, ``manifest.json``, ``workflow.yaml``."""
    root = tmp_path_factory.mktemp("select")
    rng = np.random.default_rng(0)
    images, masks, run_dir = root / "images", root / "run" / "masks", root / "run"
    pixels = [_texture(rng) for _ in range(N_DISTINCT)]
    names = [f"img-{i:02d}.png" for i in range(N_DISTINCT)] + [f"sub/copy-{k}.png" for k in range(N_COPIES)]
    pixels += [pixels[0]] * N_COPIES
    rows = []
    for i, (name, image) in enumerate(zip(names, pixels)):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(images / name)
        mask = (image > np.median(image)).astype(np.uint8) * 255
        mask_path = masks / Path(name).with_suffix(".png")
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(mask_path)
        copy = i == 0 or i >= N_DISTINCT
        rows.append(
            {
                "case_id": path_case_id(name),
                "source_uri": str(images / name),
                "rel_path": name,
                "frame": 0,
                "has_label": i == 7,
                "mask_path": str(mask_path),
                "coco_path": "",
                "risk": 0.9 if copy else 0.1 + 0.05 * i,
                "risk_reasons": "uncertain boundary" if copy else "",
                "embedding_distance": 1.0,
            }
        )
    outputs = run_dir / "outputs.parquet"
    pd.DataFrame(rows).to_parquet(outputs, index=False)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(root / "checkpoint", build_model(SPEC), SPEC, PRE)
    workflow = {
        "name": "select-test",
        "output_dir": str(root),
        "steps": [{"step": "segment", "model": str(checkpoint), "source": {"kind": "images", "path": str(images)}}],
    }
    (run_dir / "workflow.yaml").write_text(yaml.safe_dump(workflow))
    result = SegmentResult(
        outputs, run_dir / "report.parquet", checkpoint_digest(checkpoint), run_dir, str(run_dir), {}
    )
    manifest = RunManifest("select-test-1", "select-test", "0" * 64, str(run_dir), state="done")
    manifest.steps = [StepState(0, "segment", "done", outputs=result.to_manifest())]
    manifest.save()
    return {"root": root, "run": run_dir, "rows": pd.DataFrame(rows), "images": images}


def test_picks_distinct_unlabelled_cases_and_each_image_at_most_once(finished_run: dict) -> None:
    package = select_for_labelling(finished_run["run"], 6, finished_run["root"] / "pkg-6")
    manifest = package.manifest
    rows = finished_run["rows"]
    assert package.candidates == N_DISTINCT + N_COPIES - 1  # img-07 is labelled
    assert manifest["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert manifest["case_id"].is_unique
    copies = set(rows["case_id"][[0, *range(N_DISTINCT, N_DISTINCT + N_COPIES)]])
    assert len(copies & set(manifest["case_id"])) == 1  # six identical images: one pick
    first = min(copies)  # the riskiest, ties to the smaller case id
    assert manifest["case_id"].iloc[0] == first
    assert path_case_id("img-07.png") not in set(manifest["case_id"])
    assert (manifest["risk_reasons"].iloc[0]) == "uncertain boundary"


def test_the_package_holds_images_pre_annotations_and_an_ingest_step_that_pairs_them(finished_run: dict) -> None:
    out = finished_run["root"] / "pkg-4"
    package = select_for_labelling(finished_run["run"], 4, out)
    on_disk = pd.read_csv(out / "manifest.csv")
    assert on_disk["case_id"].tolist() == package.manifest["case_id"].tolist()
    rows = finished_run["rows"].set_index("case_id")
    for row in on_disk.to_dict("records"):
        source = rows.loc[row["case_id"]]
        assert (out / row["image"]).read_bytes() == Path(source["source_uri"]).read_bytes()
        pre = read_mask_png(out / row["pre_annotation"], (32, 32))
        np.testing.assert_array_equal(pre, read_mask_png(source["mask_path"], (32, 32)))
        assert set(np.unique(np.asarray(Image.open(out / row["pre_annotation"])))) <= {0, 255}
        assert row["label"] == "labels/" + str(Path(row["rel_path"]).with_suffix(".png"))
    assert not any((out / "labels").iterdir())
    assert "labels/" in (out / "README.txt").read_text()
    # the labeller corrects the pre-annotations into labels/
    for row in on_disk.to_dict("records"):
        (out / row["label"]).parent.mkdir(parents=True, exist_ok=True)
        (out / row["label"]).write_bytes((out / row["pre_annotation"]).read_bytes())
    ingest = yaml.safe_load((out / "ingest-step.yaml").read_text())[0]
    assert ingest["source"] == {
        "kind": "images",
        "path": str((out / "images").resolve()),
        "labels": {"kind": "mask-png", "path": str((out / "labels").resolve())},
    }
    labels = MaskPngLabels(kind="mask-png", path=Path(ingest["source"]["labels"]["path"]))
    found = [mask_file_counts(labels, rel) for rel in on_disk["rel_path"]]
    assert all(f is not None and set(f[1]) <= {0, 1} for f in found)  # ingest pairs every image with its label
    # workflows/retrain.yaml with the package as its new ingest (and as a stand-in held-out set) validates
    retrain = yaml.safe_load((REPO / "workflows" / "retrain.yaml").read_text())
    retrain["steps"][0] = ingest
    retrain["steps"][2]["source"] = ingest["source"]
    spec = validate_workflow_text(yaml.safe_dump(retrain), "retrain-from-package")
    assert spec.steps[0].source.labels.path == out / "labels"


def test_include_labelled_makes_labelled_cases_candidates(finished_run: dict) -> None:
    outputs = finished_run["rows"]
    assert len(candidate_cases(outputs)) == len(outputs) - 1
    assert len(candidate_cases(outputs, include_labelled=True)) == len(outputs)
    pool = candidate_cases(outputs, pool=3)
    assert sorted(pool["risk"], reverse=True)[:3] == [0.9, 0.9, 0.9]


def test_a_run_without_risk_gives_candidates_of_unknown_risk(finished_run: dict) -> None:
    outputs = finished_run["rows"].drop(columns=["risk", "risk_reasons"])
    rows = candidate_cases(outputs, pool=3)
    assert len(rows) == 3 and rows["risk"].isna().all() and (rows["risk_reasons"] == "").all()
    assert rows["case_id"].tolist() == sorted(candidate_cases(outputs)["case_id"])[:3]


def test_budget_over_the_candidates_picks_every_one_and_the_cli_prints_them(finished_run: dict) -> None:
    from segops.cli import app

    out = finished_run["root"] / "pkg-all"
    result = CliRunner().invoke(app, ["select", str(finished_run["run"]), "--budget", "50", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == N_DISTINCT + N_COPIES - 1
    assert f"{len(manifest)} of {len(manifest)} candidate case(s)" in result.output
    assert str(out) in result.output.replace("\n", "")


def test_an_unknown_run_says_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="no manifest.json there nor in"):
        find_run(tmp_path / "nope")
    from segops.cli import app

    result = CliRunner().invoke(app, ["select", str(tmp_path / "nope"), "--budget", "3"])
    assert result.exit_code == 2
    assert "select failed" in result.output


def test_instance_pre_annotations_are_one_coco_file_that_reads_back_as_the_detections(finished_run: dict) -> None:
    from pycocotools import mask as mask_utils

    from segops.data.coco import coco_instances, index_coco
    from segops.steps.select import read_run, write_package

    run = read_run(finished_run["run"], finished_run["root"] / "model")
    picks = finished_run["rows"].iloc[[1, 2]].copy()
    objects = {}
    for i, row in enumerate(picks.to_dict("records")):
        detection = np.zeros((32, 32), np.uint8)
        detection[4 + i : 12 + i, 5:15] = 1
        rle = mask_utils.encode(np.asfortranarray(detection))
        rle["counts"] = rle["counts"].decode()
        doc = {"case_id": row["case_id"], "rel_path": row["rel_path"], "frame": 0, "height": 32, "width": 32}
        doc["results"] = [{"category_id": 1, "segmentation": rle, "score": 0.8, "bbox": [5, 4 + i, 10, 8]}]
        path = finished_run["root"] / f"coco-{i}.json"
        path.write_text(json.dumps(doc))
        picks.loc[picks.index[i], "coco_path"] = str(path)
        objects[row["rel_path"]] = detection
    out = finished_run["root"] / "pkg-instances"
    write_package(run, picks.assign(selection_distance=[np.inf, 1.0]), out, 2)
    entries, classes = index_coco(out / "pre-annotations" / "coco.json", None)
    for rel, detection in objects.items():
        instances = coco_instances(entries[rel], (32, 32), classes)
        np.testing.assert_array_equal(instances > 0, detection.astype(bool))
    ingest = yaml.safe_load((out / "ingest-step.yaml").read_text())[0]
    assert ingest["source"]["labels"] == {
        "kind": "coco",
        "path": str((out / "labels" / "coco.json").resolve()),
        "instances": True,
    }

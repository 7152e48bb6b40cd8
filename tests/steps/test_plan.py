"""``segops plan``: the CLI writes a workflow that loads unedited and its fingerprint; the planned
workflow runs, and its train step stores the fingerprint with the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from segops.cli import app
from segops.config.load import load_workflow
from segops.data.fingerprint import Fingerprint

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

runner = CliRunner()


def test_plan_writes_a_loadable_workflow_and_the_fingerprint(tmp_path: Path) -> None:
    from segops.synth import make_defect_archive

    make_defect_archive(tmp_path / "parts", count=12, seed=2, size=64)
    out = tmp_path / "plan" / "parts.yaml"
    result = runner.invoke(app, ["plan", str(tmp_path / "parts"), "-o", str(out), "--budget-minutes", "3"])
    assert result.exit_code == 0, result.output
    spec = load_workflow(out)  # unedited
    ingest, train, segment = spec.steps
    assert ingest.source.exclude == ("README.png", "dataset.jpg")
    assert "  exclude: 2 unpaired non-data, mask-named or sibling file(s)" in result.output  # said, not only written
    assert ingest.source.labels.threshold == 128 and ingest.source.labels.pattern == "{rel_stem}.png"
    fp = Fingerprint.from_json((tmp_path / "plan" / "fingerprint.json").read_text())
    assert fp.n_images == 12 and train.model.classes == 2
    assert train.preprocess.patch_size[0] % train.model.size_divisor == 0
    assert train.foreground_oversample == 0.66  # most parts are defect-free
    text = out.read_text()
    assert f"# median image {fp.median_shape[0]}x{fp.median_shape[1]} px" in text
    assert "anti-aliased" in text and segment.outputs == ("png",)


def test_plan_sizes_training_by_the_labelled_images(tmp_path: Path) -> None:
    """A study folder's unlabelled series (here larger RGB photos, outnumbering the labelled gray
    slices) do not set the planned channels, patch or intensities."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / f"slice{i}.png")
        mask = np.zeros((64, 64), np.uint8)
        mask[10:30, 10:30] = 255
        Image.fromarray(mask).save(tmp_path / f"slice{i}_mask.png")
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(tmp_path / f"photo{i}.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "slice6.png")
    Image.fromarray(mask[:32]).save(tmp_path / "slice6_mask.png")  # exported at another size: left out, by name
    out = tmp_path / "plan.yaml"
    result = runner.invoke(app, ["plan", str(tmp_path), "-o", str(out), "--budget-minutes", "2"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "7/17 images labelled); fingerprint of the 6 labelled" in said and "1 file(s) left out" in said
    assert "slice6.png: mask" in said and "is 64x32 but its image is 64x64" in said
    fp = Fingerprint.from_json((tmp_path / "fingerprint.json").read_text())
    assert (fp.n_images, fp.n_labelled, fp.channels, fp.median_shape) == (6, 6, {1: 6}, (64, 64))
    assert fp.left_out == 1 and list(fp.left_out_examples) == ["slice6.png"]
    _, train, _ = load_workflow(out).steps
    assert train.model.in_channels == 1 and train.preprocess.patch_size == (64, 64)


def test_plan_failure_names_the_option_to_give(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"")
    result = runner.invoke(app, ["plan", str(tmp_path / "imgs"), "-o", str(tmp_path / "w.yaml")])
    assert result.exit_code == 1 and "give --labels FOLDER and --pattern" in result.output


def test_plan_maps_the_foreground_value_of_membrane_labels(tmp_path: Path, monkeypatch) -> None:
    """ISBI-style labels (0 = membrane = foreground); the planned run itself is exercised by
    tests/test_workflow_defects.py, which also checks the fingerprint stored with the model."""
    from segops.synth import make_membrane_archive

    make_membrane_archive(tmp_path / "em", count=6, size=64, seed=1)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "em.yaml"
    args = ["plan", "em", "-o", str(out), "--foreground-value", "0", "--budget-minutes", "0.5", "--name", "em-plan"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    spec = load_workflow(out)
    assert spec.steps[0].source.labels.values == {0: 1, 255: 0} and spec.steps[1].epochs == 1
    stored = Fingerprint.from_json((tmp_path / "fingerprint.json").read_text())
    assert stored.n_labelled == 6 and stored.label_census[1][0] == 6  # membranes in every slice


def test_plan_for_instances_from_a_coco_file(tmp_path: Path, monkeypatch) -> None:
    from segops.steps.plan import cached_maskrcnn_weights
    from segops.synth import make_instance_archive

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: from scratch
    make_instance_archive(tmp_path / "cells", count=6, size=64, seed=3)
    out = tmp_path / "cells.yaml"
    result = runner.invoke(app, ["plan", str(tmp_path / "cells"), "-o", str(out), "--budget-minutes", "2"])
    assert result.exit_code == 0, result.output
    _, train, segment = load_workflow(out).steps
    assert train.model.arch == "maskrcnn" and train.model.classes == 3 and train.model.min_size == 128
    assert train.model.anchor_sizes[0] in (8, 16) and segment.segments == {1: "cell", 2: "rod"}  # COCO's names
    assert train.model.backbone == "resnet18_fpn" and train.model.weights is None
    assert "# 5th-percentile object" in out.read_text() and "from scratch: no published weights in" in out.read_text()
    # the plan looks where torchvision caches its files (the file's presence is the rule; loading
    # published weights is tested with the weights' own tests)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet18-f37072fd.pth").touch()
    assert cached_maskrcnn_weights() == ("imagenet", str(checkpoints))
    (checkpoints / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth").touch()
    assert cached_maskrcnn_weights() == ("coco", str(checkpoints))


def test_plan_of_split_folders_writes_the_include_glob(tmp_path: Path) -> None:
    """train/images + train/masks, valid/…: the written source reads the images folders only."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    for split, n in (("train", 4), ("valid", 2)):
        for folder in ("images", "masks"):
            (tmp_path / "ds" / split / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
                tmp_path / "ds" / split / "images" / f"{i}.png"
            )
            Image.fromarray(mask).save(tmp_path / "ds" / split / "masks" / f"{i}.png")
    out = tmp_path / "plan.yaml"
    result = runner.invoke(app, ["plan", str(tmp_path / "ds"), "-o", str(out), "--budget-minutes", "1"])
    assert result.exit_code == 0, result.output
    source = load_workflow(out).steps[0].source
    assert source.include == ("*/images/**",) and source.labels.pattern == "{parent_dir}/masks/{stem}.png"
    assert Fingerprint.from_json((tmp_path / "fingerprint.json").read_text()).n_images == 6

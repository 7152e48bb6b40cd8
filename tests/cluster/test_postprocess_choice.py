"""The postprocessing a train step stores: decided on validation alone, or with the training cases
where validation holds a class in too few cases (real Ray read of a written dataset, a real
checkpoint, real MLflow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.cluster.datasets import read_source, write_dataset
from segops.cluster.postprocess_choice import rare_classes, store_postprocessing, training_sample
from segops.config.schema import ImageSource, MaskPngLabels
from segops.data.records import dataset_meta
from segops.engine.postprocess import MIN_CASES

from ..steps.contexts import make_context, tiny_checkpoint

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def _square(defect: bool) -> np.ndarray:
    mask = np.zeros((32, 32), np.uint8)
    if defect:
        mask[10:18, 12:20] = 1
    return mask


def _dataset(root: Path, defective: int, clean: int) -> tuple[Path, list[str]]:
    """An ingested folder of 32 px parts, ``defective`` of them with a square defect; its groups."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(defective + clean):
        mask = _square(i < defective)
        Image.fromarray((60 + 100 * mask).astype(np.uint8)).save(root / "images" / f"part{i:02d}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"part{i:02d}.png")
    source = ImageSource(
        kind="images", path=root / "images", labels=MaskPngLabels(kind="mask-png", path=root / "masks")
    )
    write_dataset(read_source(source), root / "dataset")
    return root / "dataset", sorted(set(dataset_meta(root / "dataset")["group_id"]))


def test_a_class_in_too_few_validation_cases_is_decided_with_the_training_cases(tmp_path: Path) -> None:
    val_labels = [_square(True)] * 2 + [_square(False)] * 6  # 2 defective validation cases: fewer than 5
    val_maps = [np.zeros((32, 32), np.uint8)] * 8
    assert rare_classes(val_labels, 2) == [1] and rare_classes([_square(True)] * MIN_CASES, 2) == []
    dataset, groups = _dataset(tmp_path / "train", defective=6, clean=6)
    checkpoint = tiny_checkpoint(tmp_path / "model", seed=0)
    ctx = make_context(tmp_path)
    chosen = store_postprocessing(
        checkpoint, (val_maps, val_labels), "validation", 2, ctx.tracker, None, (dataset, groups, 0)
    )
    assert (chosen.source, chosen.cases) == ("validation+training", 8 + 12)
    assert json.loads((checkpoint / "segops.json").read_text())["postprocess"]["source"] == "validation+training"
    metrics = ctx.tracker.client.get_run(ctx.run_id).data.metrics
    assert metrics["postprocess_cases"] == 20
    # training cases that cannot make up for it (2 + 2 defective, fewer than 5): validation alone
    few, few_groups = _dataset(tmp_path / "few", defective=2, clean=10)
    assert training_sample((few, few_groups, 0), val_labels, [1]) == []
    alone = store_postprocessing(
        checkpoint, (val_maps, val_labels), "validation", 2, ctx.tracker, None, (few, few_groups, 0)
    )
    assert (alone.source, alone.cases) == ("validation", 8)
    # out-of-fold predictions cover every training case already: never supplemented
    oof = store_postprocessing(
        checkpoint, (val_maps, val_labels), "out-of-fold", 2, ctx.tracker, None, (dataset, groups, 0)
    )
    assert (oof.source, oof.cases) == ("out-of-fold", 8)

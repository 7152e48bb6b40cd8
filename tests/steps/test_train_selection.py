"""Which validation metric chose the kept epoch, and the empty-prediction alarm of the segment step."""

from pathlib import Path

import pandas as pd

from segops.cluster.train import TrainOutcome
from segops.config.schema import TrainStep
from segops.steps.segment import empty_prediction_fraction
from segops.steps.train import _selection

STEP = {"step": "train", "model": {"arch": "unet"}}


def _outcome(val_cases: int, fg_cases: int) -> TrainOutcome:
    history = [
        {
            "epoch": e,
            "val_dice": 0.9 - 0.1 * e,
            "val_fg_dice": 0.1 * e,
            "val_cases": val_cases,
            "val_fg_cases": fg_cases,
            "val_score": 0.0,
        }
        for e in range(3)
    ]
    return TrainOutcome(Path("ckpt"), history, best_epoch=2, best_score=0.2, used_gpu=False)


def test_mostly_empty_validation_selects_by_foreground_dice() -> None:
    metric, best = _selection(TrainStep.model_validate(STEP), _outcome(val_cases=10, fg_cases=3))
    assert metric == "val_fg_dice" and best == {"best_val_dice": 0.7, "best_val_fg_dice": 0.2}
    metric, _ = _selection(TrainStep.model_validate(STEP), _outcome(val_cases=10, fg_cases=5))
    assert metric == "val_dice"
    metric, _ = _selection(TrainStep.model_validate(STEP | {"select": "last"}), _outcome(10, 3))
    assert metric == "none (select: last)"


def test_empty_prediction_fraction() -> None:
    assert empty_prediction_fraction(pd.Series([0.0, 0.0, 0.0])) == 1.0
    assert empty_prediction_fraction(pd.Series([0.0, 0.02, 0.0, 0.0])) == 0.75


def test_the_registered_models_input_example_is_cut_to_the_training_patch() -> None:
    """MLflow stores the example as JSON and runs the model on it: a photo's whole 3x3000x4000 pixels
    were 36 million numbers; the example is the training patch's corner of the image."""
    import numpy as np

    from segops.steps.train import model_example

    photo = np.arange(3 * 300 * 400, dtype=np.float64).reshape(3, 300, 400)
    step = TrainStep.model_validate(
        {
            "step": "train",
            "model": {"arch": "unet", "in_channels": 3},
            "preprocess": {"patch_size": [64, 96]},
            "augment": {"rotate90": 0},
        }
    )
    example = model_example(photo, step)
    assert example.shape == (1, 3, 64, 96) and example.dtype == np.float32 and example.flags.c_contiguous
    np.testing.assert_array_equal(example[0], photo[:, :64, :96])
    assert model_example(photo[:, :40, :50], step).shape == (1, 3, 40, 50)  # smaller than the patch: whole
    scaled = step.model_copy(update={"preprocess": step.preprocess.model_copy(update={"scale": 0.25})})
    assert model_example(photo, scaled).shape == (1, 3, 256, 384)  # the region a patch covers before resizing
    volume = np.zeros((1, 40, 300, 300), np.float32)
    step3d = TrainStep.model_validate(
        {"step": "train", "model": {"arch": "unet", "spatial_dims": 3}, "preprocess": {"patch_size": [16, 64, 64]}}
    )
    assert model_example(volume, step3d).shape == (1, 1, 16, 64, 64)


def test_a_run_with_nothing_labelled_stops_before_any_worker_naming_what_ingest_left_out(tmp_path: Path) -> None:
    """Every image a localizer (skipped by the source's default) but one unlabelled slice: the train
    step says there is nothing to train on and why, with the quarantine table's first reason."""
    import pyarrow.parquet as pq
    import pytest
    from pydicom.uid import generate_uid

    from segops.cluster.datasets import rows_to_table
    from segops.config.schema import DicomSource
    from segops.data.decode import decode_file
    from segops.data.records import dataset_meta, quarantine_table
    from segops.errors import StepError
    from segops.steps.ingest import ingest_metrics
    from segops.steps.results import IngestResult
    from segops.steps.train import run
    from tests.data.rtstruct_archive import write_ct_series

    from .contexts import make_context

    cts = write_ct_series(tmp_path / "ct", 3, generate_uid(), generate_uid())
    for ct, name in zip(cts[1:], ("scout1.dcm", "scout2.dcm"), strict=True):
        ct.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ct.save_as(tmp_path / "ct" / name, enforce_file_format=True)
    source = DicomSource(kind="dicom", path=tmp_path / "ct")
    files = ["ct0.dcm", "scout1.dcm", "scout2.dcm"]
    rows = [r for f in files for r in decode_file(str(tmp_path / "ct" / f), f, source)]
    (tmp_path / "dataset").mkdir()
    pq.write_table(rows_to_table(rows), tmp_path / "dataset" / "part-0.parquet")
    meta = dataset_meta(tmp_path / "dataset")
    quarantine_table(meta).to_parquet(tmp_path / "quarantine.parquet")
    ingest = IngestResult(
        source, tmp_path / "dataset", {"quarantine": tmp_path / "quarantine.parquet"}, None, ingest_metrics(meta, {})
    )
    ctx = make_context(tmp_path / "ctx", [ingest])
    with pytest.raises(StepError) as caught:
        run(TrainStep.model_validate(STEP), ctx)
    message = str(caught.value)
    assert message.startswith("train: no labelled case to train on: ingest read 1 image(s), 0 with a label; 2 file(s)")
    assert "scout1.dcm: a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)" in message

"""Ensemble checkpoints: fold folders inside one checkpoint folder that loads as their softmax mean."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segops.config.schema import PreprocessSpec, UNetSpec, WindowIntensity
from segops.engine.checkpoint import (
    LoadedModel,
    fold_dirs,
    load_checkpoint,
    save_checkpoint,
    save_ensemble,
    update_meta,
    weight_files,
)
from segops.engine.ensemble import SoftmaxEnsemble
from segops.engine.predict import predict_masks
from segops.errors import CheckpointError
from segops.models import build_model
from segops.outputs.case_outputs import checkpoint_digest

SPEC = UNetSpec(arch="unet", channels=(4, 8), strides=(2,), num_res_units=0)
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=-1, upper=1), patch_size=(16, 16))


def _folds(root: Path, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """Untrained tiny U-Nets (different seeds) in root/fold_i, and root made their ensemble."""
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        save_checkpoint(root / f"fold_{i}", build_model(SPEC), SPEC, PRE, extra={"epoch": i})
    return save_ensemble(root, [f"fold_{i}" for i in range(len(seeds))], SPEC, PRE, extra={"note": "cv"})


def test_an_ensemble_loads_as_the_mean_softmax_of_its_folds(tmp_path: Path) -> None:
    root = _folds(tmp_path / "model")
    assert not (root / "model.pt").exists()  # no weights of its own: the folds' are inside
    loaded = load_checkpoint(root)
    assert isinstance(loaded.model, SoftmaxEnsemble) and len(loaded.model.members) == 2
    assert loaded.meta["folds"] == ["fold_0", "fold_1"] and loaded.meta["note"] == "cv"
    assert loaded.model_spec == SPEC and loaded.preprocess == PRE and not loaded.model.training
    folds = [load_checkpoint(root / f"fold_{i}").model for i in range(2)]
    x = torch.randn(3, 1, 16, 20)
    with torch.no_grad():
        expected = (torch.softmax(folds[0](x), 1) + torch.softmax(folds[1](x), 1)) / 2
        got = torch.softmax(loaded.model(x), 1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(torch.softmax(folds[0](x), 1), expected, atol=1e-3)  # the folds differ


def test_ensemble_masks_are_the_argmax_of_the_mean_and_differ_from_a_fold(tmp_path: Path) -> None:
    root = _folds(tmp_path / "model")
    images = list(np.random.default_rng(3).normal(size=(4, 1, 24, 20)).astype(np.float32))
    got = predict_masks(load_checkpoint(root), images)
    folds = [load_checkpoint(root / f"fold_{i}") for i in range(2)]
    by_hand = LoadedModel(SoftmaxEnsemble([f.model for f in folds]).eval(), SPEC, PRE, {})
    np.testing.assert_array_equal(np.stack(got), np.stack(predict_masks(by_hand, images)))
    assert any((a != b).any() for a, b in zip(got, predict_masks(folds[0], images)))


def test_single_checkpoints_load_as_before(tmp_path: Path) -> None:
    torch.manual_seed(0)
    single = save_checkpoint(tmp_path / "single", build_model(SPEC), SPEC, PRE)
    loaded = load_checkpoint(single)
    assert not isinstance(loaded.model, SoftmaxEnsemble) and "folds" not in loaded.meta
    assert fold_dirs(single) == [] and weight_files(single) == [single / "model.pt"]
    # the digest outputs carry is still the hash of model.pt alone
    assert checkpoint_digest(single) == hashlib.sha256((single / "model.pt").read_bytes()).hexdigest()[:16]


def test_the_ensemble_digest_covers_every_fold(tmp_path: Path) -> None:
    a, b = _folds(tmp_path / "a", (0, 1)), _folds(tmp_path / "b", (0, 2))
    assert weight_files(a) == [a / "fold_0" / "model.pt", a / "fold_1" / "model.pt"]
    assert fold_dirs(a) == [a / "fold_0", a / "fold_1"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in weight_files(a))).hexdigest()[:16]
    assert checkpoint_digest(a) == digest and checkpoint_digest(a) != checkpoint_digest(b)


def test_update_meta_adds_keys_and_keeps_the_rest(tmp_path: Path) -> None:
    root = _folds(tmp_path / "model")
    update_meta(root, {"postprocess": {"rules": []}})
    meta = json.loads((root / "segops.json").read_text())
    assert meta["postprocess"] == {"rules": []} and meta["folds"] == ["fold_0", "fold_1"] and meta["note"] == "cv"
    assert isinstance(load_checkpoint(root).model, SoftmaxEnsemble)
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_a_fold_of_another_architecture_is_refused(tmp_path: Path) -> None:
    other = UNetSpec(arch="unet", channels=(4, 8, 16), strides=(2, 2), num_res_units=0)
    save_checkpoint(tmp_path / "m" / "fold_0", build_model(SPEC), SPEC, PRE)
    save_checkpoint(tmp_path / "m" / "fold_1", build_model(other), other, PRE)
    with pytest.raises(CheckpointError, match="fold_1 has model spec"):
        save_ensemble(tmp_path / "m", ["fold_0", "fold_1"], SPEC, PRE)
    with pytest.raises(CheckpointError, match="is not a segops checkpoint"):
        save_ensemble(tmp_path / "m", ["fold_0", "fold_9"], SPEC, PRE)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_model_folder_with_settings_this_segops_does_not_know_is_a_checkpoint_error(
    tmp_path: Path, ensemble: bool
) -> None:
    """What a newer segops may write (a preprocessing knob added later): refused by dotted path, not a
    pydantic traceback, and never loaded with the knob silently dropped."""
    torch.manual_seed(0)
    root = _folds(tmp_path / "model") if ensemble else save_checkpoint(tmp_path / "model", build_model(SPEC), SPEC, PRE)
    meta = json.loads((root / "segops.json").read_text())
    meta["preprocess"]["a_later_knob"] = 2
    (root / "segops.json").write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError, match=r"preprocess\.a_later_knob: Extra inputs are not permitted.*newer segops"
    ):
        load_checkpoint(root)

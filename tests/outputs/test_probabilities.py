"""The probabilities output: float16 softmax per case (per series for volumes) as a reproducible .npz,
at the mask's stem, beside the mask it is the argmax of."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segops.config.schema import PreprocessSpec, UNetSpec, ZScoreIntensity
from segops.data.mask_files import read_mask_png
from segops.engine.cases import CaseResult, InferenceSettings, case_result, predict_batch
from segops.engine.checkpoint import LoadedModel
from segops.errors import SegopsError, ShapeError
from segops.outputs.case_outputs import OutputConfig, write_case_result
from segops.outputs.probabilities import encode_probabilities, read_probabilities, write_probabilities


def _pointwise() -> LoadedModel:
    """Logits (-3x, 1, 3x) of each z-scored pixel x: class 0 below -1/3, 2 above 1/3, 1 between."""
    conv = nn.Conv2d(1, 3, 1).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-3.0, 0.0, 3.0]).reshape(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    spec = UNetSpec(arch="unet", classes=3, channels=(4, 8), strides=(2,))
    return LoadedModel(conv, spec, PreprocessSpec(intensity=ZScoreIntensity(kind="zscore")), {})


def _steps(shape: tuple[int, ...]) -> np.ndarray:
    """An image of three flat bands (-1, 0, 1 after z-scoring): every pixel's top class wins by a
    margin far above float16 rounding, so the stored probabilities keep the mask's argmax."""
    image = np.zeros((1, *shape), np.float32)
    third = shape[-1] // 3
    image[..., :third], image[..., 2 * third :] = -10.0, 10.0
    return image


def _config(tmp_path: Path, formats: tuple[str, ...]) -> OutputConfig:
    return OutputConfig(str(tmp_path / "out"), formats, "mirror", {1: "a", 2: "b"}, 3, "digest")


def test_a_case_round_trips_as_float16_beside_its_mask(tmp_path: Path) -> None:
    settings = InferenceSettings(amp=False, probabilities=True)
    (prediction,) = predict_batch(_pointwise(), [_steps((12, 18))], settings)
    result = case_result(prediction, None, settings, classes=3)
    meta = {"case_id": "case-7", "rel_path": "a/b.png", "frame": 0, "transfer_syntax": "PNG"}
    written = write_case_result(_config(tmp_path, ("png", "probabilities")), meta, result)
    assert written["probabilities_path"] == str(tmp_path / "out" / "probabilities" / "a" / "b.npz")
    assert written["mask_path"] == str(tmp_path / "out" / "masks" / "a" / "b.png")
    stored = read_probabilities(written["probabilities_path"])
    assert stored.probabilities.dtype == np.float16 and stored.probabilities.shape == (3, 12, 18)
    assert stored.classes.tolist() == [0, 1, 2] and stored.case_id == "case-7"
    np.testing.assert_array_equal(stored.probabilities, result.probabilities)
    np.testing.assert_allclose(stored.probabilities.astype(np.float32).sum(axis=0), 1.0, atol=2e-3)
    mask = read_mask_png(written["mask_path"], (12, 18))
    np.testing.assert_array_equal(stored.probabilities.argmax(axis=0), mask)
    assert np.unique(mask).tolist() == [0, 1, 2]
    with np.load(written["probabilities_path"], allow_pickle=False) as data:  # plain numpy reads it
        assert sorted(data.files) == ["case_id", "classes", "probabilities"]


def test_a_series_gets_one_file_per_volume_and_frames_their_own_stems(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volume = rng.dirichlet(np.ones(2), size=(4, 6, 5)).transpose(3, 0, 1, 2).astype(np.float32)  # (2, Z, H, W)
    mask = volume.argmax(axis=0).astype(np.uint8)
    meta = {"case_id": "1.2.3/../4", "rel_path": "s", "frame": 0, "transfer_syntax": "1.2.840.10008.1.2.1"}
    result = CaseResult(class_map=mask, probabilities=volume.astype(np.float16))
    written = write_case_result(_config(tmp_path, ("probabilities",)), meta, result)
    path = Path(written["probabilities_path"])
    assert path == tmp_path / "out" / "probabilities" / "volumes" / "1.2.3___4.npz"  # sanitised, like the NIfTI
    assert written["mask_path"] == "" and read_probabilities(path).probabilities.shape == (2, 4, 6, 5)
    framed = meta | {"rel_path": "x/multi.dcm", "frame": 3}
    result2d = CaseResult(class_map=mask[0], probabilities=volume[:, 0].astype(np.float16))
    written = write_case_result(_config(tmp_path, ("probabilities",)), framed, result2d)
    assert written["probabilities_path"] == str(tmp_path / "out" / "probabilities" / "x" / "multi.f0003.npz")


def test_same_probabilities_same_bytes_and_no_temp_left(tmp_path: Path) -> None:
    p = np.full((2, 3, 4), 0.5, np.float32)
    assert encode_probabilities(p, "c") == encode_probabilities(p.copy(), "c")
    first = Path(write_probabilities(tmp_path, "a/b", p, "c")).read_bytes()
    second = Path(write_probabilities(tmp_path, "a/b", p, "c")).read_bytes()  # a rerun rewrites in place
    assert first == second
    assert [f.name for f in (tmp_path / "probabilities" / "a").iterdir()] == ["b.npz"]
    with pytest.raises(ShapeError, match=r"probabilities of shape \(3, 4\)"):
        encode_probabilities(p[0], "c")


def test_asking_for_probabilities_of_a_case_segmented_without_them_fails_the_write(tmp_path: Path) -> None:
    meta = {"case_id": "c", "rel_path": "a.png", "frame": 0, "transfer_syntax": "PNG"}
    result = CaseResult(class_map=np.zeros((4, 4), np.uint8))
    with pytest.raises(SegopsError, match="segmented without them"):
        write_case_result(_config(tmp_path, ("png", "probabilities")), meta, result)
    assert write_case_result(_config(tmp_path, ("png",)), meta, result)["probabilities_path"] == ""

"""Mixed precision: which hardware computes in bfloat16, and that bfloat16 inference on a CPU that
has it gives the float32 masks but for a few boundary pixels (README "Precision")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segops.config.schema import PreprocessSpec, SlidingWindowSpec, UNetSpec, WindowIntensity
from segops.engine.checkpoint import LoadedModel
from segops.engine.embeddings import embed
from segops.engine.precision import autocast, cpu_flags_have_bf16, cpu_has_bf16, inference_autocast
from segops.engine.predict import class_probabilities, predict, predict_masks
from segops.metrics import dice_score

from .squares import squares, trained_on_squares

SPEC = UNetSpec(arch="unet", channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(32, 32))
CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bfloat16 arithmetic (AMX, AVX512-BF16)")

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\nbogomips\t: 4000\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_cpu_flags_name_the_bf16_machines() -> None:
    assert cpu_flags_have_bf16(SAPPHIRE_RAPIDS)
    assert cpu_flags_have_bf16(SAPPHIRE_RAPIDS.replace(" amx_bf16", ""))  # AVX512-BF16 alone (Zen 4)
    assert not cpu_flags_have_bf16(SKYLAKE)  # AVX512 without bf16: emulated, slower than fp32
    assert not cpu_flags_have_bf16(GRAVITON)  # measured on x86 only: float32 elsewhere
    assert not cpu_flags_have_bf16("model name\t: avx512_bf16 in a name, not a flag\n")


def test_training_stays_float32_on_cpu_and_inference_follows_the_hardware() -> None:
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        with autocast(CPU, True):
            assert conv(x).dtype == torch.float32
        with inference_autocast(CPU, False):
            assert conv(x).dtype == torch.float32
        with inference_autocast(CPU, True):
            assert conv(x).dtype == (torch.bfloat16 if cpu_has_bf16() else torch.float32)


@pytest.fixture(scope="module")
def trained() -> LoadedModel:
    return LoadedModel(trained_on_squares(SPEC, PRE), SPEC, PRE, {})


@needs_bf16
def test_bf16_masks_agree_with_float32_but_for_boundary_pixels(trained: LoadedModel) -> None:
    pairs = squares(12, 7)
    images, truths = [img for img, _ in pairs], [lab for _, lab in pairs]
    fp32 = predict_masks(trained, images, amp=False)
    bf16 = predict_masks(trained, images, amp=True)
    differ = sum(int((a != b).sum()) for a, b in zip(fp32, bf16))
    assert differ <= 0.001 * sum(m.size for m in fp32), differ
    dice32 = np.mean([dice_score(m == 1, t == 1) for m, t in zip(fp32, truths)])
    dice16 = np.mean([dice_score(m == 1, t == 1) for m, t in zip(bf16, truths)])
    assert dice32 > 0.8 and abs(dice16 - dice32) < 0.005, (dice32, dice16)


@needs_bf16
def test_bf16_paths_return_float32_arrays(trained: LoadedModel) -> None:
    """Whole images, tiles, mirrors, probabilities and embeddings all leave autocast as float32 numpy."""
    images = [img for img, _ in squares(3, 3)]
    tiled = SlidingWindowSpec(max_pixels=16 * 16)
    for kwargs in ({}, {"sliding": tiled}, {"flip_axes": (0, 1)}, {"sliding": tiled, "flip_axes": (1,)}):
        probs = predict(trained, images, CPU, amp=True, head=class_probabilities, **kwargs)
        assert all(p.dtype == np.float32 and p.shape == (2, 36, 44) for p in probs), kwargs
        np.testing.assert_allclose([p.sum(axis=0).mean() for p in probs], 1.0, atol=1e-3)
        masks = predict(trained, images, CPU, amp=True, **kwargs)
        reference = predict(trained, images, CPU, amp=False, **kwargs)
        assert np.mean([(a == b).mean() for a, b in zip(masks, reference)]) > 0.999, kwargs
    emb16, emb32 = embed(trained, images, CPU, amp=True), embed(trained, images, CPU, amp=False)
    assert emb16.dtype == np.float32 and emb16.shape == emb32.shape
    np.testing.assert_allclose(emb16, emb32, rtol=0.05, atol=0.05)

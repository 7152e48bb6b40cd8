"""Encoder embeddings: one row per image for U-Net, DynUNet, Mask R-CNN and fold ensembles, the same
whatever else is in the batch; distances to the training reference grow for shifted inputs."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from segops.config.schema import (
    DynUNetSpec,
    MaskRCNNSpec,
    PreprocessSpec,
    SlidingWindowSpec,
    TTASpec,
    UNetSpec,
    WindowIntensity,
)
from segops.engine.cases import InferenceSettings, segment_cases
from segops.engine.checkpoint import LoadedModel
from segops.engine.embeddings import BottleneckTap, EmbeddingReference, bottleneck, embed
from segops.engine.ensemble import SoftmaxEnsemble
from segops.engine.predict import predict
from segops.errors import ShapeError
from segops.models import build_model

PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(32, 32))
UNET = UNetSpec(arch="unet", channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def _loaded(spec, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    return LoadedModel(build_model(spec).eval(), spec, PRE, {})


def _textures(n: int, seed: int, shape=(40, 48)) -> list[np.ndarray]:
    """Gray (1, H, W) images around 120 +- 30 with a smooth gradient: one 'training distribution'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    out = []
    for _ in range(n):
        base = rng.uniform(90, 150) + rng.uniform(-0.5, 0.5) * xx + rng.normal(0, 8, shape)
        out.append(np.clip(base, 0, 255).astype(np.float32)[None])
    return out


@pytest.mark.parametrize(
    ("spec", "dims"),
    [
        (UNET, 16),  # the bottom level's channels
        (DynUNetSpec(arch="dynunet", filters=(4, 8, 16, 16, 32)), 32),
        (MaskRCNNSpec(arch="maskrcnn", backbone="resnet18_fpn", min_size=64, max_size=64), 512),  # C5 of ResNet-18
    ],
)
def test_one_deterministic_row_per_image_whatever_the_batch(spec, dims: int) -> None:
    loaded = _loaded(spec)
    images = _textures(5, seed=0) + _textures(1, seed=1, shape=(33, 31))  # two shapes: two batches
    first = embed(loaded, images)
    assert first.shape == (6, dims) and first.dtype == np.float32
    np.testing.assert_array_equal(embed(loaded, images), first)
    np.testing.assert_allclose(embed(loaded, images[::-1])[::-1], first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed(loaded, images[2:3])[0], first[2], rtol=1e-5, atol=1e-6)
    assert np.abs(first[0] - first[1]).max() > 0  # different images, different rows
    if spec.task != "instance":
        assert not bottleneck(loaded.model)._forward_hooks  # the hook is removed after use


def test_an_ensemble_concatenates_its_members() -> None:
    members = [_loaded(UNET, seed=s) for s in (0, 1)]
    ensemble = LoadedModel(SoftmaxEnsemble([m.model for m in members]).eval(), UNET, PRE, {})
    images = _textures(3, seed=0)
    np.testing.assert_allclose(
        embed(ensemble, images), np.concatenate([embed(m, images) for m in members], axis=1), rtol=1e-6
    )


@pytest.mark.parametrize("members", [1, 2])
def test_a_tap_catches_the_embedding_of_every_image_predicted_whole(members: int) -> None:
    """The prediction's own encoder pass gives :func:`embed`'s rows (mirrored, fold members and
    member votes included); a tiled image gets no row and is left to :func:`embed`."""
    folds = [_loaded(UNET, seed=s) for s in range(members)]
    model = folds[0].model if members == 1 else SoftmaxEnsemble([f.model for f in folds]).eval()
    loaded = LoadedModel(model, UNET, PRE, {})
    images = _textures(3, seed=0) + _textures(2, seed=1, shape=(33, 31)) + _textures(1, seed=2, shape=(64, 64))
    expected = embed(loaded, images)
    sliding = SlidingWindowSpec(max_pixels=48 * 48, roi_size=(32, 32))  # the 64² image is tiled
    with BottleneckTap(loaded) as tap:
        predict(loaded, images, sliding=sliding, flip_axes=(0, 1), tap=tap)
    assert not bottleneck(folds[-1].model)._forward_hooks  # closed: hooks removed
    assert sorted(tap.rows) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(np.stack([tap.rows[i] for i in range(5)]), expected[:5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tap.embeddings(loaded, images, "cpu", False), expected, rtol=1e-5, atol=1e-6)

    # through the per-case path with the risk (member votes): the same distances as a separate embed()
    reference = EmbeddingReference.from_embeddings(embed(loaded, _textures(8, seed=3)), seed=0)
    settings = InferenceSettings(amp=False, sliding=sliding, tta=TTASpec(flip_axes=(1,)), embeddings=reference)
    calls = []
    hooks = [bottleneck(f.model).register_forward_hook(lambda *a: calls.append(1)) for f in folds]
    results = segment_cases(loaded, images, [None] * len(images), settings)
    with_embeddings = len(calls)
    calls.clear()
    segment_cases(loaded, images, [None] * len(images), replace(settings, embeddings=None))
    for hook in hooks:
        hook.remove()
    np.testing.assert_allclose(
        [r.embedding_distance for r in results], reference.distance(expected), rtol=1e-5, atol=1e-6
    )
    # one extra encoder pass per member: the tiled image's embed(); the 3 whole-image shapes cost none
    assert with_embeddings - len(calls) == members


def test_shifted_inputs_move_the_distance_and_a_fresh_sample_does_not() -> None:
    """The U-Net normalises each level per image (instance norm), so what moves its pooled features
    is texture, not a global gain: noise and blur do; intensity x1.5 is left to the image statistics."""
    loaded = _loaded(UNET)
    reference = EmbeddingReference.from_embeddings(embed(loaded, _textures(40, seed=0)), seed=0)
    fresh = _textures(20, seed=1)
    rng = np.random.default_rng(2)
    noisy = [np.clip(i + rng.normal(0, 40, i.shape), 0, 255).astype(np.float32) for i in fresh]
    blurred = [ndimage.gaussian_filter(i, (0, 2, 2)) for i in fresh]
    ratios = [reference.ratio(reference.distance(embed(loaded, images))) for images in (fresh, noisy, blurred)]
    assert ratios[0] < 1.0 < min(ratios[1:]), ratios


def test_the_reference_round_trips_and_checks_its_inputs(tmp_path) -> None:
    emb = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    reference = EmbeddingReference.from_embeddings(emb)
    again = EmbeddingReference.load(reference.save(tmp_path / "embeddings.npz"))
    for name in ("mean", "std", "distances", "sample"):
        np.testing.assert_array_equal(getattr(again, name), getattr(reference, name))
    assert again.p95 == reference.p95
    # the distance is the RMS z-score: the mean itself is at 0, mean + 1 std in every dimension at 1
    np.testing.assert_allclose(reference.distance(np.stack([reference.mean, reference.mean + reference.std])), [0, 1])
    with pytest.raises(ShapeError, match=r"expected \(N, 6\) embeddings of this model, got shape \(2, 5\)"):
        reference.distance(np.zeros((2, 5)))
    with pytest.raises(ShapeError, match=r"expected \(n >= 4, D\) training embeddings"):
        EmbeddingReference.from_embeddings(emb[:3])

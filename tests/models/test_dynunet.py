"""DynUNet (``arch: dynunet``) without Ray: spec, output shapes, deep-supervision training through
the engine loop, checkpoints and sliding-window inference."""

from pathlib import Path

import numpy as np
import pytest
import torch

from segops.config.schema import DynUNetSpec, PreprocessSpec, SlidingWindowSpec, TrainStep, WindowIntensity
from segops.engine.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from segops.engine.predict import predict_masks
from segops.engine.train import train_steps
from segops.losses import DeepSupervisionLoss, build_loss
from segops.models import build_model

TINY_2D = DynUNetSpec(arch="dynunet", filters=(4, 8, 8, 8, 8))  # default 5 levels: 16 px divisor
TINY_3D = DynUNetSpec(arch="dynunet", spatial_dims=3, filters=(4, 8, 8, 8))  # default 4 levels: 8 voxels
PRE_2D = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(32, 32))
PRE_3D = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(8, 16, 16))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one torch thread is ~5x faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_defaults_per_spatial_dims() -> None:
    assert TINY_2D.strides == ((1, 1),) + ((2, 2),) * 4 and TINY_2D.kernels == ((3, 3),) * 5
    assert (TINY_2D.deep_supr_num, TINY_2D.supervised_outputs, TINY_2D.axis_divisors) == (3, 4, (16, 16))
    assert TINY_3D.strides == ((1, 1, 1),) + ((2, 2, 2),) * 3 and TINY_3D.size_divisor == 8
    assert (TINY_3D.deep_supr_num, TINY_3D.task) == (2, "semantic")
    aniso = DynUNetSpec(arch="dynunet", spatial_dims=3, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    assert aniso.kernels == ((3, 3, 3),) * 3  # kernels default to 3 when only strides are given
    assert (aniso.axis_divisors, aniso.size_divisor, aniso.deep_supr_num) == ((2, 4, 4), 4, 1)
    off = DynUNetSpec(arch="dynunet", deep_supervision=False)
    assert off.supervised_outputs == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kernels": [[3, 3]] * 4, "strides": [[1, 1]] + [[2, 2]] * 4}, "kernels has 4 levels but strides has 5"),
        ({"strides": [[1, 1], [2, 2], [2, 2, 2]]}, r"strides\[2\] \[2, 2, 2\] has 3 sizes but spatial_dims is 2"),
        (
            {"spatial_dims": 3, "kernels": [[3, 3, 3], [3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 2]] * 1},
            "kernels has 3 levels but strides has 2",
        ),
        ({"strides": [[1, 1], [2, 2]]}, "strides has 2 levels; DynUNet needs at least 3"),
        ({"kernels": [[3, 3], [4, 4], [3, 3]], "strides": [[1, 1], [2, 2], [2, 2]]}, "have even sizes"),
        ({"filters": [8, 16]}, "filters has 2 entries but there are 5 levels"),
        ({"deep_supr_num": 4}, "deep_supr_num 4 is too large for 5 levels: at most 3"),
        ({"strides": [[1, 1], [3, 3], [2, 2]]}, "Input should be 1 or 2"),
    ],
)
def test_spec_errors_name_the_problem(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DynUNetSpec(arch="dynunet", **fields)


def test_patch_must_fit_each_axis_divisor() -> None:
    def train(patch: list[int]) -> TrainStep:
        model = {"arch": "dynunet", "strides": [[1, 1], [1, 2], [2, 2]]}  # divisors (2, 4)
        return TrainStep.model_validate(
            {"step": "train", "model": model, "preprocess": {"patch_size": patch}, "augment": {"rotate90": 0}}
        )

    assert train([6, 8]).model.axis_divisors == (2, 4)
    with pytest.raises(ValueError, match=r"patch_size \[6, 6\] must be multiples of \[2, 4\]"):
        train([6, 6])


@pytest.mark.parametrize(("spec", "shape"), [(TINY_2D, (2, 1, 32, 48)), (TINY_3D, (1, 1, 8, 16, 24))])
def test_stacked_outputs_in_training_plain_logits_in_eval(spec: DynUNetSpec, shape: tuple[int, ...]) -> None:
    model = build_model(spec)
    x = torch.randn(*shape)
    model.train()
    stacked = model(x)
    assert stacked.shape == (shape[0], spec.supervised_outputs, 2, *shape[2:])
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (shape[0], 2, *shape[2:])


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Bright squares on noise; the label is the square."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 32, 32, generator=gen) * 0.3
    y = torch.zeros(4, 1, 32, 32, dtype=torch.long)
    for i, (r, c) in enumerate([(4, 4), (10, 16), (18, 6), (14, 14)]):
        x[i, :, r : r + 10, c : c + 10] += 2.0
        y[i, :, r : r + 10, c : c + 10] = 1
    return x, y


def test_deep_supervision_loss_falls_through_the_engine_loop() -> None:
    torch.manual_seed(0)
    model = build_model(TINY_2D)
    loss_fn = build_loss("dice_ce", supervised_outputs=TINY_2D.supervised_outputs)
    assert isinstance(loss_fn, DeepSupervisionLoss) and loss_fn.weights == pytest.approx(
        [1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = _toy_batch()
    losses = []
    for _ in range(20):
        total, count = train_steps(model, [(x, y)], loss_fn, optimizer, torch.device("cpu"))
        losses.append(total / count)
    assert count == 4 and losses[-1] < 0.5 * losses[0]
    model.eval()  # eval logits (N, C, H, W) go through the same loss: the plain base loss
    with torch.no_grad():
        assert float(loss_fn(model(x), y)) == pytest.approx(float(loss_fn.base(model(x), y)))


def test_checkpoint_round_trip_gives_identical_eval_outputs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(TINY_2D)
    train_steps(
        model,
        [_toy_batch()],
        build_loss("dice_ce", supervised_outputs=4),
        torch.optim.Adam(model.parameters()),
        torch.device("cpu"),
    )
    model.eval()
    save_checkpoint(tmp_path / "ckpt", model, TINY_2D, PRE_2D)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.model_spec == TINY_2D and not loaded.model.training
    x = _toy_batch()[0]
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))


def test_sliding_window_on_a_large_image_and_a_volume() -> None:
    torch.manual_seed(2)
    rng = np.random.default_rng(0)
    loaded_2d = LoadedModel(build_model(TINY_2D).eval(), TINY_2D, PRE_2D, {})
    image = rng.uniform(0, 255, (1, 70, 90)).astype(np.float32)  # not a multiple of 16
    sliding = SlidingWindowSpec(max_pixels=1000, overlap=0.5)  # 6300 px > 1000: 32x32 tiles
    (tiled,) = predict_masks(loaded_2d, [image], sliding=sliding)
    (whole,) = predict_masks(loaded_2d, [image], sliding=SlidingWindowSpec())  # padded to 80x96
    assert tiled.shape == whole.shape == (70, 90) and tiled.dtype == np.uint8
    loaded_3d = LoadedModel(build_model(TINY_3D).eval(), TINY_3D, PRE_3D, {})
    volume = rng.uniform(0, 255, (1, 12, 40, 36)).astype(np.float32)
    (mask,) = predict_masks(loaded_3d, [volume])
    assert mask.shape == (12, 40, 36) and set(np.unique(mask)) <= {0, 1}


def test_an_image_smaller_than_the_size_divisor_is_segmented_at_the_patch_size() -> None:
    """A 9x13 crop beside 32 px training patches: padded only to the 16 px divisor, the bottleneck
    would be 1x1 and instance normalisation raises; padded to the patch size, it is segmented, and
    its mask and embedding are those of the padded input cropped back."""
    from segops.data.transforms import pad_to_multiple, prepare_image
    from segops.engine.embeddings import BottleneckTap, embed

    torch.manual_seed(3)
    loaded = LoadedModel(build_model(TINY_2D).eval(), TINY_2D, PRE_2D, {})
    tiny = np.random.default_rng(4).uniform(0, 255, (1, 9, 13)).astype(np.float32)
    prepared = prepare_image(tiny, PRE_2D.intensity, 1)
    with torch.no_grad(), pytest.raises(ValueError, match="more than 1 spatial element"):
        loaded.model(torch.from_numpy(pad_to_multiple(prepared, TINY_2D.size_divisor))[None])
    with BottleneckTap(loaded) as tap:
        (mask,) = predict_masks(loaded, [tiny], tap=tap)
    assert mask.shape == (9, 13) and mask.dtype == np.uint8
    with torch.no_grad():
        padded = torch.from_numpy(pad_to_multiple(prepared, TINY_2D.size_divisor, (32, 32)))[None]
        assert padded.shape == (1, 1, 32, 32)
        np.testing.assert_array_equal(mask, loaded.model(padded).argmax(1)[0, :9, :13].numpy())
    np.testing.assert_allclose(tap.embeddings(loaded, [tiny], "cpu", False), embed(loaded, [tiny]), atol=1e-6)

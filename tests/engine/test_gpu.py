"""GPU paths: run only where CUDA exists (skipped cleanly elsewhere by conftest)."""

import numpy as np
import pytest
import torch

from segops.config.schema import PreprocessSpec, UNetSpec, ZScoreIntensity
from segops.engine.checkpoint import LoadedModel
from segops.engine.predict import predict_masks
from segops.models import build_model

pytestmark = pytest.mark.gpu


def test_bf16_autocast_inference_on_cuda_matches_fp32_closely() -> None:
    torch.manual_seed(0)
    spec = UNetSpec(arch="unet", channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    pre = PreprocessSpec(intensity=ZScoreIntensity(kind="zscore"), patch_size=(32, 32))
    model = build_model(spec).eval().to("cuda")
    loaded = LoadedModel(model, spec, pre, {})
    images = [np.random.default_rng(i).normal(size=(1, 64, 80)).astype(np.float32) for i in range(4)]
    fp32 = predict_masks(loaded, images, "cuda", amp=False)
    bf16 = predict_masks(loaded, images, "cuda", amp=True)
    agreement = np.mean([(a == b).mean() for a, b in zip(fp32, bf16)])
    assert agreement > 0.95


def test_training_workers_pick_the_gpu_when_auto() -> None:
    from segops.cluster.scaling import resolve_use_gpu

    assert resolve_use_gpu("auto", {"GPU": float(torch.cuda.device_count())}) is True


def test_bf16_autocast_training_on_cuda_learns_and_keeps_fp32_weights() -> None:
    from segops.engine.train import train_steps
    from segops.losses import build_loss

    torch.manual_seed(0)
    spec = UNetSpec(arch="unet", channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    model = build_model(spec).to("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    y = (rng.random((8, 1, 32, 32)) > 0.7).astype(np.int64)
    x = (y + rng.normal(scale=0.3, size=y.shape)).astype(np.float32)
    batches = [(torch.from_numpy(x), torch.from_numpy(y))] * 30
    first, _ = train_steps(model, batches[:1], build_loss("dice_ce"), optimizer, torch.device("cuda"), amp=True)
    train_steps(model, batches, build_loss("dice_ce"), optimizer, torch.device("cuda"), amp=True)
    last, _ = train_steps(model, batches[:1], build_loss("dice_ce"), optimizer, torch.device("cuda"), amp=True)
    assert np.isfinite(last) and last < first
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_maskrcnn_bf16_training_learns_and_predicts_on_cuda() -> None:
    from segops.config.schema import MaskRCNNSpec
    from segops.data.instances import INSTANCE_STRIDE
    from segops.engine.detect import detection_target, detection_train_steps, predict_instances

    torch.manual_seed(0)
    spec = MaskRCNNSpec(arch="maskrcnn", classes=2, min_size=64, max_size=64, anchor_sizes=(8, 16, 32, 64, 128))
    model = build_model(spec).to("cuda")
    label = np.zeros((64, 64), np.int32)
    label[10:30, 8:28], label[36:56, 34:60] = INSTANCE_STRIDE + 1, INSTANCE_STRIDE + 2
    image = torch.from_numpy(
        (label > 0).astype(np.float32)[None]
        + 0.1 * np.random.default_rng(0).normal(size=(1, 64, 64)).astype(np.float32)
    )
    batches = [([image, image.flip(-1)], [detection_target(label), detection_target(label[:, ::-1].copy())])] * 25
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    first = detection_train_steps(model, batches[:1], optimizer, torch.device("cuda"), amp=True)
    detection_train_steps(model, batches, optimizer, torch.device("cuda"), amp=True)
    last = detection_train_steps(model, batches[:1], optimizer, torch.device("cuda"), amp=True)
    assert np.isfinite(last["loss"]) and last["loss"] < first["loss"] and "loss_mask_dice" in last
    assert all(p.dtype == torch.float32 for p in model.parameters())
    loaded = LoadedModel(model, spec, PreprocessSpec(intensity=ZScoreIntensity(kind="zscore")), {})
    (pred,) = predict_instances(loaded, [image.numpy()], "cuda", amp=True)
    assert pred.masks.shape[1:] == (64, 64) and pred.masks.dtype == bool


def test_bf16_autocast_only_where_the_gpu_computes_in_bf16() -> None:
    """A T4 or V100 (compute capability < 8) would emulate bf16, slower than float32: it stays in float32."""
    from segops.engine.precision import autocast, cuda_has_bf16

    native = torch.cuda.get_device_capability()[0] >= 8
    assert cuda_has_bf16() is native
    with autocast(torch.device("cuda"), True):
        product = torch.ones(4, 4, device="cuda") @ torch.ones(4, 4, device="cuda")
    assert product.dtype == (torch.bfloat16 if native else torch.float32)

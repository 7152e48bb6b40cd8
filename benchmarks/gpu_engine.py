"""GPU figures for the inference and training engines: fp32 and bf16 AMP on CUDA vs CPU.

This measures what one inference actor (and one Ray Train worker) does per batch, on the
same machine in the same process: the segops engine code (``predict_masks``, ``train_steps``)
with the quickstart-sized U-Net. It runs without Ray or MLflow so that it can run on a GPU
machine that only has torch, MONAI and pydantic.

    python benchmarks/gpu_engine.py --images 256 --size 512
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segops.config.schema import PreprocessSpec, SlidingWindowSpec, UNetSpec, ZScoreIntensity  # noqa: E402
from segops.engine.checkpoint import LoadedModel  # noqa: E402
from segops.engine.predict import predict_masks  # noqa: E402
from segops.engine.train import train_steps  # noqa: E402
from segops.losses import build_loss  # noqa: E402
from segops.models import build_model  # noqa: E402

SPEC = UNetSpec(arch="unet", in_channels=1, classes=2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
PRE = PreprocessSpec(intensity=ZScoreIntensity(kind="zscore"), patch_size=(96, 96))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def infer_rate(loaded: LoadedModel, images: list[np.ndarray], device: str, amp: bool, batch: int) -> tuple[float, list]:
    predict_masks(loaded, images[:batch], device, amp)  # warm-up (cuDNN autotune, allocator)
    _sync(device)
    t0, masks = time.perf_counter(), []
    for i in range(0, len(images), batch):
        masks += predict_masks(loaded, images[i : i + batch], device, amp)
    _sync(device)
    return len(images) / (time.perf_counter() - t0), masks


def train_rate(device: str, amp: bool, steps: int, batch: int, patch: int) -> float:
    torch.manual_seed(0)
    model = build_model(SPEC).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    y = torch.from_numpy((rng.random((batch, 1, patch, patch)) > 0.7).astype(np.int64))
    x = (y + torch.randn(y.shape)).float()
    train_steps(model, [(x, y)] * 2, build_loss("dice_ce"), opt, torch.device(device), amp)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    train_steps(model, [(x, y)] * steps, build_loss("dice_ce"), opt, torch.device(device), amp)
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def maskrcnn_rates(device: str, amp: bool, size: int, images: int) -> tuple[float, float]:
    """(training images/s, inference images/s) of the ResNet-50 FPN v2 Mask R-CNN at size×size."""
    from segops.config.schema import MaskRCNNSpec
    from segops.data.instances import INSTANCE_STRIDE
    from segops.engine.detect import detection_target, detection_train_steps, predict_instances

    torch.manual_seed(0)
    spec = MaskRCNNSpec(arch="maskrcnn", backbone="resnet50_fpn_v2", classes=3, min_size=size, max_size=size)
    model = build_model(spec).to(device)
    label = np.zeros((size, size), np.int32)
    for k in range(8):  # 8 squares of two classes
        y, x = divmod(k, 4)
        label[40 + y * 200 : 140 + y * 200, 20 + x * 120 : 100 + x * 120] = (1 + k % 2) * INSTANCE_STRIDE + k + 1
    image = torch.from_numpy((label > 0).astype(np.float32)[None] + 0.1)
    batch = ([image] * 4, [detection_target(label)] * 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    detection_train_steps(model, [batch] * 2, opt, torch.device(device), amp)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    detection_train_steps(model, [batch] * (images // 4), opt, torch.device(device), amp)
    _sync(device)
    train = images / (time.perf_counter() - t0)
    loaded = LoadedModel(model, spec, PRE, {})
    predict_instances(loaded, [image.numpy()] * 4, device, amp)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(images // 4):
        predict_instances(loaded, [image.numpy()] * 4, device, amp)
    _sync(device)
    return train, images / (time.perf_counter() - t0)


def sliding_peak(loaded: LoadedModel, side: int, tile_batch: int, amp: bool) -> tuple[float, float]:
    """(seconds, peak GiB of CUDA memory) for one side×side image tiled by MONAI's sliding window."""
    image = np.random.default_rng(1).normal(size=(1, side, side)).astype(np.float32)
    sliding = SlidingWindowSpec(max_pixels=256 * 256, roi_size=(512, 512), tile_batch=tile_batch, overlap=0.25)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    predict_masks(loaded, [image], "cuda", amp, sliding)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cpu-images", type=int, default=32, help="the CPU baseline is slow; fewer images")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(1, args.size, args.size)).astype(np.float32) for _ in range(args.images)]
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CPU threads {torch.get_num_threads()}")

    model = build_model(SPEC).eval()
    cpu = LoadedModel(model, SPEC, PRE, {})
    cpu_rate, cpu_masks = infer_rate(cpu, images[: args.cpu_images], "cpu", False, args.batch)
    gpu = LoadedModel(model.to("cuda"), SPEC, PRE, {})
    fp32_rate, fp32_masks = infer_rate(gpu, images, "cuda", False, args.batch)
    bf16_rate, bf16_masks = infer_rate(gpu, images, "cuda", True, args.batch)
    n = args.cpu_images
    agree_cpu = np.mean([(a == b).mean() for a, b in zip(cpu_masks, fp32_masks[:n])])
    agree_bf16 = np.mean([(a == b).mean() for a, b in zip(fp32_masks, bf16_masks)])
    print(f"\ninference, {args.size}x{args.size}, batch {args.batch} (images/s)")
    print(f"  CPU fp32   {cpu_rate:9.1f}")
    print(f"  CUDA fp32  {fp32_rate:9.1f}   ÷ CPU = {fp32_rate / cpu_rate:6.1f}")
    print(
        f"  CUDA bf16  {bf16_rate:9.1f}   ÷ CPU = {bf16_rate / cpu_rate:6.1f}   ÷ CUDA fp32 = "
        f"{bf16_rate / fp32_rate:4.2f}"
    )
    print(f"  pixel agreement: CUDA fp32 vs CPU {agree_cpu:.6f}, bf16 vs fp32 {agree_bf16:.6f}")

    print("\ntraining (patches/s, 96x96 patches, batch 32, DiceCE)")
    t_cpu = train_rate("cpu", False, 5, 32, 96)
    t32 = train_rate("cuda", False, 50, 32, 96)
    t16 = train_rate("cuda", True, 50, 32, 96)
    print(f"  CPU fp32   {t_cpu:9.1f}")
    print(f"  CUDA fp32  {t32:9.1f}   ÷ CPU = {t32 / t_cpu:6.1f}")
    print(f"  CUDA bf16  {t16:9.1f}   ÷ CPU = {t16 / t_cpu:6.1f}   ÷ CUDA fp32 = {t16 / t32:4.2f}")

    print("\nMask R-CNN ResNet-50 FPN v2, 512x512, batch 4 (images/s: training, inference)")
    cpu_t, cpu_i = maskrcnn_rates("cpu", False, 512, 8)
    print(f"  CPU fp32   {cpu_t:7.2f} {cpu_i:7.2f}")
    for amp in (False, True):
        t, i = maskrcnn_rates("cuda", amp, 512, 64)
        print(f"  CUDA {'bf16' if amp else 'fp32'}  {t:7.2f} {i:7.2f}   ÷ CPU = {t / cpu_t:5.1f}, {i / cpu_i:5.1f}")

    print("\nsliding window, one 8192x8192 image, 512 tiles, overlap 0.25, Gaussian (s, peak GiB)")
    for tile_batch in (4, 32):
        for amp in (False, True):
            secs, peak = sliding_peak(gpu, 8192, tile_batch, amp)
            print(f"  tile_batch {tile_batch:3d} {'bf16' if amp else 'fp32'}: {secs:6.2f} s  peak {peak:5.2f} GiB")


if __name__ == "__main__":
    main()

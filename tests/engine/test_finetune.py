"""Fine-tuning without Ray: the optimizer's backbone group (frozen epochs, learning-rate multiplier,
warm-up), and 2-epoch fine-tunes from weights trained here on the same kind of generated data
beating the same 2 epochs from scratch (Dice for smp, mask AP50 for Mask R-CNN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segops.config.schema import MaskRCNNSpec, PreprocessSpec, SmpSpec, TrainStep, WindowIntensity
from segops.data.instances import stack_instances
from segops.engine.checkpoint import LoadedModel, save_checkpoint
from segops.engine.detect import detection_batch, detection_train_steps, predict_instances
from segops.engine.instance_eval import entries_ap, eval_entry
from segops.engine.train import build_optimizer, lr_factor, train_steps, training_batch, validation_sums
from segops.losses import build_loss
from segops.models import build_model, load_weights

CPU = torch.device("cpu")
PRE = PreprocessSpec(intensity=WindowIntensity(kind="window", lower=0, upper=255), patch_size=(64, 64))
SMP = SmpSpec(arch="smp", encoder="resnet18")
RCNN = MaskRCNNSpec(
    arch="maskrcnn",
    min_size=64,
    max_size=64,
    anchor_sizes=(8, 16, 32, 64, 128),
    box_batch_size_per_image=32,
    score_threshold=0.05,
)


def _step(model: SmpSpec | MaskRCNNSpec, **kw) -> TrainStep:
    return TrainStep(step="train", model=model, preprocess=PRE, batch_size=4, **kw)


def test_schedule_warm_up_and_frozen_backbone_factors() -> None:
    step = _step(SMP, epochs=10, warmup_epochs=2, freeze_backbone_epochs=3)
    poly = [(1 - e / 10) ** 0.9 for e in range(10)]
    assert [lr_factor(e, step) for e in range(4)] == pytest.approx([poly[0] / 3, poly[1] * 2 / 3, poly[2], poly[3]])
    assert [lr_factor(e, step, backbone=True) for e in range(5)] == pytest.approx([0, 0, 0, poly[3], poly[4]])


def test_backbone_group_is_frozen_then_trains_at_its_multiplier() -> None:
    torch.manual_seed(0)
    model = build_model(SMP)
    step = _step(SMP, epochs=4, learning_rate=1e-3, freeze_backbone_epochs=1, backbone_lr_mult=0.1)
    optimizer, scheduler = build_optimizer(model, step)
    head, backbone = optimizer.param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.encoder.parameters()}
    assert len(head["params"]) + len(backbone["params"]) == len(list(model.parameters()))
    assert head["lr"] == pytest.approx(1e-3) and backbone["lr"] == 0.0

    rng = np.random.default_rng(0)
    batch = training_batch(_discs(4, 0), PRE, 1, rng)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, [batch], build_loss("dice_ce"), optimizer, CPU)
    after = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.equal(before["encoder.layer2.0.conv1.weight"], after["encoder.layer2.0.conv1.weight"])
    assert not torch.equal(before["decoder.blocks.0.conv1.0.weight"], after["decoder.blocks.0.conv1.0.weight"])
    scheduler.step()
    assert backbone["lr"] == pytest.approx(1e-4 * (1 - 1 / 4) ** 0.9)
    train_steps(model, [batch], build_loss("dice_ce"), optimizer, CPU)
    assert not torch.equal(after["encoder.layer2.0.conv1.weight"], model.state_dict()["encoder.layer2.0.conv1.weight"])

    plain, _ = build_optimizer(model, _step(SMP, epochs=4))  # no controls: one group, as before
    assert len(plain.param_groups) == 1


def _discs(n: int, seed: int, size: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """Faint dark pits (two discs, radius 4-8) in noisy gray 64 px images; label 1 on the pits."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    pairs = []
    for _ in range(n):
        image = rng.normal(100, 25, (1, size, size)).astype(np.float32)
        label = np.zeros((size, size), np.uint8)
        for _ in range(2):
            cy, cx, r = rng.integers(10, size - 10), rng.integers(10, size - 10), rng.integers(4, 9)
            label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        image[0][label == 1] -= 35
        pairs.append((image, label))
    return pairs


def _fit_semantic(model: torch.nn.Module, step: TrainStep, data: list, seed: int) -> torch.nn.Module:
    optimizer, scheduler = build_optimizer(model, step)
    rng, loss = np.random.default_rng(seed), build_loss("dice_ce")
    for _ in range(step.epochs):
        batches = [training_batch(data[i : i + 4], PRE, 1, rng) for i in range(0, len(data), 4)]
        train_steps(model, batches, loss, optimizer, CPU)
        scheduler.step()
    return model


def _dice(model: torch.nn.Module, spec: SmpSpec, data: list) -> float:
    sums = validation_sums(LoadedModel(model, spec, PRE, {}), data, CPU)
    return sums.dice_sum / sums.cases


@pytest.mark.slow
def test_smp_fine_tune_from_a_checkpoint_beats_scratch(tmp_path: Path, fixed_threads) -> None:
    """Pretrain on one generated set, fine-tune 2 epochs on 8 images of another, score on a third."""
    torch.manual_seed(0)
    pretrained = _fit_semantic(build_model(SMP), _step(SMP, epochs=4), _discs(16, 1), seed=0)
    save_checkpoint(tmp_path / "pretrained", pretrained, SMP, PRE)
    train, test = _discs(8, 2), _discs(8, 3)
    scores = {}
    for name, spec in (
        ("scratch", SMP),
        ("fine-tuned", SMP.model_copy(update={"weights_path": tmp_path / "pretrained"})),
    ):
        torch.manual_seed(1)
        model = build_model(spec)
        assert len(load_weights(model, spec)) == (name == "fine-tuned")
        scores[name] = _dice(_fit_semantic(model, _step(spec, epochs=2), train, seed=1), spec, test)
    assert scores["fine-tuned"] > scores["scratch"] + 0.2, scores


def _squares(n: int, seed: int, size: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to two bright non-overlapping squares (class 1 instances) on noise."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        image = rng.normal(40, 10, (1, size, size)).astype(np.float32)
        masks: list[np.ndarray] = []
        for _ in range(2):
            y, x, s = rng.integers(2, size - 22), rng.integers(2, size - 22), rng.integers(10, 20)
            mask = np.zeros((size, size), bool)
            mask[y : y + s, x : x + s] = True
            if masks and (mask & masks[0]).any():
                continue
            image[0][mask] += 150
            masks.append(mask)
        pairs.append((image, stack_instances(masks, [1] * len(masks), (size, size))))
    return pairs


def _fit_instances(model: torch.nn.Module, step: TrainStep, data: list, seed: int) -> torch.nn.Module:
    optimizer, scheduler = build_optimizer(model, step)
    rng = np.random.default_rng(seed)
    for _ in range(step.epochs):
        batches = [detection_batch(data[i : i + 4], PRE, 1, rng) for i in range(0, len(data), 4)]
        detection_train_steps(model, batches, optimizer, CPU)
        scheduler.step()
    return model


def _ap50(model: torch.nn.Module, spec: MaskRCNNSpec, data: list) -> float:
    loaded = LoadedModel(model.eval(), spec, PRE, {})
    entries = []
    for i, (image, label) in enumerate(data):
        (pred,) = predict_instances(loaded, [image])
        entries.append(eval_entry(i, pred.masks, pred.scores, pred.classes, label))
    return entries_ap(entries, spec.classes)["ap50"]


@pytest.fixture
def fixed_threads():
    """Two torch threads, whatever earlier tests in the process left: Mask R-CNN's CPU kernels give
    other sums with other thread counts, so the count must be fixed; two (this machine's cores) runs
    the Mask R-CNN test in 33 s instead of 51 s with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_maskrcnn_fine_tune_from_a_weights_file_beats_scratch(tmp_path: Path, fixed_threads) -> None:
    torch.manual_seed(0)
    pretrained = _fit_instances(build_model(RCNN), _step(RCNN, epochs=6), _squares(16, 1), seed=0)
    torch.save({"model": pretrained.state_dict()}, tmp_path / "pretrained.pth")  # a torchvision-references layout
    train, test = _squares(8, 2), _squares(8, 3)
    scores = {}
    for name, spec in (
        ("scratch", RCNN),
        ("fine-tuned", RCNN.model_copy(update={"weights_path": tmp_path / "pretrained.pth"})),
    ):
        torch.manual_seed(1)
        model = build_model(spec)
        load_weights(model, spec)
        scores[name] = _ap50(
            _fit_instances(model, _step(spec, epochs=2, learning_rate=2e-4), train, seed=1), spec, test
        )
    assert scores["fine-tuned"] > scores["scratch"] + 0.1, scores

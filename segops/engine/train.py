"""One epoch of training and one pass of validation (plain torch, no Ray).

The Ray Train worker loop in :mod:`segops.cluster.train` feeds these from its dataset shard;
tests call them directly on in-memory arrays.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segops.config.schema import AugmentSpec, PreprocessSpec, TrainStep
from segops.data.augment import Augmenter
from segops.data.transforms import prepare_image, random_patch, rescale_label
from segops.engine.checkpoint import LoadedModel
from segops.engine.optim import check_progress, clipped_step
from segops.engine.precision import autocast
from segops.engine.predict import predict_masks
from segops.metrics import case_scores
from segops.models import backbone_of


class ForegroundReservoir:
    """The most recent foreground-bearing (prepared image, label) pairs a worker has seen.

    Lets a batch drawn only from defect-free images still get its share of foreground-centred
    patches (:func:`training_batch`). Bounded twice: at most ``capacity`` pairs and
    ``max_bytes`` in all (the oldest leave first), so a 3D worker does not hoard volumes.
    Pairs are normalised ``(C, *spatial)`` float32 images and ``(*spatial)`` uint8 class maps.
    """

    def __init__(self, capacity: int = 16, max_bytes: int = 256 * 2**20):
        self.capacity, self.max_bytes = capacity, max_bytes
        self._pairs: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, image: np.ndarray, label: np.ndarray) -> None:
        """Keep ``(image, label)`` if ``label`` has foreground; ignore it otherwise."""
        if not label.any():
            return
        label = label.copy()  # may be a view into a whole Ray batch, which it would keep alive
        self._pairs.append((image, label))
        self._bytes += image.nbytes + label.nbytes
        while len(self._pairs) > 1 and (len(self._pairs) > self.capacity or self._bytes > self.max_bytes):
            old_image, old_label = self._pairs.popleft()
            self._bytes -= old_image.nbytes + old_label.nbytes

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One stored pair, uniformly at random."""
        return self._pairs[int(rng.integers(len(self._pairs)))]


def epoch_rows(rows: int, world: int, samples: int | None, seed: int, epoch: int, rank: int) -> np.ndarray | None:
    """Which rows of one rank's shard train in ``epoch`` (``TrainStep.samples_per_epoch``), as a
    boolean mask over the shard's rows; None: all of them.

    Ray Train splits ``rows`` training rows equally over ``world`` ranks (``rows // world`` each, the
    remainder dropped), so every rank takes the same ``ceil(samples / world)`` of its share and
    all ranks run the same number of steps (DDP needs that). Drawn without repeats from a stream
    seeded by (seed, epoch, rank): reproducible, a new draw each epoch, the same after a resume.
    """
    share = rows // max(world, 1)
    if samples is None or share == 0:
        return None
    take = math.ceil(samples / max(world, 1))
    if take >= share:
        return None
    rng = np.random.default_rng([seed, epoch, rank])
    keep = np.zeros(share, dtype=bool)
    keep[rng.choice(share, size=take, replace=False)] = True
    return keep


def forced_foreground_count(n_patches: int, share: float) -> int:
    """Patches of a batch of ``n_patches`` that must be centred on foreground: ``ceil(share * n)``
    (nnU-Net's 0.33 of a batch of 8: 3), so the share is a floor, also for small batches."""
    return min(n_patches, math.ceil(share * n_patches - 1e-9)) if share > 0 else 0


def training_batch(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    preprocess: PreprocessSpec,
    in_channels: int,
    rng: np.random.Generator,
    patches_per_image: int = 1,
    augmenter: Augmenter | None = None,
    foreground_oversample: float = 0.0,
    reservoir: ForegroundReservoir | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, label) pairs → augmented patch tensors.

    Patches are sampled with ``rng``, then augmented by ``augmenter`` (default: random flips
    and 90° rotations, seeded from ``rng``). A 3-size ``preprocess.patch_size`` means pairs
    of (C, Z, H, W) volumes and (Z, H, W) labels, and 3D patches.

    Foreground oversampling (nnU-Net's ``oversample_foreground_percent``): at least
    ``foreground_oversample`` of the patches are centred on a foreground pixel. Patches of the
    batch's foreground-bearing images are used first; where those are too few (a batch of
    defect-free images), patches of empty images are replaced by patches of pairs drawn from
    ``reservoir`` (which is first fed this batch's foreground-bearing images). Other patches
    are centred on foreground with probability 0.5 when their image has any.

    Returns:
        x: (N, in_channels, *patch_size) float32; y: (N, 1, *patch_size) int64 class indices.
    """
    dims = len(preprocess.patch_size)
    if augmenter is None:
        augmenter = Augmenter(AugmentSpec(), int(rng.integers(2**31)), spatial_dims=dims)
    scale = preprocess.scale if dims == 2 else 1.0  # volumes are never resized
    prepared = [
        (prepare_image(image, preprocess.intensity, in_channels, dims, scale), rescale_label(label, scale))
        for image, label in pairs
    ]
    if reservoir is not None:
        for image, label in prepared:
            reservoir.add(image, label)
    slots = [pair for pair in prepared for _ in range(patches_per_image)]
    forced = _force_foreground(slots, forced_foreground_count(len(slots), foreground_oversample), rng, reservoir)
    xs, ys = [], []
    for k, (image, label) in enumerate(slots):
        x, y = augmenter(*random_patch(image, label, preprocess.patch_size, rng, 1.0 if k in forced else 0.5))
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)[:, None].astype(np.int64))


def _force_foreground(
    slots: list[tuple[np.ndarray, np.ndarray]],
    n_forced: int,
    rng: np.random.Generator,
    reservoir: ForegroundReservoir | None,
) -> set[int]:
    """Pick ``n_forced`` slot indices to centre on foreground, swapping reservoir pairs into
    empty slots (in place) where the batch's own foreground slots are too few."""
    if n_forced == 0:
        return set()
    has_fg = np.array([bool(label.any()) for _, label in slots])
    own = rng.permutation(np.flatnonzero(has_fg))[:n_forced].tolist()
    missing = n_forced - len(own)
    if missing == 0 or reservoir is None or len(reservoir) == 0:
        return set(own)
    empty = rng.permutation(np.flatnonzero(~has_fg))[:missing].tolist()
    for k in empty:
        slots[k] = reservoir.draw(rng)
    return set(own) | set(empty)


def train_steps(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp: bool = False,
) -> tuple[float, int]:
    """Run one optimisation step per batch (forward and loss under bf16 autocast when ``amp`` on CUDA),
    the gradient norm clipped at nnU-Net's 12; a step whose gradient is not finite is skipped
    (:func:`segops.engine.optim.clipped_step`) and left out of the sums.

    Returns:
        (sum of per-sample loss, number of samples), so callers can average across workers.

    Raises:
        StepError: every step of the epoch was skipped (:data:`segops.engine.optim.DIVERGED`).
    """
    model.train()
    total, count, steps, taken = 0.0, 0, 0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(model(x), y)
        loss.backward()
        steps += 1
        if clipped_step(model, optimizer) and math.isfinite(loss_value := float(loss.detach())):
            taken += 1
            total += loss_value * len(x)
            count += len(x)
    check_progress(taken, steps)
    return total, count


@dataclass(frozen=True)
class ValidationSums:
    """Per-case Dice sums of one validation pass, to be summed across workers before dividing.

    ``fg_*`` count only the cases whose label has foreground: on data where most cases are empty
    (defect-free parts), the overall mean is dominated by empty cases a model that predicts
    nothing scores 1.0 on, while the foreground mean shows whether anything was learnt.
    """

    dice_sum: float
    cases: int
    fg_dice_sum: float
    fg_cases: int


def select_metric(cases: int, fg_cases: int) -> str:
    """The validation metric that chooses the checkpoint: ``val_fg_dice`` when more than half of
    the validation cases are empty (there, a model that predicts nothing scores ~1 on most cases
    and the overall mean hides that it learnt nothing), else ``val_dice``. Decided from the
    counts of the validation pass, which are the same every epoch."""
    return "val_fg_dice" if fg_cases > 0 and cases - fg_cases > cases / 2 else "val_dice"


def validation_sums(
    loaded: LoadedModel,
    pairs: Iterable[tuple],
    device: torch.device,
    amp: bool = False,
) -> ValidationSums:
    """Whole-image Dice on validation cases (per volume for a 3D model, through the 3D sliding
    window), exactly as the segment step computes it, over all cases and over foreground cases.
    ``pairs``: (image, label), or (image, label, scale) where the image is resized by ``scale``
    for the network (``preprocess.spacing``) and its scores back to the label's size."""
    loaded.model.eval()
    total, count, fg_total, fg_count = 0.0, 0, 0.0, 0
    for image, label, *scale in pairs:
        (pred,) = predict_masks(loaded, [image], device, amp, scales=scale or None)
        dice = case_scores(pred, label, loaded.model_spec.classes)["dice"]
        total, count = total + dice, count + 1
        if label.any():
            fg_total, fg_count = fg_total + dice, fg_count + 1
    return ValidationSums(total, count, fg_total, fg_count)


def validation_dice(
    loaded: LoadedModel,
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    device: torch.device,
    amp: bool = False,
) -> tuple[float, int]:
    """(sum of per-case Dice, number of cases) of :func:`validation_sums`."""
    sums = validation_sums(loaded, pairs, device, amp)
    return sums.dice_sum, sums.cases


def lr_factor(epoch: int, step: TrainStep, backbone: bool = False) -> float:
    """The learning rate of ``epoch`` as a multiple of a parameter group's base rate.

    nnU-Net's polynomial decay ``(1 - epoch / epochs) ** 0.9``, times a linear warm-up
    ``(epoch + 1) / (warmup_epochs + 1)`` in the first ``warmup_epochs`` epochs; for the backbone's
    group 0 in the first ``freeze_backbone_epochs`` (its weights stay as loaded while the new heads settle).
    """
    if backbone and epoch < step.freeze_backbone_epochs:
        return 0.0
    factor = (1 - epoch / step.epochs) ** 0.9
    if epoch < step.warmup_epochs:
        factor *= (epoch + 1) / (step.warmup_epochs + 1)
    return factor


def build_optimizer(
    model: nn.Module, step: TrainStep
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its per-epoch schedule (:func:`lr_factor`; call ``scheduler.step()`` after each epoch).

    With ``freeze_backbone_epochs`` or ``backbone_lr_mult`` (archs with a backbone, see
    :func:`segops.models.backbone_of`) the backbone's parameters form a second group at
    ``learning_rate * backbone_lr_mult``; the first group is always the rest (or everything).
    Freezing by a zero learning rate rather than ``requires_grad`` keeps the DDP reducer's
    parameter set fixed; batch-norm statistics of a frozen backbone still follow the data.
    """
    lr = step.learning_rate
    backbone = backbone_of(model, step.model)
    if backbone is None or (step.freeze_backbone_epochs == 0 and step.backbone_lr_mult == 1):
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=step.weight_decay)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, step))
    inside = {id(p) for p in backbone.parameters()}
    rest = [p for p in model.parameters() if id(p) not in inside]
    groups = [{"params": rest, "lr": lr}, {"params": list(backbone.parameters()), "lr": lr * step.backbone_lr_mult}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=step.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lambda e: lr_factor(e, step), lambda e: lr_factor(e, step, backbone=True)]
    )
    return optimizer, scheduler

"""Encoder embeddings: a model's pooled bottleneck features, and their distance to the training cases'.

What an image "looks like" to the model: U-Net (MONAI ``UNet``) and DynUNet give the
global-average-pooled output of their deepest encoder level, caught by a forward hook that then
stops the pass (the decoder never runs, so an embedding costs about half a prediction); Mask R-CNN
gives the pooled last feature map of its backbone body (C5 of the ResNet), before the FPN. An
ensemble checkpoint (``train.folds``) concatenates its members' embeddings.

The training cases' embeddings are summarised by :class:`EmbeddingReference` (per-dimension mean
and std, stored with the model as ``embeddings.npz``). A case's distance is the root mean square
of its z-scores over the dimensions (a diagonal Mahalanobis distance, divided by sqrt(D)); it is
read against the training cases' own out-of-sample distances (two halves, each scored against
the other's mean and std), so ``ratio`` ~ 1 means "as far as the 95th percentile of training".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import DynUNet, UNet
from torch import nn

from segops.data.transforms import pad_to_multiple, prepare_image
from segops.engine.checkpoint import LoadedModel
from segops.engine.ensemble import SoftmaxEnsemble
from segops.engine.precision import inference_autocast
from segops.errors import CheckpointError, ShapeError

#: The file in a checkpoint folder that holds the training cases' :class:`EmbeddingReference`.
EMBEDDINGS_FILE = "embeddings.npz"
#: Training cases embedded after training (2D images; volumes: :data:`MAX_REFERENCE_VOLUMES`).
MAX_REFERENCE_CASES = 200
MAX_REFERENCE_VOLUMES = 32
#: Whole-image embedding up to this many pixels; larger images (and every volume) are cut to a
#: centred crop of the training patch size.
MAX_PIXELS = 1024 * 1024


class _Captured(Exception):  # noqa: N818  (control flow, never seen by users)
    """Raised by the bottleneck hook to end the forward pass once the features are caught."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.features = features


def bottleneck(net: nn.Module) -> nn.Module:
    """The deepest encoder level of a U-Net: DynUNet's ``bottleneck``; in MONAI's ``UNet`` the
    submodule of the innermost skip connection.

    Raises:
        CheckpointError: ``net`` is neither.
    """
    if isinstance(net, DynUNet):
        return net.bottleneck
    if isinstance(net, UNet):
        skips = [m for m in net.modules() if isinstance(m, SkipConnection)]
        return skips[-1].submodule  # modules() visits outer levels first
    encoder = getattr(net, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer4"):  # arch smp: its ResNet encoder's last stage
        return encoder.layer4
    raise CheckpointError(f"no encoder bottleneck known for a {type(net).__name__}; expected MONAI UNet or DynUNet")


def embed(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    device: str | torch.device = "cpu",
    amp: bool = False,
    batch_size: int = 8,
) -> np.ndarray:
    """(N, D) float32 embeddings of raw record images, one row per image in order.

    Args:
        images: each (C, H, W) float32 as decoded (before intensity normalisation); (C, Z, H, W)
            for a 3D model. The result of an image does not depend on the others given with it.
        amp: bfloat16 autocast on CUDA, and on a CPU with bfloat16 in hardware
            (:func:`segops.engine.precision.inference_autocast`).
    """
    if not len(images):
        return np.zeros((0, 0), np.float32)
    dev = torch.device(device)
    members = list(loaded.model.members) if isinstance(loaded.model, SoftmaxEnsemble) else [loaded.model]
    with torch.inference_mode(), inference_autocast(dev, amp):
        if loaded.model_spec.task == "instance":
            parts = [_backbone_embeddings(m, loaded, images, dev) for m in members]
        else:
            prepared = [_network_input(loaded, image) for image in images]
            parts = [_bottleneck_embeddings(m, prepared, dev, batch_size) for m in members]
    return np.concatenate(parts, axis=1).astype(np.float32)


class BottleneckTap:
    """Embeddings caught during a prediction, so the encoder does not run a second time.

    A 2D semantic prediction of an image that goes through the network whole (not tiled) feeds it
    the same input :func:`embed` does: the normalised image padded to the size divisor. While the
    tap is open, a forward hook on each member's bottleneck (:func:`bottleneck`; the members of a
    fold ensemble, else the model) keeps the pooled features of that member's *first* pass since
    :meth:`start`, which is the unmirrored input (mirroring and member votes run the plain input
    first). :func:`segops.engine.predict.predict` calls :meth:`start` before a whole-image batch
    and :meth:`keep` after it; the embeddings equal :func:`embed`'s (same input, same pooling).

    Images that were tiled, or that :func:`embed` would crop (over :data:`MAX_PIXELS`), get no row:
    :meth:`embeddings` leaves them to :func:`embed`. Use as a context manager (the hooks are
    removed on exit).
    """

    def __init__(self, loaded: LoadedModel):
        if loaded.model_spec.task != "semantic" or loaded.model_spec.spatial_dims != 2:
            raise CheckpointError("a bottleneck tap takes 2D semantic models")
        model = loaded.model
        self._members = list(model.members) if isinstance(model, SoftmaxEnsemble) else [model]
        self._caught: list[torch.Tensor | None] = [None] * len(self._members)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.rows: dict[int, np.ndarray] = {}

    def __enter__(self) -> BottleneckTap:
        try:
            for i, member in enumerate(self._members):
                self._handles.append(bottleneck(member).register_forward_hook(self._hook(i)))
        except CheckpointError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, i: int) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def keep_first(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if self._caught[i] is None:
                self._caught[i] = output.float().mean(dim=tuple(range(2, output.ndim)))

        return keep_first

    @staticmethod
    def takes(padded_shape: Sequence[int]) -> bool:
        """Whether an image whose network input has this (C, H, W) shape is embedded whole by
        :func:`embed` (so its prediction's bottleneck is its embedding)."""
        return int(np.prod(padded_shape[1:])) <= MAX_PIXELS

    def start(self) -> None:
        """Forget what the last batch left: the next pass of each member is kept."""
        self._caught = [None] * len(self._members)

    def keep(self, indices: Sequence[int]) -> None:
        """The batch just predicted held the images at ``indices`` (in this order): keep their rows."""
        if any(c is None or len(c) != len(indices) for c in self._caught):
            return  # a member did not run on this batch as a whole: leave these images to embed()
        pooled = torch.cat(self._caught, dim=1).cpu().numpy()  # type: ignore[arg-type]
        for i, row in zip(indices, pooled):
            self.rows[i] = row

    def embeddings(
        self, loaded: LoadedModel, images: Sequence[np.ndarray], device: str | torch.device, amp: bool
    ) -> np.ndarray:
        """(N, D) embeddings of ``images`` (the prediction's inputs, in order): the caught rows, and
        :func:`embed` for the images the prediction did not take whole."""
        missing = [i for i in range(len(images)) if i not in self.rows]
        rest = embed(loaded, [images[i] for i in missing], device, amp) if missing else None
        out = dict(self.rows)
        if rest is not None:
            out.update(zip(missing, rest))
        return np.stack([out[i] for i in range(len(images))]).astype(np.float32)


def _network_input(loaded: LoadedModel, image: np.ndarray) -> np.ndarray:
    """Normalised input padded to the size divisor (2D: and up to the training patch size, as
    :func:`~segops.engine.predict.predict` pads it); volumes and very large images cut to a
    centred crop of the training patch size first."""
    spec, pre = loaded.model_spec, loaded.preprocess
    arr = prepare_image(image, pre.intensity, spec.in_channels, spec.spatial_dims, pre.scale)  # as it segments
    spatial = arr.shape[1:]
    if spec.spatial_dims == 3 or int(np.prod(spatial)) > MAX_PIXELS:
        crop = tuple(min(n, p) for n, p in zip(spatial, pre.patch_size))
        arr = arr[(slice(None), *(slice((n - c) // 2, (n - c) // 2 + c) for n, c in zip(spatial, crop)))]
    min_size = pre.patch_size if spec.spatial_dims == 2 else ()
    return pad_to_multiple(np.ascontiguousarray(arr), spec.size_divisor, min_size)


def _bottleneck_embeddings(
    net: nn.Module, prepared: list[np.ndarray], dev: torch.device, batch_size: int
) -> np.ndarray:
    """Pooled bottleneck features of each prepared input; equal shapes are batched together."""
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, arr in enumerate(prepared):
        by_shape[arr.shape].append(i)
    out: list[np.ndarray | None] = [None] * len(prepared)

    def catch(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        raise _Captured(output)

    handle = bottleneck(net).register_forward_hook(catch)
    try:
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = torch.from_numpy(np.stack([prepared[i] for i in chunk])).to(dev)
                try:
                    net(batch)
                except _Captured as caught:
                    pooled = caught.features.float().mean(dim=tuple(range(2, caught.features.ndim)))
                else:  # pragma: no cover  (the hook always fires on these networks)
                    raise CheckpointError("the bottleneck hook did not fire")
                for i, row in zip(chunk, pooled.cpu().numpy()):
                    out[i] = row
    finally:
        handle.remove()
    return np.stack(out)  # type: ignore[arg-type]


def _backbone_embeddings(
    net: nn.Module, loaded: LoadedModel, images: Sequence[np.ndarray], dev: torch.device
) -> np.ndarray:
    """Mask R-CNN: the pooled last map of the backbone body, one image at a time (a batch would
    pad images to a common size, and the padding would enter the mean)."""
    spec = loaded.model_spec
    rows = []
    for image in images:
        x = torch.from_numpy(prepare_image(image, loaded.preprocess.intensity, spec.in_channels)).to(dev)
        batch, _ = net.transform([x])
        features = list(net.backbone.body(batch.tensors).values())[-1]
        rows.append(features.float().mean(dim=(2, 3))[0].cpu().numpy())
    return np.stack(rows)


@dataclass(frozen=True)
class EmbeddingReference:
    """The training cases' embeddings, summarised.

    Attributes:
        mean, std: (D,) per-dimension mean and std (std floored at a tenth of the median std, so
            a dimension that never varied in training does not dominate every distance).
        distances: (n,) the training cases' out-of-sample distances (see :meth:`from_embeddings`).
        sample: (n, D) the training embeddings themselves (at most :data:`MAX_REFERENCE_CASES`).
    """

    mean: np.ndarray
    std: np.ndarray
    distances: np.ndarray
    sample: np.ndarray

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, seed: int = 0) -> EmbeddingReference:
        """Mean and std over all of ``embeddings`` (n, D); each case's calibration distance is taken
        against the mean and std of the other half of a seeded split (n >= 4), so training distances
        are out-of-sample, as a new case's are.

        Raises:
            ShapeError: ``embeddings`` is not 2D with at least 4 rows.
        """
        emb = np.asarray(embeddings, np.float64)
        if emb.ndim != 2 or len(emb) < 4:
            raise ShapeError(f"expected (n >= 4, D) training embeddings, got shape {emb.shape}")
        order = np.random.default_rng(seed).permutation(len(emb))
        halves = order[: len(emb) // 2], order[len(emb) // 2 :]
        distances = np.zeros(len(emb))
        for mine, other in (halves, halves[::-1]):
            ref = _stats(emb[other])
            distances[mine] = _distance(emb[mine], *ref)
        mean, std = _stats(emb)
        return cls(mean, std, distances, emb.astype(np.float32))

    def distance(self, embeddings: np.ndarray) -> np.ndarray:
        """(N,) distances of (N, D) embeddings: the RMS over dimensions of their z-scores."""
        emb = np.asarray(embeddings, np.float64)
        if emb.ndim != 2 or emb.shape[1] != len(self.mean):
            raise ShapeError(f"expected (N, {len(self.mean)}) embeddings of this model, got shape {emb.shape}")
        return _distance(emb, self.mean, self.std)

    @property
    def p95(self) -> float:
        """The training cases' 95th percentile distance."""
        return float(np.percentile(self.distances, 95))

    def ratio(self, distances: np.ndarray) -> float:
        """Median of ``distances`` as a multiple of the training 95th percentile (NaN when empty)."""
        return float(np.median(distances) / self.p95) if len(distances) else float("nan")

    def save(self, path: str | Path) -> Path:
        """Write the reference as ``.npz`` (a temporary name, then renamed); returns ``path``."""
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, mean=self.mean, std=self.std, distances=self.distances, sample=self.sample)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingReference:
        with np.load(Path(path)) as f:
            return cls(f["mean"], f["std"], f["distances"], f["sample"])


def _stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = emb.std(axis=0)
    return emb.mean(axis=0), np.maximum(std, 0.1 * float(np.median(std)) + 1e-8)


def _distance(emb: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.sqrt((((emb - mean) / std) ** 2).mean(axis=1))

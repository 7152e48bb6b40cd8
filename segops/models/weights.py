"""Starting weights: published ones from the local caches, or any local file; loaded non-strictly.

Nothing is ever downloaded. A torchvision weights enum names a URL; ``torch.hub`` caches that
URL's file under ``$TORCH_HOME/hub/checkpoints/<file name from the URL>`` and loads an existing
file without a hash check. This module reads that file itself when it is there (so ``torch.hub``
never gets the chance to download) and otherwise raises one :class:`~segops.errors.CheckpointError`
naming the file, the folder it belongs in and the URL it comes from.

Sources, per spec (:func:`weights_sources`):

* Mask R-CNN ``weights: coco``: torchvision's ``DEFAULT`` COCO weights of ``maskrcnn_resnet50_fpn``
  / ``_v2`` for the whole network, without the box and mask predictors (the network's are
  sized for ``classes``, as in torchvision's fine-tuning tutorial);
* Mask R-CNN ``backbone_weights: imagenet``: torchvision's ImageNet ResNet-18/50 into the FPN
  backbone's ResNet (``backbone.body``), without the classifier;
* smp ``encoder_weights: imagenet``: torchvision's ImageNet ResNet into ``encoder`` (smp's ResNet
  encoders are torchvision ResNets without the classifier), or, when only that is cached, smp's
  own copy in the Hugging Face cache; the first convolution adapted to ``in_channels`` as smp does;
* ``weights_path`` (any arch): a segops checkpoint (folder or ``model.pt``), a torchvision or
  plain ``state_dict`` file (``torch.load(weights_only=True)``; ``{"model": …}``,
  ``{"state_dict": …}`` wrappers and DDP's ``module.`` prefix are unwrapped) or a ``.safetensors``
  file, for the whole network.

Every load reports missing, unexpected and shape-mismatched keys (:class:`LoadReport`); a file
none of whose tensors fits is an error, not a silent random start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    ResNet152_Weights,
)
from torchvision.models._api import WeightsEnum
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_V2_Weights, MaskRCNN_ResNet50_FPN_Weights

from segops.errors import CheckpointError

log = logging.getLogger(__name__)

#: segops.engine.checkpoint's file names (the engine imports models, not the reverse).
_SEGOPS_WEIGHTS, _SEGOPS_META = "model.pt", "segops.json"
#: Keys of wrapper dicts that hold the state dict in common training checkpoints.
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "model_state", "net")
#: COCO heads the network replaces for its own ``classes``.
_COCO_HEADS = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")

_COCO = {
    "resnet50_fpn": MaskRCNN_ResNet50_FPN_Weights.DEFAULT,
    "resnet50_fpn_v2": MaskRCNN_ResNet50_FPN_V2_Weights.DEFAULT,
}
_IMAGENET = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": ResNet101_Weights.IMAGENET1K_V1,
    "resnet152": ResNet152_Weights.IMAGENET1K_V1,
}


@dataclass(frozen=True)
class WeightsSource:
    """One file of starting weights and the part of the network it is for.

    Attributes:
        origin: what was asked for, for lineage (``torchvision:ResNet18_Weights.IMAGENET1K_V1``,
            ``smp-hub:smp-hub/resnet18.imagenet``, ``file``).
        path: the file read.
        target: dotted name of the submodule the state dict belongs to ('' for the whole network).
        url: where a published file comes from (None for a local file).
        skip: key prefixes deliberately not loaded (heads replaced for ``classes``, a classifier).
        first_conv: key of the first convolution, whose input channels are adapted as smp does.
    """

    origin: str
    path: Path
    target: str = ""
    url: str | None = None
    skip: tuple[str, ...] = ()
    first_conv: str | None = None


@dataclass(frozen=True)
class LoadReport:
    """What one :class:`WeightsSource` did to the network.

    ``missing`` are the target's tensors the file did not set, ``unexpected`` the file's tensors
    the target lacks (batch-norm ``num_batches_tracked`` counters left out of both), ``mismatched`` those
    of another shape (``(key, file shape, network shape)``), ``skipped`` those left out on purpose.
    """

    origin: str
    file: str
    sha256: str
    target: str
    url: str | None
    loaded: int
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    skipped: tuple[str, ...] = field(default=())

    def lineage(self) -> dict[str, Any]:
        """Origin, file and content hash: what the checkpoint's ``segops.json`` and MLflow record."""
        return {"origin": self.origin, "file": self.file, "sha256": self.sha256, "target": self.target or "model"}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.origin} ({self.file}) → {self.target or 'model'}: {self.loaded} tensors loaded, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.mismatched)} of another "
            f"shape, {len(self.skipped)} skipped"
        )


def weights_sources(spec: Any) -> list[WeightsSource]:
    """The files ``spec`` starts from, in load order (empty: a random start).

    Raises:
        CheckpointError: a published file is not in the local cache, or ``weights_path`` does not exist.
    """
    arch = spec.arch
    sources: list[WeightsSource] = []
    if arch == "maskrcnn" and spec.weights == "coco":
        sources.append(_hub_source(_COCO[spec.backbone], "model.weights: coco", skip=_COCO_HEADS))
    if arch == "maskrcnn" and spec.backbone_weights == "imagenet":
        enum = _IMAGENET["resnet18" if spec.backbone == "resnet18_fpn" else "resnet50"]
        sources.append(_hub_source(enum, "model.backbone_weights: imagenet", target="backbone.body", skip=("fc.",)))
    if arch == "smp" and spec.encoder_weights == "imagenet":
        sources.append(_encoder_source(spec.encoder))
    path = getattr(spec, "weights_path", None)
    if path is not None:
        file = _weights_file(Path(path))
        sources.append(WeightsSource("file", file, first_conv="encoder.conv1.weight" if arch == "smp" else None))
    return sources


def load_weights(model: nn.Module, spec: Any) -> list[LoadReport]:
    """Load every source of ``spec`` into ``model`` (built by :func:`segops.models.build_model`).

    Raises:
        CheckpointError: a source is missing or unreadable, or none of its tensors fits.
    """
    reports = [load_source(model, source) for source in weights_sources(spec)]
    for report in reports:
        log.info("starting weights: %s", report.summary())
        for key, have, want in report.mismatched:
            log.warning("  not loaded, shape %s in the file, %s in the network: %s", list(have), list(want), key)
        if report.missing:
            log.info("  left at their initial values: %s", _abbrev(report.missing))
        if report.unexpected:
            log.info("  in the file, not in the network: %s", _abbrev(report.unexpected))
    return reports


def load_source(model: nn.Module, source: WeightsSource) -> LoadReport:
    """One source into ``model``'s ``source.target`` submodule, non-strictly."""
    module = model.get_submodule(source.target) if source.target else model
    state = read_state_dict(source.path)
    loaded, missing, unexpected, mismatched, skipped = load_matching(module, state, source.skip, source.first_conv)
    if loaded == 0:
        raise CheckpointError(
            f"{source.path} ({source.origin}) matches none of the {len(module.state_dict())} tensors of "
            f"{source.target or 'the network'}: not a starting point for this model. File keys: "
            f"{_abbrev(list(state))}; network keys: {_abbrev(list(module.state_dict()))}"
            + (f"; {len(mismatched)} key(s) have another shape, e.g. {mismatched[0]}" if mismatched else "")
        )
    return LoadReport(
        source.origin,
        str(source.path),
        sha256_file(source.path),
        source.target,
        source.url,
        loaded,
        tuple(missing),
        tuple(unexpected),
        tuple(mismatched),
        tuple(skipped),
    )


def load_matching(
    module: nn.Module, state: dict[str, torch.Tensor], skip: tuple[str, ...] = (), first_conv: str | None = None
) -> tuple[int, list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]], list[str]]:
    """Copy the tensors of ``state`` whose key and shape fit ``module``; leave the rest as they are.

    Returns:
        (tensors loaded, missing keys, unexpected keys, (key, file shape, module shape) of
        mismatched ones, skipped keys), see :class:`LoadReport`.
    """
    own = module.state_dict()
    state = _align_prefix(state, own)
    take: dict[str, torch.Tensor] = {}
    unexpected, mismatched, skipped = [], [], []
    for key, value in state.items():
        if skip and key.startswith(skip):
            skipped.append(key)
        elif key not in own:
            if not key.endswith("num_batches_tracked"):  # frozen batch norm has no counter
                unexpected.append(key)
        else:
            if key == first_conv and value.dim() == 4 and value.shape != own[key].shape:
                value = adapt_first_conv(value, own[key].shape[1])
            if value.shape != own[key].shape:
                mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
            else:
                take[key] = value
    if take:
        module.load_state_dict(take, strict=False)
    bad = {k for k, _, _ in mismatched}
    missing = [
        k
        for k in own
        if k not in take
        and k not in bad
        and not k.endswith("num_batches_tracked")
        and not (skip and k.startswith(skip))
    ]
    return len(take), missing, unexpected, mismatched, skipped


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """smp's ``patch_first_conv`` for pretrained weights: (O, 3, k, k) → (O, in_channels, k, k).

    One channel gets the sum of the RGB filters (a gray image repeated to RGB gives the same
    response); other counts cycle the filters and scale them by 3 / in_channels.
    """
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    index = [i % weight.shape[1] for i in range(in_channels)]
    return weight[:, index] * (weight.shape[1] / in_channels)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (see the module docstring for the accepted kinds).

    Raises:
        CheckpointError: unreadable with ``weights_only=True``, or no state dict inside.
    """
    path = _weights_file(Path(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True), which only accepts tensors and plain "
            "containers; a training checkpoint that pickles other objects (options, optimizers' classes) must be "
            f"re-saved as torch.save(model.state_dict(), ...): {str(exc).splitlines()[0]}"
        ) from exc
    state = _state_dict_of(obj)
    if state is None:
        raise CheckpointError(
            f"{path} holds no state dict: expected a dict of tensors, or one under "
            f"{', '.join(repr(k) for k in _WRAPPER_KEYS)}; got {type(obj).__name__}"
            + (f" with keys {_abbrev([str(k) for k in obj])}" if isinstance(obj, dict) else "")
        )
    return state


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hub_checkpoint_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps ``url``'s file: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _hub_source(enum: WeightsEnum, asked: str, target: str = "", skip: tuple[str, ...] = ()) -> WeightsSource:
    path = hub_checkpoint_path(enum.url)
    if not path.is_file():
        raise CheckpointError(_missing_message(asked, f"torchvision's {_enum_name(enum)}", enum.url, path))
    return WeightsSource(f"torchvision:{_enum_name(enum)}", path, target, enum.url, skip)


def _encoder_source(encoder: str) -> WeightsSource:
    """torchvision's ImageNet file for an smp ResNet encoder, else smp's own in the Hugging Face cache."""
    enum = _IMAGENET[encoder]
    path = hub_checkpoint_path(enum.url)
    skip, conv = ("fc.",), "conv1.weight"
    if path.is_file():
        return WeightsSource(f"torchvision:{_enum_name(enum)}", path, "encoder", enum.url, skip, conv)
    hub = _smp_hub_cached(encoder)
    if hub is not None:
        repo, cached = hub
        return WeightsSource(f"smp-hub:{repo}", cached, "encoder", f"https://huggingface.co/{repo}", skip, conv)
    message = _missing_message("model.encoder_weights: imagenet", f"torchvision's {_enum_name(enum)}", enum.url, path)
    raise CheckpointError(
        message + f" (smp's own copy, smp-hub/{encoder}.imagenet model.safetensors in the Hugging Face cache, "
        "is used too when present)"
    )


def _smp_hub_cached(encoder: str) -> tuple[str, Path] | None:
    """(repo id, cached file) of smp's ImageNet weights for ``encoder`` in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from segmentation_models_pytorch.encoders import encoders
    except ImportError:
        return None
    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if not settings:
        return None
    found = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings["revision"])
    return (settings["repo_id"], Path(found)) if isinstance(found, str) else None


def _missing_message(asked: str, what: str, url: str, path: Path) -> str:
    return (
        f"{asked} needs {what} file {path.name}, which is not in the torch hub cache {path.parent} "
        f"($TORCH_HOME/hub/checkpoints; TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}). segops downloads "
        f"nothing: fetch {url} where there is internet access and copy it to {path} (or set TORCH_HOME to the "
        "folder above hub/ that holds it), or give model.weights_path"
    )


def _enum_name(enum: WeightsEnum) -> str:
    return f"{type(enum).__name__}.{enum.name}"


def _weights_file(path: Path) -> Path:
    """``path``, or a segops checkpoint folder's ``model.pt``.

    Raises:
        CheckpointError: no such file, an ensemble checkpoint, or a folder without ``model.pt``.
    """
    if path.is_dir():
        meta = path / _SEGOPS_META
        if meta.is_file() and json.loads(meta.read_text()).get("folds"):
            raise CheckpointError(
                f"weights_path {path} is an ensemble checkpoint (folds); give one fold's folder, e.g. {path}/fold_0"
            )
        path = path / _SEGOPS_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"weights_path {path} does not exist (expected a weights file or a segops checkpoint)")
    return path


def _state_dict_of(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj and (inner := _state_dict_of(obj[key])) is not None:
                return inner
    return None


def _align_prefix(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a prefix every key of ``state`` has (DDP's ``module.``, a wrapper's ``model.``) when the
    keys then fit ``own`` better."""
    out = state
    while out and not any(k in own for k in out):
        heads = {k.split(".", 1)[0] for k in out}
        if len(heads) != 1 or not all("." in k for k in out):
            break
        out = {k.split(".", 1)[1]: v for k, v in out.items()}
    return out if any(k in own for k in out) else state


def _abbrev(keys: list[str] | tuple[str, ...], n: int = 6) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" … ({len(keys)} in all)" if len(keys) > n else "")

"""Explicit name → builder registry (no dotted import paths in workflow files)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from segops.config.schema import BACKBONE_MODULES, DynUNetSpec, MaskRCNNSpec, SmpSpec, UNetSpec
from segops.models.dynunet import build_dynunet
from segops.models.maskrcnn import build_maskrcnn
from segops.models.smp import build_smp
from segops.models.unet import build_unet

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": build_unet,
    "dynunet": build_dynunet,
    "maskrcnn": build_maskrcnn,
    "smp": build_smp,
}


def known_archs() -> list[str]:
    """Names a workflow may use as ``model.arch``."""
    return sorted(_BUILDERS)


def build_model(spec: UNetSpec | DynUNetSpec | MaskRCNNSpec | SmpSpec) -> nn.Module:
    """Build an untrained model from its spec (weights are never downloaded; starting weights
    are :func:`segops.models.weights.load_weights`' job)."""
    return _BUILDERS[spec.arch](spec)


def backbone_of(model: nn.Module, spec: UNetSpec | DynUNetSpec | MaskRCNNSpec | SmpSpec) -> nn.Module | None:
    """The part of ``model`` (unwrapped from DDP) fine-tuning treats as the backbone: Mask R-CNN's
    ``backbone`` (ResNet + FPN), smp's ``encoder``; None for archs without one (U-Net, DynUNet)."""
    name = BACKBONE_MODULES.get(spec.arch)
    return None if name is None else getattr(model, "module", model).get_submodule(name)

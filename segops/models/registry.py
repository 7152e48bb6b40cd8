"""Explicit name → builder registry (no dotted import paths in workflow files)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from segops.config.schema import DynUNetSpec, MaskRCNNSpec, UNetSpec
from segops.models.dynunet import build_dynunet
from segops.models.maskrcnn import build_maskrcnn
from segops.models.unet import build_unet

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": build_unet,
    "dynunet": build_dynunet,
    "maskrcnn": build_maskrcnn,
}


def known_archs() -> list[str]:
    """Names a workflow may use as ``model.arch``."""
    return sorted(_BUILDERS)


def build_model(spec: UNetSpec | DynUNetSpec | MaskRCNNSpec) -> nn.Module:
    """Build an untrained model from its spec (weights are never downloaded)."""
    return _BUILDERS[spec.arch](spec)

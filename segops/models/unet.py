"""MONAI U-Net for 2D and 3D semantic segmentation."""

from __future__ import annotations

from monai.networks.nets import UNet
from torch import nn

from segops.config.schema import UNetSpec


def build_unet(spec: UNetSpec) -> nn.Module:
    """Residual U-Net (Kerfoot et al.) with instance norm; outputs (N, classes, H, W) logits,
    or (N, classes, Z, H, W) with ``spec.spatial_dims == 3``."""
    return UNet(
        spatial_dims=spec.spatial_dims,
        in_channels=spec.in_channels,
        out_channels=spec.classes,
        channels=spec.channels,
        strides=spec.strides,
        num_res_units=spec.num_res_units,
        dropout=spec.dropout,
        norm="instance",
    )

"""MONAI DynUNet (nnU-Net's network) for 2D and 3D semantic segmentation."""

from __future__ import annotations

from monai.networks.nets import DynUNet
from torch import nn

from segops.config.schema import DynUNetSpec


def build_dynunet(spec: DynUNetSpec) -> nn.Module:
    """DynUNet with instance norm (affine) and leaky ReLU (nnU-Net's choices, MONAI's defaults).

    In eval mode it returns (N, classes, *spatial) logits. In training mode with
    ``spec.deep_supervision`` it returns (N, 1 + deep_supr_num, classes, *spatial): the
    full-resolution logits first, then the decoder's lower-resolution heads, each upsampled
    (nearest) to full size.
    """
    return DynUNet(
        spatial_dims=spec.spatial_dims,
        in_channels=spec.in_channels,
        out_channels=spec.classes,
        kernel_size=[list(k) for k in spec.kernels],
        strides=[list(s) for s in spec.strides],
        upsample_kernel_size=[list(s) for s in spec.strides[1:]],
        filters=list(spec.filters) if spec.filters is not None else None,
        dropout=spec.dropout or None,
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=spec.deep_supervision,
        deep_supr_num=spec.deep_supr_num,
        res_block=spec.res_block,
    )

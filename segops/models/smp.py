"""segmentation_models_pytorch encoder–decoders (U-Net, U-Net++, FPN, DeepLabV3+) for 2D semantic segmentation."""

from __future__ import annotations

import torch
from torch import nn

from segops.config.schema import SmpSpec

#: ImageNet statistics the encoders' published weights expect, per RGB channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_smp(spec: SmpSpec) -> nn.Module:
    """smp ``spec.decoder`` network on a ``spec.encoder`` ResNet, randomly initialised (starting
    weights are loaded by :mod:`segops.models.weights`); (N, in_channels, H, W) in about [0, 1] →
    (N, classes, H, W) logits, H and W multiples of 32.

    The state dict is smp's own (``encoder.*``, ``decoder.*``, ``segmentation_head.*``), so smp
    checkpoints load as they are. Inputs are normalised with ImageNet statistics by a forward
    pre-hook, which keeps them out of the state dict: channel i takes RGB channel i mod 3's
    statistics, one channel their averages (smp sums the RGB filters for gray input).
    """
    import segmentation_models_pytorch as smp  # ~4 s to import (timm): only when an smp model is built

    decoders = {"unet": smp.Unet, "unetplusplus": smp.UnetPlusPlus, "fpn": smp.FPN, "deeplabv3plus": smp.DeepLabV3Plus}
    model = decoders[spec.decoder](
        encoder_name=spec.encoder, encoder_weights=None, in_channels=spec.in_channels, classes=spec.classes
    )
    model.register_forward_pre_hook(_ImageNetNormalise(spec.in_channels))
    return model


class _ImageNetNormalise:
    """Forward pre-hook: ``(x - mean) / std`` per channel, on the input's device and dtype."""

    def __init__(self, in_channels: int):
        if in_channels == 1:
            self.mean, self.std = (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
        else:
            self.mean = tuple(IMAGENET_MEAN[i % 3] for i in range(in_channels))
            self.std = tuple(IMAGENET_STD[i % 3] for i in range(in_channels))

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x, *rest = args
        shape = (1, len(self.mean)) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape)
        return ((x - mean) / std, *rest)

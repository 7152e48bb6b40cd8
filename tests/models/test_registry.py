import torch

from segops.config.schema import UNetSpec
from segops.models import build_model, known_archs


def test_unet_shapes_follow_spec() -> None:
    spec = UNetSpec(arch="unet", in_channels=3, classes=4, channels=(8, 16, 32), strides=(2, 2))
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 40, 24))
    assert out.shape == (2, 4, 40, 24)
    assert spec.size_divisor == 4
    assert known_archs() == ["dynunet", "maskrcnn", "smp", "unet"]


def test_3d_unet_takes_volumes() -> None:
    spec = UNetSpec(arch="unet", spatial_dims=3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    with torch.no_grad():
        out = build_model(spec).eval()(torch.zeros(1, 1, 8, 16, 12))
    assert out.shape == (1, 2, 8, 16, 12) and spec.size_divisor == 4

"""arch: smp: built from the spec for every decoder, ImageNet encoders from the torch hub cache
(gray input adapts the first convolution as smp does), checkpoints and config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torchvision.models import resnet18

from segops.config.schema import PreprocessSpec, SmpSpec, TrainStep
from segops.engine.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from segops.engine.predict import predict_masks
from segops.models import backbone_of, build_model, load_weights

R18 = SmpSpec(arch="smp", encoder="resnet18")


@pytest.mark.parametrize("decoder", ["unet", "unetplusplus", "fpn", "deeplabv3plus"])
def test_every_decoder_gives_class_logits_at_input_size(decoder: str) -> None:
    spec = R18.model_copy(update={"decoder": decoder, "in_channels": 3, "classes": 4})
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 4, 64, 96) and spec.size_divisor == 32 and spec.task == "semantic"
    assert backbone_of(model, spec) is model.encoder


def test_imagenet_encoder_from_the_torch_hub_cache_with_gray_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    torch.manual_seed(3)
    published = resnet18().state_dict()
    torch.save(published, home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    spec = R18.model_copy(update={"encoder_weights": "imagenet"})  # in_channels 1

    torch.manual_seed(0)
    fresh = build_model(spec).eval()
    torch.manual_seed(0)
    model = build_model(spec).eval()
    (report,) = load_weights(model, spec)
    assert report.target == "encoder" and report.origin == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    assert report.missing == () and report.unexpected == () and report.mismatched == ()
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]
    # smp's rule for one channel: the sum of the RGB filters
    torch.testing.assert_close(model.encoder.conv1.weight, published["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(model.encoder.layer3[0].conv1.weight, published["layer3.0.conv1.weight"])
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model(x), fresh(x))


def test_checkpoint_rebuilds_the_smp_model_and_predicts_the_same(tmp_path: Path) -> None:
    spec = R18.model_copy(update={"decoder": "fpn", "in_channels": 3, "classes": 3})
    torch.manual_seed(0)
    model = build_model(spec).eval()
    pre = PreprocessSpec(patch_size=(64, 64))
    save_checkpoint(tmp_path / "ckpt", model, spec, pre)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.model_spec == spec
    image = np.random.default_rng(0).uniform(0, 255, (3, 70, 50)).astype(np.float32)  # padded to 96 x 64 inside
    (expected,) = predict_masks(LoadedModel(model, spec, pre, {}), [image])
    (got,) = predict_masks(loaded, [image])
    assert got.shape == (70, 50) and np.array_equal(got, expected)


def test_config_errors_for_3d_sizes_and_fine_tuning_without_a_backbone() -> None:
    with pytest.raises(ValidationError, match="arch smp is 2D only"):
        SmpSpec(arch="smp", spatial_dims=3)
    with pytest.raises(ValidationError, match=r"must be multiples of 32 \(the output stride of arch smp\)"):
        TrainStep(step="train", model={"arch": "smp"}, preprocess={"patch_size": [80, 80]})
    with pytest.raises(ValidationError, match="arch unet has none"):
        TrainStep(step="train", model={"arch": "unet"}, freeze_backbone_epochs=1)
    step = TrainStep(step="train", model={"arch": "smp"}, freeze_backbone_epochs=2, backbone_lr_mult=0.1)
    assert step.preprocess.patch_size == (96, 96) and step.model.encoder == "resnet34" and step.model.decoder == "unet"

"""Starting weights: published files placed by the test in a temporary TORCH_HOME under the
enum's file name, the error for an empty cache, and local files with partial fits."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from segops.config.schema import MaskRCNNSpec, PreprocessSpec, SmpSpec, UNetSpec
from segops.engine.checkpoint import INIT_WEIGHTS_KEY, initial_checkpoint, load_checkpoint, read_meta, save_checkpoint
from segops.errors import CheckpointError
from segops.models import build_model, load_weights, weights_sources
from segops.models.weights import read_state_dict, sha256_file

# The file names torch.hub gives these enums' URLs (field notes, and torchvision's own tables)
COCO_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
RESNET18_FILE = "resnet18-f37072fd.pth"
COCO = MaskRCNNSpec(
    arch="maskrcnn", backbone="resnet50_fpn", weights="coco", classes=3, min_size=64, max_size=64, score_threshold=0.0
)
R18 = MaskRCNNSpec(arch="maskrcnn", backbone_weights="imagenet", min_size=64, max_size=64)
UNET = UNetSpec(arch="unet", channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache: ``$TORCH_HOME/hub/checkpoints``."""
    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints"


def _scrambled(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor redrawn (recognisably not a fresh build's values), the rest kept."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: (torch.randn(v.shape, generator=g) * 0.05 + 0.01 if v.is_floating_point() else v) for k, v in state.items()
    }


def test_coco_weights_from_the_torch_hub_cache_replace_the_predictors_and_change_the_output(torch_home: Path) -> None:
    torch.manual_seed(0)
    published = _scrambled(build_model(COCO.model_copy(update={"classes": 91})).state_dict(), seed=1)
    torch.save(published, torch_home / COCO_FILE)

    torch.manual_seed(0)
    fresh = build_model(COCO).eval()
    torch.manual_seed(0)
    model = build_model(COCO).eval()
    (report,) = load_weights(model, COCO)

    assert report.origin == "torchvision:MaskRCNN_ResNet50_FPN_Weights.COCO_V1"
    assert report.file == str(torch_home / COCO_FILE) and report.sha256 == sha256_file(torch_home / COCO_FILE)
    assert report.url == "https://download.pytorch.org/models/" + COCO_FILE
    # the four COCO predictor layers (weight + bias each) are replaced for 3 classes, everything else loads
    assert sorted(report.skipped) == sorted(k for k in published if ".box_predictor." in k or ".mask_predictor." in k)
    assert len(report.skipped) == 8 and report.loaded == len(published) - 8
    assert report.missing == () and report.unexpected == () and report.mismatched == ()
    own = model.state_dict()
    torch.testing.assert_close(
        own["backbone.body.layer3.0.conv1.weight"], published["backbone.body.layer3.0.conv1.weight"]
    )
    assert own["roi_heads.box_predictor.cls_score.weight"].shape == (3, 1024)
    # pretrained ResNet-50 as torchvision builds it: frozen batch norm, the last 3 stages trainable
    assert type(model.backbone.body.bn1).__name__ == "FrozenBatchNorm2d"
    trainable = {n.split(".")[0] for n, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert list(model.transform.image_mean) == [0.485, 0.456, 0.406]

    image = [torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        loaded_features = model.backbone(model.transform(image)[0].tensors)["0"]
        fresh_features = fresh.backbone(fresh.transform(image)[0].tensors)["0"]
        detections = model(image)[0]
    assert not torch.allclose(loaded_features, fresh_features)
    assert detections["masks"].shape[1:] == (1, 64, 64)  # a forward on a tiny image runs end to end


def test_empty_cache_names_the_file_the_folder_and_the_url(torch_home: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        weights_sources(COCO)
    message = str(caught.value)
    assert COCO_FILE in message and str(torch_home / COCO_FILE) in message
    assert "https://download.pytorch.org/models/" + COCO_FILE in message and "$TORCH_HOME/hub/checkpoints" in message
    assert list(torch_home.iterdir()) == []  # nothing was fetched
    with pytest.raises(CheckpointError, match=RESNET18_FILE):
        initial_checkpoint(torch_home.parent / "init", R18, PreprocessSpec())
    smp = SmpSpec(arch="smp", encoder="resnet18", encoder_weights="imagenet")
    with pytest.raises(CheckpointError, match=f"{RESNET18_FILE}.*smp-hub/resnet18.imagenet"):
        weights_sources(smp)


def test_imagenet_backbone_loads_into_the_resnet18_fpn_and_round_trips(torch_home: Path, tmp_path: Path) -> None:
    published = _scrambled(resnet18().state_dict(), seed=3)
    torch.save(published, torch_home / RESNET18_FILE)
    initial = initial_checkpoint(tmp_path / "init", R18, PreprocessSpec())
    assert initial is not None
    (report,) = initial.reports
    assert report.origin == "torchvision:ResNet18_Weights.IMAGENET1K_V1" and report.target == "backbone.body"
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"] and report.missing == () and report.unexpected == ()
    assert read_meta(tmp_path / "init")[INIT_WEIGHTS_KEY] == [
        {
            "origin": report.origin,
            "file": str(torch_home / RESNET18_FILE),
            "sha256": sha256_file(torch_home / RESNET18_FILE),
            "target": "backbone.body",
        }
    ]
    # the saved checkpoint rebuilds from its spec alone (frozen batch norm and all), without the cache
    (torch_home / RESNET18_FILE).unlink()
    reloaded = load_checkpoint(tmp_path / "init").model
    torch.testing.assert_close(reloaded.backbone.body.layer4[1].conv2.weight, published["layer4.1.conv2.weight"])
    torch.testing.assert_close(reloaded.backbone.body.bn1.running_var, published["bn1.running_var"])


def test_partial_checkpoint_reports_missing_unexpected_and_mismatched_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    source = build_model(UNET)  # 2 classes
    state = dict(source.state_dict())
    dropped = "model.0.conv.unit0.conv.weight"
    del state[dropped]
    state["extra.weight"] = torch.zeros(3)
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 7}, tmp_path / "partial.pth")

    spec = UNET.model_copy(update={"classes": 3, "weights_path": tmp_path / "partial.pth"})
    torch.manual_seed(1)
    model = build_model(spec)
    with caplog.at_level(logging.INFO, logger="segops.models.weights"):
        (report,) = load_weights(model, spec)
    mismatched = {key: (have, want) for key, have, want in report.mismatched}
    three = model.state_dict()
    other_shape = {k: (tuple(v.shape), tuple(three[k].shape)) for k, v in state.items() if k in three}
    assert mismatched == {k: shapes for k, shapes in other_shape.items() if shapes[0] != shapes[1]}
    assert len(mismatched) == 4  # the output block's conv and residual unit, weight and bias each
    assert dropped in report.missing and report.unexpected == ("extra.weight",)
    assert report.loaded == len(state) - 1 - len(mismatched) and report.origin == "file"
    torch.testing.assert_close(
        model.state_dict()["model.1.submodule.0.conv.unit0.conv.weight"],
        state["model.1.submodule.0.conv.unit0.conv.weight"],
    )
    assert f"{len(mismatched)} of another shape" in caplog.text and dropped in caplog.text


def test_checkpoint_matching_nothing_is_an_error(tmp_path: Path) -> None:
    torch.save(resnet18().state_dict(), tmp_path / "resnet18.pth")
    spec = UNET.model_copy(update={"weights_path": tmp_path / "resnet18.pth"})
    with pytest.raises(CheckpointError, match="matches none of the .* tensors of the network"):
        load_weights(build_model(spec), spec)
    with pytest.raises(CheckpointError, match="does not exist"):
        weights_sources(UNET.model_copy(update={"weights_path": tmp_path / "nope.pth"}))


def test_segops_checkpoint_folder_as_weights_path_and_objects_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = build_model(UNET)
    save_checkpoint(tmp_path / "ckpt", trained, UNET, PreprocessSpec())
    spec = UNET.model_copy(update={"weights_path": tmp_path / "ckpt"})
    model = build_model(spec)
    (report,) = load_weights(model, spec)
    assert report.file == str(tmp_path / "ckpt" / "model.pt") and report.missing == () and report.mismatched == ()
    for a, b in zip(model.state_dict().values(), trained.state_dict().values()):
        torch.testing.assert_close(a, b)

    torch.save({"model": trained.state_dict(), "args": Path("x")}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        read_state_dict(tmp_path / "pickled.pth")

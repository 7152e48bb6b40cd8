from pathlib import Path

import pytest
import yaml

from segops.config import load_workflow, spec_hash, validate_workflow_text
from segops.config.schema import IngestStep, SegmentStep, TrainStep, UNetSpec
from segops.errors import WorkflowSpecError

REPO = Path(__file__).resolve().parents[2]

VALID = {
    "name": "wf",
    "steps": [
        {"step": "ingest", "source": {"kind": "dicom", "path": "/data/ct", "labels": {"kind": "mask-png", "path": "/data/lbl"}}},
        {"step": "train", "model": {"arch": "unet"}, "preprocess": {"patch_size": [64, 64]}},
        {"step": "segment"},
    ],
}


def _problems(data) -> list[str]:
    with pytest.raises(WorkflowSpecError) as info:
        validate_workflow_text(yaml.safe_dump(data))
    return info.value.problems


def _variant(path: list, value) -> dict:
    """A deep copy of VALID with ``value`` set at ``path`` (None deletes the key)."""
    import copy

    data = copy.deepcopy(VALID)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize("path", sorted((REPO / "workflows").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_workflows_are_valid(path: Path) -> None:
    spec = load_workflow(path)
    assert spec.steps


def test_valid_spec_has_typed_steps_and_defaults() -> None:
    spec = validate_workflow_text(yaml.safe_dump(VALID))
    ingest, train, segment = spec.steps
    assert isinstance(ingest, IngestStep) and isinstance(train, TrainStep) and isinstance(segment, SegmentStep)
    assert isinstance(train.model, UNetSpec) and train.model.classes == 2
    assert spec.tracking.uri == "sqlite:///mlruns.db"


INVALID = [
    (["steps", 1, "model", "arch"], "unett", "steps[1].model.arch: 'unett' is not one of unet"),
    (["steps", 0, "step"], "ingset", "steps[0].step: 'ingset' is not one of ingest, train, segment"),
    (["steps", 0, "source", "kind"], "nifti", "steps[0].source.kind: 'nifti' is not one of dicom, images"),
    (["steps", 0, "source", "labels", "kind"], "seg", "steps[0].source.labels.kind: 'seg' is not one of mask-png"),
    (["steps", 1, "epochs"], 0, "steps[1].epochs: Input should be greater than or equal to 1"),
    (["steps", 1, "model", "classes"], 1, "steps[1].model.classes: Input should be greater than or equal to 2"),
    (["steps", 1, "learning_rate"], "fast", "steps[1].learning_rate: Input should be a valid number"),
    (["steps", 1, "loss"], "focal", "steps[1].loss: 'focal' is not one of dice_ce, dice"),
    (["steps", 1, "scaling"], {"workers": 0}, "steps[1].scaling.workers: Input should be greater than or equal to 1"),
    (["steps", 1, "scaling"], {"use_gpu": "maybe"}, "steps[1].scaling.use_gpu"),
    (["steps", 1, "model"], {"arch": "unet", "bogus": 1}, "steps[1].model.bogus: unknown field"),
    (["steps", 2, "outputs"], ["png", "nii"], "steps[2].outputs[1]: 'nii' is not one of png"),
    (["steps", 2, "actors"], {"min_actors": 3, "max_actors": 1}, "steps[2].actors: min_actors (3) > max_actors (1)"),
    (["steps", 0, "source", "path"], None, "steps[0].source.path: required field is missing"),
    (["name"], "has space", "name: String should match pattern"),
    (["steps"], [], "steps: List should have at least 1 item"),
    (
        ["steps", 1, "preprocess"],
        {"patch_size": [100, 96]},
        "steps[1]: preprocess.patch_size [100, 96] must be multiples of 8",
    ),
    (
        ["steps", 1, "preprocess"],
        {"intensity": {"kind": "window", "lower": 10, "upper": -10}},
        "steps[1].preprocess.intensity: upper (-10.0) must be greater than lower (10.0)",
    ),
    (
        ["steps", 1, "model"],
        {"arch": "unet", "channels": [8, 16, 32], "strides": [2]},
        "steps[1].model: strides has 1 entries but channels has 3",
    ),
    (["steps", 1, "model"], {"arch": "maskrcnn", "min_size": 512, "max_size": 256},
     "steps[1].model: max_size (256) must be at least min_size (512)"),
    (["steps", 1, "model"], {"arch": "maskrcnn", "anchor_sizes": [8, 16]}, "steps[1].model.anchor_sizes"),
    (["steps", 1, "model"], {"arch": "maskrcnn", "backbone": "vgg"},
     "steps[1].model.backbone: 'vgg' is not one of resnet18_fpn, resnet50_fpn, resnet50_fpn_v2"),
    (["steps", 1, "model"], {"arch": "maskrcnn", "aspect_ratios": []}, "steps[1].model.aspect_ratios"),
    (["steps", 1, "model"], {"arch": "maskrcnn"},
     "steps[1].model.arch: 'maskrcnn' trains on instance labels; the ingest source's labels must be kind instance-png"),
    (["steps", 0, "source", "labels"], {"kind": "instance-png", "path": "/data/ids"},
     "steps[1].model.arch: 'unet' trains on class maps; the ingest source's labels are instance labels"),
    (["steps", 2, "outputs"], ["png", "coco-rle"], "steps[2].outputs: 'coco-rle' needs an instance model (arch: maskrcnn)"),
    (["steps", 0, "source", "labels"], {"kind": "coco", "path": "/a.json", "categories": {"7": 300}},
     "steps[0].source.labels.categories.7: Input should be less than or equal to 255"),
]


@pytest.mark.parametrize(("path", "value", "expected"), INVALID, ids=[e[2][:40] for e in INVALID])
def test_invalid_variant_is_reported_by_dotted_path(path, value, expected) -> None:
    problems = _problems(_variant(path, value))
    assert any(expected in p for p in problems), problems


def test_all_problems_are_reported_at_once() -> None:
    data = _variant(["steps", 1, "model", "arch"], "unett")
    data["steps"][0]["source"]["kind"] = "nifti"
    data["steps"][2]["bogus"] = True
    data["tracking"] = {"uri": "sqlite:///x.db", "experimnt": "typo"}
    problems = _problems(data)
    assert len(problems) == 4
    assert {p.split(":")[0] for p in problems} == {
        "steps[1].model.arch",
        "steps[0].source.kind",
        "steps[2].bogus",
        "tracking.experimnt",
    }


def test_maskrcnn_on_instance_labels_is_valid() -> None:
    data = _variant(["steps", 1, "model"], {"arch": "maskrcnn", "classes": 3})
    data["steps"][0]["source"]["labels"] = {"kind": "coco", "path": "/a.json", "instances": True}
    data["steps"][2]["outputs"] = ["png", "coco-rle"]
    train = validate_workflow_text(yaml.safe_dump(data)).steps[1]
    assert train.model.task == "instance" and train.model.backbone == "resnet18_fpn"


def test_cross_step_problems() -> None:
    data = {"name": "wf", "steps": [{"step": "train", "model": {"arch": "unet"}}, {"step": "segment"}]}
    problems = _problems(data)
    assert "steps[0]: a train step needs an ingest step before it (it trains on its dataset)" in problems
    assert any(p.startswith("steps[1].source: required when no ingest step") for p in problems)


def test_segment_without_model_or_train_is_rejected() -> None:
    data = {"name": "wf", "steps": [VALID["steps"][0], {"step": "segment"}]}
    assert any(p.startswith("steps[1].model: required") for p in _problems(data))


def test_yaml_syntax_error_has_position() -> None:
    with pytest.raises(WorkflowSpecError, match=r"<yaml>: invalid YAML at line 2, column 9"):
        validate_workflow_text("name: x\nsteps: [}\n")


def test_non_mapping_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowSpecError, match="expected a mapping"):
        validate_workflow_text("- just\n- a list\n")
    with pytest.raises(WorkflowSpecError, match="cannot read workflow file"):
        load_workflow(tmp_path / "missing.yaml")


def test_spec_hash_ignores_layout_but_not_content() -> None:
    a = validate_workflow_text(yaml.safe_dump(VALID))
    b = validate_workflow_text(yaml.safe_dump(VALID, default_flow_style=True))
    c = validate_workflow_text(yaml.safe_dump(_variant(["steps", 1, "epochs"], 3)))
    assert spec_hash(a) == spec_hash(b) != spec_hash(c)


def test_specs_are_frozen() -> None:
    spec = validate_workflow_text(yaml.safe_dump(VALID))
    with pytest.raises(Exception, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


def test_volume_records_need_an_ingest_with_volumes() -> None:
    data = _variant(["steps", 2, "records"], "volumes")
    assert any(p.startswith("steps[2].records: 'volumes' needs an ingest step with volumes: true") for p in _problems(data))
    data["steps"][0]["volumes"] = True
    assert validate_workflow_text(yaml.safe_dump(data)).steps[2].records == "volumes"


def test_lifecycle_steps_need_their_predecessors() -> None:
    heldout = {"kind": "dicom", "path": "/data/heldout", "labels": {"kind": "mask-png", "path": "/data/hl"}}
    data = {"name": "wf", "steps": [{"step": "evaluate", "source": heldout}, {"step": "promote", "gate": {"min_mean_dice_gain": 0.01}}]}
    assert _problems(data) == ["steps[0].challenger: required when no train step comes before this evaluate step"]
    data = {"name": "wf", "steps": [*VALID["steps"][:2], {"step": "promote"}]}
    assert _problems(data) == [
        "steps[2]: a promote step needs an evaluate step before it (it applies its gate to that comparison)"
    ]
    data = {"name": "wf", "steps": [*VALID["steps"][:2], {"step": "evaluate", "source": heldout},
                                    {"step": "promote", "gate": {"max_case_regression": {"fraction": 2}}, "alias": "9x"}]}  # fmt: skip
    problems = _problems(data)
    assert any(p.startswith("steps[3].gate.max_case_regression.fraction: Input should be less than or equal to 1") for p in problems)
    assert any(p.startswith("steps[3].alias: String should match pattern") for p in problems)


def _volumes_3d() -> dict:
    """VALID with a 3D model trained on volume records and segmenting them."""
    import copy

    data = copy.deepcopy(VALID)
    data["steps"][0]["volumes"] = True
    data["steps"][1]["model"] = {"arch": "unet", "spatial_dims": 3, "channels": [8, 16, 32], "strides": [2, 2]}
    data["steps"][1]["preprocess"] = {"patch_size": [16, 64, 64]}
    data["steps"][2] |= {"records": "volumes", "sliding_window": {"roi_size": [16, 64, 64], "tile_batch": 2}}
    return data


def test_a_3d_workflow_is_valid() -> None:
    train, segment = validate_workflow_text(yaml.safe_dump(_volumes_3d())).steps[1:]
    assert train.model.spatial_dims == 3 and train.preprocess.patch_size == (16, 64, 64)
    assert segment.sliding_window.roi_size == (16, 64, 64)
    assert validate_workflow_text(yaml.safe_dump(VALID)).steps[1].model.spatial_dims == 2  # the default


def test_patch_size_must_have_one_size_per_spatial_dim() -> None:
    data = _volumes_3d()
    data["steps"][1]["preprocess"]["patch_size"] = [64, 64]
    assert "steps[1]: preprocess.patch_size [64, 64] has 2 sizes but model.spatial_dims is 3: give 3 sizes (Z, H, W)" in _problems(data)
    data = _variant(["steps", 1, "preprocess"], {"patch_size": [16, 64, 64]})
    assert "steps[1]: preprocess.patch_size [16, 64, 64] has 3 sizes but model.spatial_dims is 2: give 2 sizes (H, W)" in _problems(data)
    data["steps"][1]["preprocess"]["patch_size"] = [8, 8, 8, 8]
    assert any(p.startswith("steps[1].preprocess.patch_size: Tuple should have at most 3 items") for p in _problems(data))
    data = _volumes_3d()
    data["steps"][1]["preprocess"]["patch_size"] = [10, 64, 64]
    assert "steps[1]: preprocess.patch_size [10, 64, 64] must be multiples of 4 (the product of model.strides)" in _problems(data)
    data["steps"][1]["model"]["spatial_dims"] = 4
    assert any(p.startswith("steps[1].model.spatial_dims: 4 is not one of 2, 3") for p in _problems(data))


def test_a_3d_model_needs_ingest_volumes_and_volume_records() -> None:
    data = _volumes_3d()
    data["steps"][0]["volumes"] = False
    data["steps"][2]["records"] = "slices"
    assert _problems(data) == [
        "steps[1].model.spatial_dims: a 3D model trains on volume records; the ingest step before it needs volumes: true",
        "steps[2].records: the train step's model is 3D (spatial_dims: 3) and segments volume records: set records: volumes (got 'slices')",
    ]
    data = _volumes_3d()
    data["steps"][2] |= {"records": "slices", "model": "/models/some-2d-checkpoint"}  # its own model: checked when loaded
    assert validate_workflow_text(yaml.safe_dump(data)).steps[2].records == "slices"

import os
from pathlib import Path

import pytest
import yaml

from segops.config import load_workflow, spec_hash, validate_workflow_text
from segops.config.load import input_paths
from segops.config.schema import IngestStep, SegmentStep, TrainStep, UNetSpec
from segops.errors import WorkflowSpecError

REPO = Path(__file__).resolve().parents[2]

VALID = {
    "name": "wf",
    "steps": [
        {
            "step": "ingest",
            "source": {"kind": "dicom", "path": "data/ct", "labels": {"kind": "mask-png", "path": "data/lbl"}},
        },
        {"step": "train", "model": {"arch": "unet"}, "preprocess": {"patch_size": [64, 64]}},
        {"step": "segment"},
    ],
}

#: Folders and files the workflows in this module name, made in the current folder by ``data_dirs``.
DATA_DIRS = ("data/ct", "data/lbl", "data/heldout", "data/hl", "data/ids", "models/some-2d-checkpoint")


@pytest.fixture(autouse=True)
def data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test in a fresh current folder holding the paths the workflows name (checked at load)."""
    monkeypatch.chdir(tmp_path)
    for folder in DATA_DIRS:
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "data" / "a.json").write_text("{}")
    return tmp_path


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
def test_shipped_workflows_are_valid(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid once their data exists (``segops synth`` makes it); only the data is missing before."""
    monkeypatch.chdir(tmp_path / "data")  # isbi2012.yaml reads ../shared/...: stay inside tmp_path
    spec = validate_workflow_text(path.read_text(), check_paths=False)
    with pytest.raises(WorkflowSpecError) as info:
        load_workflow(path)
    assert [p.split(":")[0] for p in info.value.problems] == [where for where, _ in input_paths(spec)]
    for _, data in input_paths(spec):
        data.mkdir(parents=True, exist_ok=True)
    assert load_workflow(path) == spec


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
    (
        ["steps", 1, "model"],
        {"arch": "maskrcnn", "min_size": 512, "max_size": 256},
        "steps[1].model: max_size (256) must be at least min_size (512)",
    ),
    (["steps", 1, "model"], {"arch": "maskrcnn", "anchor_sizes": [8, 16]}, "steps[1].model.anchor_sizes"),
    (
        ["steps", 1, "model"],
        {"arch": "maskrcnn", "backbone": "vgg"},
        "steps[1].model.backbone: 'vgg' is not one of resnet18_fpn, resnet50_fpn, resnet50_fpn_v2",
    ),
    (["steps", 1, "model"], {"arch": "maskrcnn", "aspect_ratios": []}, "steps[1].model.aspect_ratios"),
    (
        ["steps", 1, "model"],
        {"arch": "maskrcnn"},
        "steps[1].model.arch: 'maskrcnn' trains on instance labels; the ingest source's labels must be kind "
        "instance-png",
    ),
    (
        ["steps", 0, "source", "labels"],
        {"kind": "instance-png", "path": "data/ids"},
        "steps[1].model.arch: 'unet' trains on class maps; the ingest source's labels are instance labels",
    ),
    (
        ["steps", 2, "outputs"],
        ["png", "coco-rle"],
        "steps[2].outputs: 'coco-rle' needs an instance model (arch: maskrcnn)",
    ),
    (
        ["steps", 0, "source", "labels"],
        {"kind": "coco", "path": "data/a.json", "categories": {"7": 300}},
        "steps[0].source.labels.categories.7: Input should be less than or equal to 255",
    ),
    (
        ["steps", 0, "source"],
        {"kind": "images", "path": "data/ct", "group_by": "(kos[0-9]+"},
        "steps[0].source.group_by: '(kos[0-9]+' is neither 'file', 'folder' nor a regular expression",
    ),
    (
        ["steps", 0, "source"],
        {"kind": "images", "path": "data/ct", "group_by": "^(a)_(b)"},
        "steps[0].source.group_by: the regular expression '^(a)_(b)' has 2 capture groups; give exactly one",
    ),
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
    data["steps"][0]["source"]["labels"] = {"kind": "coco", "path": "data/a.json", "instances": True}
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


def test_non_mapping_is_rejected() -> None:
    with pytest.raises(WorkflowSpecError, match="expected a mapping"):
        validate_workflow_text("- just\n- a list\n")


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
    assert any(
        p.startswith("steps[2].records: 'volumes' needs an ingest step with volumes: true") for p in _problems(data)
    )
    data["steps"][0]["volumes"] = True
    assert validate_workflow_text(yaml.safe_dump(data)).steps[2].records == "volumes"


def test_lifecycle_steps_need_their_predecessors() -> None:
    heldout = {"kind": "dicom", "path": "data/heldout", "labels": {"kind": "mask-png", "path": "data/hl"}}
    data = {
        "name": "wf",
        "steps": [{"step": "evaluate", "source": heldout}, {"step": "promote", "gate": {"min_mean_dice_gain": 0.01}}],
    }
    assert _problems(data) == ["steps[0].challenger: required when no train step comes before this evaluate step"]
    data = {"name": "wf", "steps": [*VALID["steps"][:2], {"step": "promote"}]}
    assert _problems(data) == [
        "steps[2]: a promote step needs an evaluate step before it (it applies its gate to that comparison)"
    ]
    data = {
        "name": "wf",
        "steps": [
            *VALID["steps"][:2],
            {"step": "evaluate", "source": heldout},
            {"step": "promote", "gate": {"max_case_regression": {"fraction": 2}}, "alias": "9x"},
        ],
    }
    problems = _problems(data)
    assert any(
        p.startswith("steps[3].gate.max_case_regression.fraction: Input should be less than or equal to 1")
        for p in problems
    )
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
    assert (
        "steps[1]: preprocess.patch_size [64, 64] has 2 sizes but model.spatial_dims is 3: give 3 sizes (Z, H, W)"
        in _problems(data)
    )
    data = _variant(["steps", 1, "preprocess"], {"patch_size": [16, 64, 64]})
    assert (
        "steps[1]: preprocess.patch_size [16, 64, 64] has 3 sizes but model.spatial_dims is 2: give 2 sizes (H, W)"
        in _problems(data)
    )
    data["steps"][1]["preprocess"]["patch_size"] = [8, 8, 8, 8]
    assert any(
        p.startswith("steps[1].preprocess.patch_size: Tuple should have at most 3 items") for p in _problems(data)
    )
    data = _volumes_3d()
    data["steps"][1]["preprocess"]["patch_size"] = [10, 64, 64]
    assert (
        "steps[1]: preprocess.patch_size [10, 64, 64] must be multiples of 4 (the product of model.strides)"
        in _problems(data)
    )
    data["steps"][1]["model"]["spatial_dims"] = 4
    assert any(p.startswith("steps[1].model.spatial_dims: 4 is not one of 2, 3") for p in _problems(data))


def test_a_3d_model_needs_ingest_volumes_and_volume_records() -> None:
    data = _volumes_3d()
    data["steps"][0]["volumes"] = False
    data["steps"][2]["records"] = "slices"
    assert _problems(data) == [
        "steps[1].model.spatial_dims: a 3D model trains on volume records; the ingest step before it needs "
        "volumes: true",
        "steps[2].records: the train step's model is 3D (spatial_dims: 3) and segments volume records: set "
        "records: volumes (got 'slices')",
    ]
    data = _volumes_3d()
    data["steps"][2] |= {
        "records": "slices",
        "model": "models/some-2d-checkpoint",
    }  # its own model: checked when loaded
    assert validate_workflow_text(yaml.safe_dump(data)).steps[2].records == "slices"


# --------------------------------------------------------------------------- duplicate keys

DUPLICATES = """\
name: wf
steps:
  - step: ingest
    source:
      kind: dicom
      path: data/ct
      labels:
        path: data/missing
        kind: mask-png
        path: data/lbl
  - step: train
    model: {arch: unet}
    batch_size: 4
    epochs: 0
    preprocess: {patch_size: [64, 64]}
    batch_size: 8
    batch_size: 2
name: wf2
"""


def test_duplicate_keys_are_reported_with_their_lines_beside_other_problems() -> None:
    with pytest.raises(WorkflowSpecError) as info:
        validate_workflow_text(DUPLICATES)
    assert info.value.problems == [
        "name: duplicate key (lines 1 and 18); keep one",
        "steps[0].source.labels.path: duplicate key (lines 8 and 10); keep one",
        "steps[1].batch_size: duplicate key (lines 13, 16 and 17); keep one",
        "steps[1].epochs: Input should be greater than or equal to 1 (got 0)",
    ]


def test_duplicate_keys_alone_make_a_valid_file_invalid() -> None:
    text = DUPLICATES.replace("epochs: 0", "epochs: 1")
    with pytest.raises(WorkflowSpecError) as info:
        validate_workflow_text(text)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "name",
        "steps[0].source.labels.path",
        "steps[1].batch_size",
    ]
    flow = "name: wf\nsteps: [{step: ingest, source: {kind: dicom, path: data/ct, kind: dicom}}]\n"
    with pytest.raises(
        WorkflowSpecError, match=r"^<string>: 1 problem.*\n  - steps\[0\].source.kind: duplicate key \(lines 2 and 2\)"
    ):
        validate_workflow_text(flow)


def test_merge_keys_may_be_overridden() -> None:
    text = (
        "name: wf\n"
        "defaults: &train {step: train, model: {arch: unet}, epochs: 3}\n"
        "steps:\n"
        "  - {step: ingest, source: {kind: dicom, path: data/ct, labels: {kind: mask-png, path: data/lbl}}}\n"
        "  - {<<: *train, epochs: 5, preprocess: {patch_size: [64, 64]}}\n"
    )
    with pytest.raises(WorkflowSpecError) as info:
        validate_workflow_text(text)
    assert info.value.problems == [
        "defaults: unknown field (check the spelling; see the workflow reference in README.md)"
    ]


# --------------------------------------------------------------------------- unreadable files


def test_unreadable_workflow_files_are_one_problem(tmp_path: Path) -> None:
    from PIL import Image

    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: wf\n# caf\xe9\n".encode("latin-1"))
    png = tmp_path / "image.png"
    Image.new("L", (4, 4)).save(png)
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("name: wf\n", encoding="utf-16")
    cases = {
        latin1: f"<file>: cannot read workflow file: {latin1} is not UTF-8 text "
        "(byte 0xe9 at offset 14, line 2); save it as UTF-8",
        png: f"<file>: cannot read workflow file: {png} is a PNG image (NUL byte at offset 8), not YAML text; "
        "pass the workflow's .yaml file",
        utf16: f"<file>: cannot read workflow file: {utf16} is UTF-16 text, expected UTF-8; save it as UTF-8",
        tmp_path: f"<file>: cannot read workflow file: {tmp_path} is a folder; pass the workflow's .yaml file",
        tmp_path / "missing.yaml": f"<file>: cannot read workflow file: {tmp_path / 'missing.yaml'} does not exist",
        Path("missing.yaml"): "<file>: cannot read workflow file: missing.yaml does not exist "
        f"(relative paths are resolved from the current folder, {tmp_path})",
    }
    for path, problem in cases.items():
        with pytest.raises(WorkflowSpecError) as info:
            load_workflow(path)
        assert (info.value.source, info.value.problems) == (str(path), [problem])


def test_an_unreadable_file_names_the_permission_problem(tmp_path: Path) -> None:
    from segops.config.load import _unreadable

    locked = tmp_path / "locked.yaml"
    locked.write_text("name: wf\n")
    locked.chmod(0)
    expected = (
        f"<file>: cannot read workflow file: permission denied reading {locked} "
        "(check the file's permissions and owner)"
    )
    if os.access(locked, os.R_OK):  # root reads anything: check the message for the error an open would raise
        assert _unreadable(locked, PermissionError(13, "Permission denied")) == expected
    else:
        with pytest.raises(WorkflowSpecError) as info:
            load_workflow(locked)
        assert info.value.problems == [expected]


# --------------------------------------------------------------------------- paths that do not exist


def _every_path(root: Path) -> dict:
    """A workflow naming every kind of path a workflow reads; absolute ones under ``root``."""
    images = {"kind": "images", "path": "in/images", "labels": {"kind": "instance-png", "path": "in/ids"}}
    dicom = {"kind": "dicom", "path": f"{root}/ct", "labels": {"kind": "dicom-seg", "path": "in/segs"}}
    more = {"kind": "images", "path": "in/more", "labels": {"kind": "mask-png", "path": "in/masks"}}
    heldout = {"kind": "images", "path": "in/heldout", "labels": {"kind": "coco", "path": "in/coco.json"}}
    train = {
        "step": "train",
        "model": {"arch": "unet"},
        "preprocess": {"patch_size": [64, 64]},
        "init_from": "ckpt/parent",
        "extra_datasets": ["runs/old/dataset", f"{root}/older"],
    }
    return {
        "name": "wf",
        "steps": [
            {"step": "ingest", "source": images},
            {"step": "ingest", "source": dicom},
            train,
            {"step": "segment", "model": "ckpt/seg", "source": {"kind": "dataset", "path": "runs/x/dataset"}},
            {"step": "segment", "source": more},
            {"step": "evaluate", "source": heldout, "champion": "ckpt/champion", "challenger": f"{root}/challenger"},
        ],
    }


def test_every_kind_of_missing_path_is_named_by_its_dotted_path(data_dirs: Path) -> None:
    note = f" does not exist (relative paths are resolved from the current folder, {data_dirs})"
    root = data_dirs / "abs"
    assert _problems(_every_path(root)) == [
        "steps[0].source.path: in/images" + note,
        "steps[0].source.labels.path: in/ids" + note,
        f"steps[1].source.path: {root}/ct does not exist",
        "steps[1].source.labels.path: in/segs" + note,
        "steps[2].init_from: ckpt/parent" + note,
        "steps[2].extra_datasets[0]: runs/old/dataset" + note,
        f"steps[2].extra_datasets[1]: {root}/older does not exist",
        "steps[3].source.path: runs/x/dataset" + note,
        "steps[3].model: ckpt/seg" + note,
        "steps[4].source.path: in/more" + note,
        "steps[4].source.labels.path: in/masks" + note,
        "steps[5].source.path: in/heldout" + note,
        "steps[5].source.labels.path: in/coco.json" + note,
        "steps[5].champion: ckpt/champion" + note,
        f"steps[5].challenger: {root}/challenger does not exist",
    ]
    assert (
        validate_workflow_text(yaml.safe_dump(_every_path(root)), check_paths=False).steps[5].champion
        == "ckpt/champion"
    )


def test_existing_paths_pass_and_model_uris_are_not_checked(data_dirs: Path) -> None:
    data = _every_path(data_dirs / "abs")
    for _, path in input_paths(validate_workflow_text(yaml.safe_dump(data), check_paths=False)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch() if path.suffix == ".json" else path.mkdir()
    assert validate_workflow_text(yaml.safe_dump(data)).name == "wf"
    data["steps"][2]["init_from"] = "models:/wf-unet@champion"
    data["steps"][3]["model"] = "runs:/0123abcd/model"
    data["steps"][5] |= {"champion": "models:/wf-unet/3", "challenger": "s3://bucket/ckpt"}
    spec = validate_workflow_text(yaml.safe_dump(data))
    assert [where for where, _ in input_paths(spec)] == [
        "steps[0].source.path",
        "steps[0].source.labels.path",
        "steps[1].source.path",
        "steps[1].source.labels.path",
        "steps[2].extra_datasets[0]",
        "steps[2].extra_datasets[1]",
        "steps[3].source.path",
        "steps[4].source.path",
        "steps[4].source.labels.path",
        "steps[5].source.path",
        "steps[5].source.labels.path",
    ]

"""The planned segment step: the labels' class names become ``segments``, and DICOM labels (RTSTRUCT,
SEG) come back in their own format beside the PNG masks. Pure: a hand-made detection and fingerprint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from segops.config import validate_workflow_text
from segops.data.detection import Detection
from segops.data.nnunet_layout import label_names
from segops.data.planning import PlanSettings, plan_train
from segops.steps.plan import mirroring_choices, workflow_yaml

from ..fingerprints import ct_slices


def _planned(tmp_path: Path, detection: Detection, step: int = 2):
    """The planned workflow's step (as :func:`segops.steps.plan.run_plan` chooses its values)."""
    fp = ct_slices(detection.classes)
    choices = plan_train(fp, detection.classes, PlanSettings(budget_minutes=1), lambda plan: 0.01)
    choices |= mirroring_choices(detection.class_names)
    return validate_workflow_text(workflow_yaml("ct", tmp_path, detection, fp, choices)).steps[step]


def test_rtstruct_labels_plan_rtstruct_masks_named_by_their_rois(tmp_path: Path) -> None:
    rois = {"SpinalCord": 4, "Heart": 1, "Lung_L": 2, "Lung_R": 3}
    source = {
        "kind": "dicom",
        "path": str(tmp_path),
        "labels": {"kind": "rtstruct", "path": str(tmp_path), "rois": rois},
    }
    names = {1: "Heart", 2: "Lung_L", 3: "Lung_R", 4: "SpinalCord"}
    found = Detection(source, "semantic", 5, "dicom-rtstruct", "rtstruct", 9, 9, class_names=names)
    segment = _planned(tmp_path, found)
    assert segment.outputs == ("png", "rtstruct") and segment.segments == names
    train = _planned(tmp_path, found, step=1)  # Lung_L / Lung_R: no mirroring
    assert (train.augment.flip, train.augment.rotate90) == (0.0, 0.0)
    unsided = replace(found, class_names={1: "Heart", 2: "Lung", 3: "Lung_R", 4: "SpinalCord"})
    assert _planned(tmp_path, unsided, step=1).augment.flip == 0.5


@pytest.mark.parametrize(
    "class_names, expected",
    [({}, {1: "class-1", 2: "class-2"}), ({2: "scratch"}, {1: "class-1", 2: "scratch"}), ({1: "x" * 80}, None)],
)
def test_unnamed_classes_keep_a_numbered_name_and_long_names_are_cut(
    tmp_path: Path, class_names: dict[int, str], expected: dict[int, str] | None
) -> None:
    source = {"kind": "images", "path": str(tmp_path), "labels": {"kind": "mask-png", "path": str(tmp_path)}}
    classes = 2 if expected is None else 3
    found = Detection(source, "semantic", classes, "parallel-tree", "multi-class", 9, 9, class_names=class_names)
    segment = _planned(tmp_path, found)
    assert segment.outputs == ("png",)
    assert segment.segments == (expected or {1: "x" * 64})  # DICOM's LO: at most 64 characters


def test_dataset_json_names_its_classes_in_both_nnunet_and_msd_spellings() -> None:
    assert label_names({"labels": {"background": 0, "liver": 1, "tumour": 2}}) == {1: "liver", 2: "tumour"}
    assert label_names({"labels": {"0": "background", "1": "Left Atrium"}}) == {1: "Left Atrium"}
    assert label_names({"labels": {"background": 0, "whole tumour": [1, 2, 3], "core": [2, 3]}}) == {}  # regions
    assert label_names({}) == {}


def test_a_mask_rcnn_plan_writes_its_flip_off_for_sided_classes(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"images": [], "annotations": [], "categories": []}')
    labels = {"kind": "coco", "path": str(tmp_path / "c.json"), "instances": True}
    source = {"kind": "images", "path": str(tmp_path), "labels": labels}
    found = Detection(source, "instance", 3, "coco", "coco", 9, 9, class_names={1: "hand_left", 2: "hand_right"})
    fp = replace(ct_slices(3), task="instance")
    choices = plan_train(fp, 3, PlanSettings(budget_minutes=1), lambda plan: 0.01)
    choices |= mirroring_choices(found.class_names)
    train = validate_workflow_text(workflow_yaml("hands", tmp_path, found, fp, choices)).steps[1]
    assert train.model.arch == "maskrcnn" and train.augment.flip == 0.0
    segment = validate_workflow_text(workflow_yaml("hands", tmp_path, found, fp, choices)).steps[2]
    assert segment.outputs == ("png", "coco-rle") and segment.segments == {1: "hand_left", 2: "hand_right"}


def test_a_pair_turns_mirroring_off_and_says_why() -> None:
    choices = mirroring_choices({1: "Lung_L", 2: "Lung_R"})
    assert choices["augment.flip"].value == 0.0 and choices["augment.rotate90"].value == 0.0
    assert choices["augment.flip"].why.startswith("Lung_L / Lung_R: told apart by side")
    assert mirroring_choices({1: "liver", 2: "Lung_L"}) == {}


@pytest.mark.parametrize("shape, batch", [((512, 512), None), ((1080, 1920), 4), ((3000, 4000), 1)])
def test_large_images_plan_a_smaller_segment_batch(tmp_path: Path, shape: tuple[int, int], batch: int | None) -> None:
    """At most 8 megapixels a batch: an actor's memory grows with its batch's pixels (CT slices: the default 8)."""
    source = {"kind": "images", "path": str(tmp_path), "labels": {"kind": "mask-png", "path": str(tmp_path)}}
    found = Detection(source, "semantic", 2, "parallel-tree", "binary", 9, 9)
    fp = replace(ct_slices(2), median_shape=shape)
    choices = plan_train(fp, 2, PlanSettings(budget_minutes=1), lambda plan: 0.01)
    text = workflow_yaml("photos", tmp_path, found, fp, choices)
    segment = validate_workflow_text(text).steps[2]
    assert segment.batch_size == (batch or 8) and ("batch_size" in text.split("step: segment")[1]) == (
        batch is not None
    )


def test_a_class_only_unsampled_masks_hold_is_planned_from_the_label_census(tmp_path: Path) -> None:
    """The mask kind is guessed from 300 sampled masks; the census reads all 420 and has value 2 in one."""
    from segops.steps.plan import classes_in_census

    source = {"kind": "images", "path": str(tmp_path), "labels": {"kind": "mask-png", "path": str(tmp_path)}}
    found = Detection(source, "semantic", 2, "parallel-tree", "binary", 420, 420, notes={"labels": "binary masks"})
    fp = replace(ct_slices(2), label_census={0: (420, 629975), 1: (420, 42000), 2: (1, 25)})
    planned = classes_in_census(found, fp)
    assert (planned.classes, planned.mask_kind) == (3, "multi-class")
    assert planned.notes["labels"] == (
        "binary masks; the label census of every mask also holds value(s) [2] (1 image(s), not among the sampled "
        "masks): 3 classes"
    )
    choices = plan_train(fp, planned.classes, PlanSettings(budget_minutes=1), lambda plan: 0.01)
    train = validate_workflow_text(workflow_yaml("parts", tmp_path, planned, fp, choices)).steps[1]
    assert train.model.classes == 3
    seen = replace(fp, label_census={0: (420, 629975), 1: (420, 42000)})
    assert classes_in_census(found, seen) is found  # nothing beyond the sample: the detection as it was


def test_a_kolektor_like_archive_is_planned_split_by_folder(tmp_path: Path) -> None:
    """KolektorSDD's layout (``kosNN/PartK.jpg`` + ``PartK_label.bmp``, one part per folder): the
    planned ingest keeps each folder whole in the split (``group_by: folder``, with its reason);
    the same images in word-named defect folders are left split by image."""
    import numpy as np
    from PIL import Image
    from pydantic import TypeAdapter

    from segops.config.schema import SourceSpec
    from segops.data.pairing import detect
    from segops.steps.plan import folder_groups

    for k in range(1, 6):
        for p in range(3):
            (tmp_path / "ksdd" / f"kos{k:02d}").mkdir(parents=True, exist_ok=True)
            mask = np.zeros((40, 16), np.uint8)
            mask[10 : 12 + k, 4:8] = 255
            Image.fromarray(np.full((40, 16), 30 * p, np.uint8)).save(
                tmp_path / "ksdd" / f"kos{k:02d}" / f"Part{p}.jpg"
            )
            Image.fromarray(mask).save(tmp_path / "ksdd" / f"kos{k:02d}" / f"Part{p}_label.bmp")
    detection = detect(tmp_path / "ksdd")
    detection, source = folder_groups(detection, TypeAdapter(SourceSpec).validate_python(detection.source))
    assert source.group_by == "folder" and detection.source["group_by"] == "folder"
    assert detection.notes["group_by"].startswith("15 images in 5 folders (kos01, kos02, kos03, ...; numbered alike")
    choices = plan_train(ct_slices(2), 2, PlanSettings(budget_minutes=1), lambda plan: 0.01)
    text = workflow_yaml("ksdd", tmp_path, detection, ct_slices(2), choices)
    assert validate_workflow_text(text, check_paths=False).steps[0].source.group_by == "folder"
    assert '      group_by: "folder"                      # 15 images in 5 folders' in text
    for k, name in enumerate(("crack", "hole", "cut", "print", "scratch"), start=1):  # categories: by image
        (tmp_path / "ksdd" / f"kos{k:02d}").rename(tmp_path / "ksdd" / name)
    detection = detect(tmp_path / "ksdd")
    unchanged, _ = folder_groups(detection, TypeAdapter(SourceSpec).validate_python(detection.source))
    assert unchanged == detection and "group_by" not in detection.source
    # Carvana's layout: one folder, the car's id in the name of each of its views
    cars = tmp_path / "carvana"
    (cars / "train").mkdir(parents=True)
    (cars / "train_masks").mkdir()
    for k in range(5):
        for v in range(1, 4):
            Image.fromarray(np.full((40, 16), 30 * v, np.uint8)).save(cars / "train" / f"{k:08x}_{v:02d}.jpg")
            Image.fromarray(np.eye(40, 16, dtype=np.uint8) * 255).save(cars / "train_masks" / f"{k:08x}_{v:02d}.png")
    detection = detect(cars)
    detection, source = folder_groups(detection, TypeAdapter(SourceSpec).validate_python(detection.source))
    assert source.group_by == detection.source["group_by"] == r"^(.+)_\d+\.[^./]+$"
    assert detection.notes["group_by"].startswith("15 images named <id>_<n> for 5 ids (00000000, 00000001")


def test_kits_files_are_planned_with_an_axial_slice_plane(tmp_path: Path) -> None:
    """KiTS stores each CT (slices, rows, columns): the plan detects the layout from names, reads
    the headers, and writes ``slice_plane: axial`` with why; files stored slice axis last get none."""
    import nibabel as nib
    import numpy as np
    from pydantic import TypeAdapter

    from segops.config.schema import SourceSpec
    from segops.data.pairing import detect
    from segops.steps.plan import slice_plane

    kits = np.array([[0.0, 0.0, -0.78, 0], [0.0, -0.78, 0.0, 0], [-3.0, 0.0, 0.0, 0], [0, 0, 0, 1.0]])
    for n in range(3):
        case = tmp_path / "kits" / f"case_{n:05d}"
        case.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros((6, 16, 16), np.float32), kits), case / "imaging.nii.gz")
        label = np.zeros((6, 16, 16), np.uint8)
        label[2:4, 4:8, 4:8] = n % 2 + 1
        nib.save(nib.Nifti1Image(label, kits), case / "segmentation.nii.gz")
    found = detect(tmp_path / "kits")
    found, source = slice_plane(found, TypeAdapter(SourceSpec).validate_python(found.source))
    assert source.slice_plane == "axial" and found.source["slice_plane"] == "axial"
    fp = ct_slices(found.classes)
    choices = plan_train(fp, found.classes, PlanSettings(budget_minutes=1), lambda plan: 0.01)
    text = workflow_yaml("kits", tmp_path, found, fp, choices)
    line = next(line for line in text.splitlines() if "slice_plane:" in line)
    assert (
        line.split("#")[1].strip().startswith("3 of 3 sampled case(s) are not stored with their foot-head axis third")
    )
    assert validate_workflow_text(text).steps[0].source.slice_plane == "axial"

    usual = tmp_path / "usual"
    usual.mkdir()
    for n in range(2):
        nib.save(
            nib.Nifti1Image(np.zeros((16, 16, 6), np.float32), np.diag([0.78, 0.78, 3, 1])), usual / f"c{n}.nii.gz"
        )
        nib.save(
            nib.Nifti1Image(np.ones((16, 16, 6), np.uint8), np.diag([0.78, 0.78, 3, 1])), usual / f"c{n}_seg.nii.gz"
        )
    found = detect(usual)
    assert slice_plane(found, TypeAdapter(SourceSpec).validate_python(found.source))[1].slice_plane == "file"


def test_a_planned_target_spacing_is_written_and_valid(tmp_path: Path) -> None:
    source = {"kind": "dicom", "path": str(tmp_path), "labels": {"kind": "mask-png", "path": str(tmp_path)}}
    found = Detection(source, "semantic", 2, "dicom", "binary", 9, 9)
    spread = [0.6 + 0.4 * i / 8 for i in range(9)]
    fp = replace(ct_slices(2), image_samples={"spacing_y": spread, "spacing_x": spread}, spacing_known=9)
    fp = replace(fp, median_spacing=(0.8, 0.8))
    choices = plan_train(fp, 2, PlanSettings(budget_minutes=1), lambda plan: 0.01)
    text = workflow_yaml("ct", tmp_path, found, fp, choices)
    assert validate_workflow_text(text).steps[1].preprocess.spacing == (0.8, 0.8)
    assert "every image resampled to the median, 0.8 x 0.8 mm" in text

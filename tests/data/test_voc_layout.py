"""Pascal VOC's layout planned and read: photos without a mask that are merely not annotated
(:mod:`segops.data.unannotated`) and instance ids beside class masks
(:mod:`segops.data.instance_trees`). Files made here, no Ray."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from segops.config.schema import ImageSource
from segops.config.sources import InstancePngLabels
from segops.data.decode import decode_file
from segops.data.detection import PlanOverrides
from segops.data.instances import INSTANCE_STRIDE
from segops.data.labels import build_resolver
from segops.data.pairing import detect
from segops.data.unannotated import not_annotated

VOID = 255
#: (VOC class value, top, left) of each object in the labelled photos; VOC numbers classes 1..20.
OBJECTS = [[(15, 4, 4), (15, 4, 30)], [(8, 20, 10)], [(12, 6, 6), (15, 24, 34), (8, 30, 4)], [(15, 10, 20)]] * 2


def _palette_png(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values, mode="P")
    image.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    image.save(path)


def make_voc(root: Path, unannotated: int = 6, boxes: bool = True, lists: bool = True) -> Path:
    """A miniature VOC2012: JPEGImages, SegmentationClass/Object (palette PNGs, 255 void borders)
    for the first len(OBJECTS) photos, Annotations/*.xml with boxes for every photo, and
    ImageSets/Segmentation/{train,val}.txt naming the masked ones."""
    voc = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    names = [f"2007_{i:06d}" for i in range(len(OBJECTS) + unannotated)]
    for i, name in enumerate(names):
        photo = rng.integers(0, 80, (48, 56, 3), dtype=np.uint8)
        classes, ids = np.zeros((48, 56), np.uint8), np.zeros((48, 56), np.uint8)
        for k, (value, top, left) in enumerate(OBJECTS[i % len(OBJECTS)], start=1):
            photo[top : top + 12, left : left + 12] = (value * 15, 200, 90)
            for mask, fill in ((classes, value), (ids, k)):
                mask[top - 1 : top + 13, left - 1 : left + 13] = VOID
                mask[top : top + 12, left : left + 12] = fill
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        if boxes:
            (voc / "Annotations").mkdir(exist_ok=True)
            (voc / "Annotations" / f"{name}.xml").write_text(
                f"<annotation><filename>{name}.jpg</filename><object><name>person</name>"
                "<bndbox><xmin>4</xmin><ymin>4</ymin><xmax>16</xmax><ymax>16</ymax></bndbox></object></annotation>"
            )
        if i < len(OBJECTS):
            _palette_png(voc / "SegmentationClass" / f"{name}.png", classes)
            _palette_png(voc / "SegmentationObject" / f"{name}.png", ids)
    if lists:
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
        (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(names[:6]) + "\n")
        (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names[6 : len(OBJECTS)]) + "\n")
        (voc / "ImageSets" / "Main").mkdir(parents=True)  # detection lists name every photo
        (voc / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{n} -1\n" for n in names))
    return voc


def test_voc_plans_instances_from_object_ids_with_classes_from_the_class_masks(tmp_path: Path) -> None:
    voc = make_voc(tmp_path)
    d = detect(tmp_path)
    assert (d.task, d.classes, d.mask_kind, d.n_paired) == ("instance", 4, "instance-id", len(OBJECTS))
    assert d.source["path"] == str(voc / "JPEGImages")
    assert d.source["labels"] == {
        "kind": "instance-png",
        "path": str(voc),
        "pattern": "SegmentationObject/{rel_stem}.png",
        "classes_pattern": "SegmentationClass/{rel_stem}.png",
        "class_values": {0: 0, 8: 1, 12: 2, 15: 3},
        "void": VOID,
    }
    assert "up to 3 objects per mask" in d.notes["labels"]
    # the 6 photos with boxes but no mask are not annotated for segmentation: not trained as empty
    assert "empty_when_missing" not in d.source["labels"]
    assert "6 image(s) have no mask and are not taken as empty" in d.notes["labels"]
    assert "Annotations/2007_0000" in d.notes["labels"]
    assert "path" not in d.notes  # the instance-id PNGs are labels, not photos left out

    source = ImageSource.model_validate({"kind": "images", **{k: v for k, v in d.source.items() if k != "kind"}})
    resolver = build_resolver(source.labels)
    (row,) = decode_file(str(voc / "JPEGImages" / "2007_000002.jpg"), "2007_000002.jpg", source, resolver)
    label = np.asarray(row["label"]).reshape(48, 56)
    # objects k = 1, 2, 3 of VOC classes 12, 15, 8 → classes 2, 3, 1; the void borders are no object
    expected = [0, 1 * INSTANCE_STRIDE + 3, 2 * INSTANCE_STRIDE + 1, 3 * INSTANCE_STRIDE + 2]
    assert sorted(np.unique(label).tolist()) == expected
    assert int((label == 2 * INSTANCE_STRIDE + 1).sum()) == 144  # the 12x12 object, its border left out
    assert row["has_label"] and row["label_uri"].endswith("SegmentationObject/2007_000002.png")


def test_task_semantic_keeps_the_class_masks_alone(tmp_path: Path) -> None:
    voc = make_voc(tmp_path)
    d = detect(tmp_path, PlanOverrides(task="semantic"))
    assert (d.task, d.classes) == ("semantic", 4)
    assert d.source["labels"]["kind"] == "mask-png"
    assert d.source["labels"]["path"] == str(voc / "SegmentationClass")
    assert "path" not in d.notes  # the instance-id PNGs are still known as labels, not photos left out


def test_a_split_list_of_the_masked_photos_alone_marks_the_rest_not_annotated(tmp_path: Path) -> None:
    make_voc(tmp_path, boxes=False)
    d = detect(tmp_path)
    assert "empty_when_missing" not in d.source["labels"]
    assert "ImageSets/Segmentation/train.txt names 6 image(s)" in d.notes["labels"]


def test_without_either_sign_images_without_a_mask_are_still_defect_free(tmp_path: Path) -> None:
    """DAGM's and KolektorSDD's rule is unchanged: masks drawn only where there is a defect."""
    make_voc(tmp_path, boxes=False, lists=False)
    d = detect(tmp_path)
    assert d.source["labels"]["empty_when_missing"] == ["**"]
    assert d.n_paired == len(OBJECTS) + 6


def test_not_annotated_reads_boxes_and_lists_but_not_empty_files(tmp_path: Path) -> None:
    masked, unmasked = [f"img/m{i}.png" for i in range(6)], [f"img/u{i}.png" for i in range(4)]
    labels = tmp_path / "labels"
    labels.mkdir()
    for i in range(4):  # YOLO: an empty file is an image without objects
        (labels / f"u{i}.txt").write_text("")
    files = [f"labels/u{i}.txt" for i in range(4)]
    assert not_annotated(tmp_path, files, masked, unmasked) is None
    (labels / "u0.txt").write_text("0 0.5 0.5 0.2 0.3\n")
    assert not_annotated(tmp_path, files, masked, unmasked) is None  # 1 of 4: a stray box, not the layout
    (labels / "u1.txt").write_text("2 0.1 0.2 0.3 0.4 0.5 0.6\n")
    assert "2 of 4 sampled image(s)" in not_annotated(tmp_path, files, masked, unmasked)
    (tmp_path / "u2.json").write_text('{"shapes": [{"label": "cat"}]}')
    (tmp_path / "u3.json").write_text('{"shapes": []}')
    assert "1 of 2 sampled" in not_annotated(tmp_path, ["u2.json", "u3.json"], masked, unmasked[2:])
    (tmp_path / "val.txt").write_text("\n".join(["m0", "m1", "m2", "m3", "m4", "u0"]))  # names an unmasked one
    assert not_annotated(tmp_path, ["val.txt"], masked, unmasked) is None
    (tmp_path / "defects.txt").write_text("\n".join(f"m{i}" for i in range(6)))  # not a split list
    assert not_annotated(tmp_path, ["defects.txt"], masked, unmasked) is None


def test_class_values_need_class_masks() -> None:
    with pytest.raises(ValidationError, match="class_values maps the values of class masks"):
        InstancePngLabels(kind="instance-png", path=Path("x"), class_values={0: 0, 15: 1})

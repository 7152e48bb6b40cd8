"""``segops plan`` guesses: mask pairing styles, mask kinds, overrides (files made here, no Ray)."""

import json
import shutil
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
import pytest
from PIL import Image

from segops.config.schema import ImageSource, MaskPngLabels
from segops.data.decode import decode_file, list_source_files
from segops.data.detection import PlanOverrides
from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.labels import build_resolver
from segops.data.mask_files import read_mask_png, spec_mask
from segops.data.mask_kinds import classify_masks, integral, mask_census
from segops.data.mask_names import sibling_files
from segops.data.pairing import detect
from segops.errors import LabelError, PlanError
from segops.outputs.dicom_seg import build_seg, write_seg

from .rtstruct_archive import make_rtstruct_archive


def _image(path: Path, seed: int, h: int = 24, w: int = 32, ext_mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), ext_mode).save(path)


def _mask(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)


def _square(h: int = 24, w: int = 32, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:12, 6:18] = value
    return m


def test_same_folder_same_stem_and_stray_overview_figures(tmp_path: Path) -> None:
    for i in range(4):
        _image(tmp_path / "good" / f"p{i}.jpg", i)
        _mask(tmp_path / "good" / f"p{i}.png", _square())
    _image(tmp_path / "README.png", 9)  # an overview figure with no mask
    _image(tmp_path / "docs" / "layout.jpg", 10)  # in a folder where nothing is paired
    d = detect(tmp_path)
    assert d.pairing == "same-folder" and d.mask_kind == "binary" and d.task == "semantic" and d.classes == 2
    assert d.source["labels"] == {"kind": "mask-png", "path": str(tmp_path), "pattern": "{rel_stem}.png"}
    assert d.source["exclude"] == ["README.png", "docs/layout.jpg"]
    assert (d.n_images, d.n_paired) == (4, 4)  # neither the masks nor the excluded figures are counted as images


def test_mask_suffix_in_the_same_folder(tmp_path: Path) -> None:
    for i in range(3):
        _image(tmp_path / "a" / f"x{i}.png", i)
        _mask(tmp_path / "a" / f"x{i}_mask.png", _square())
    d = detect(tmp_path)
    assert d.pairing == "suffix"
    assert d.source["labels"]["pattern"] == "{rel_stem}_mask.png"
    assert (d.n_images, d.n_paired) == (3, 3) and "exclude" not in d.source


def test_parallel_tree(tmp_path: Path) -> None:
    for i in range(3):
        _image(tmp_path / "train" / "images" / "case" / f"{i}.tif", i)
        _mask(tmp_path / "train" / "gt" / "case" / f"{i}_gt.png", _square(value=1))
    d = detect(tmp_path)
    assert d.pairing == "parallel-tree"
    assert d.source["path"] == str(tmp_path / "train" / "images")
    assert d.source["labels"] == {
        "kind": "mask-png",
        "path": str(tmp_path / "train" / "gt"),
        "pattern": "{rel_stem}_gt.png",
    }


def test_a_mask_folder_named_with_a_mask_word_and_text_annotations_beside_it(tmp_path: Path) -> None:
    # PennFudan's layout: PNGImages/ + PedMasks/*_mask.png (instance ids 1..k, 8-bit) + Annotation/*.txt
    root = tmp_path / "PennFudanPed"
    for i, k in enumerate((1, 2, 3, 5, 4, 2)):
        _image(root / "PNGImages" / f"Ped{i:05d}.png", i, h=40, w=64)
        ids = np.zeros((40, 64), np.uint8)
        for j in range(1, k + 1):
            ids[5:30, 10 * j : 10 * j + 6] = j  # upright, apart: one blob per person
        _mask(root / "PedMasks" / f"Ped{i:05d}_mask.png", ids)
        (root / "Annotation").mkdir(exist_ok=True)
        (root / "Annotation" / f"Ped{i:05d}.txt").write_text("# boxes\n")
    (root / "readme.txt").write_text("PennFudan-like")
    d = detect(root)
    assert d.pairing == "parallel-tree" and (d.n_images, d.n_paired) == (6, 6)
    assert d.source["path"] == str(root / "PNGImages")
    assert d.source["labels"] == {
        "kind": "instance-png",
        "path": str(root / "PedMasks"),
        "pattern": "{rel_stem}_mask.png",
    }
    assert d.task == "instance" and "numbered 1..k in 100% of masks" in d.notes["labels"]
    # the same ids as classes are a class map once the user says so
    assert detect(root, PlanOverrides(task="semantic")).classes == 6


def test_class_maps_that_skip_a_class_stay_semantic(tmp_path: Path) -> None:
    masks = []
    for present in ((1, 2, 3), (2, 3), (3,), (1, 3), (1, 2, 3, 4)):  # cardiac-like: apex slices lack class 1
        m = np.zeros((24, 32), np.uint8)
        for c in present:
            m[2 + 4 * c : 5 + 4 * c, 4:20] = c
        masks.append(m)
    census, (fields, task, classes, kind, _) = _census(tmp_path, masks)
    assert census.blob_share == 1.0 and census.id_layout_share == pytest.approx(0.4)
    assert (task, classes, kind) == ("semantic", 5, "multi-class")


def test_mvtec_layout_defect_free_folders_get_empty_masks(tmp_path: Path) -> None:
    """MVTec AD's category: ``train/good`` beside ``test/{good,crack}`` and ``ground_truth/crack``. The
    source is the category, so the training split's clean parts are read too (before: ``test/`` only,
    train/good named as left out); each mask is found with ``test/`` dropped from the image's path."""
    root = tmp_path / "bottle"
    for i in range(3):
        _image(root / "train" / "good" / f"{i:03d}.png", i)
        _image(root / "test" / "good" / f"{i:03d}.png", 10 + i)
        _image(root / "test" / "crack" / f"{i:03d}.png", 20 + i)
        _mask(root / "ground_truth" / "crack" / f"{i:03d}_mask.png", _square())
    _image(root / "test" / "unsorted" / "000.png", 30)  # no mask, not named defect-free, nothing paired beside it
    d = detect(root)
    assert d.pairing == "parallel-tree" and d.source["path"] == str(root)
    assert d.source["labels"] == {
        "kind": "mask-png",
        "path": str(root / "ground_truth"),
        "pattern": "{rel_stem}_mask.png",
        "replace": {"test/": ""},
        "empty_when_missing": ["test/good/**", "train/good/**"],
    }
    assert d.source["exclude"] == ["test/unsorted/000.png", "ground_truth/**"]
    assert (d.n_images, d.n_paired) == (9, 9) and "path" not in d.notes
    assert d.notes["labels"].startswith("parallel-tree pairing: 3 of 9 images have a mask ({rel_stem}_mask.png)")
    assert d.notes["labels.empty_when_missing"].startswith("3 defect-free image(s) in train/good beside test/ and ")
    assert "; 3 images in good have no mask" in d.notes["labels.empty_when_missing"]
    source = ImageSource.model_validate(d.source)
    rows = {f["rel_path"]: decode_file(f["path"], f["rel_path"], source)[0] for f in list_source_files(source)}
    assert sorted(rows) == [f"{s}/{i:03d}.png" for s in ("test/crack", "test/good", "train/good") for i in range(3)]
    assert rows["test/crack/001.png"]["label_uri"] == str(root / "ground_truth" / "crack" / "001_mask.png")
    assert int(np.asarray(rows["test/crack/001.png"]["label"]).sum()) == int((_square() > 0).sum())
    clean = rows["train/good/002.png"]
    assert clean["has_label"] and not np.asarray(clean["label"]).any()


def test_mvtec_ad2_reads_its_train_validation_and_private_test_folders(tmp_path: Path) -> None:
    """MVTec AD 2: ``test_public/{bad,good,ground_truth/bad}`` beside ``train/good``, ``validation/good``
    and the unlabelled ``test_private``. Before: ``test_public/bad`` only (14 of 58 images)."""
    root = tmp_path / "can"
    for i in range(2):
        for folder in ("train/good", "validation/good", "test_public/good", "test_private"):
            _image(root / folder / f"{i:03d}_regular.png", i)
        _image(root / "test_public" / "bad" / f"{i:03d}_regular.png", 10 + i)
        _mask(root / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png", _square())
    d = detect(root)
    labels = d.source["labels"]
    assert d.source["path"] == str(root) and labels["path"] == str(root / "test_public" / "ground_truth")
    assert (labels["pattern"], labels["replace"]) == ("bad/{rel_stem}_mask.png", {"test_public/bad/": ""})
    assert labels["empty_when_missing"] == ["test_public/good/**", "train/good/**", "validation/good/**"]
    assert d.source["exclude"] == ["test_public/ground_truth/**"] and (d.n_images, d.n_paired) == (10, 8)
    assert "2 image(s) in test_private: test data, segmented unlabelled" in d.notes["labels"]
    source = ImageSource.model_validate(d.source)
    rows = {f["rel_path"]: decode_file(f["path"], f["rel_path"], source)[0] for f in list_source_files(source)}
    assert len(rows) == 10 and not rows["test_private/000_regular.png"]["has_label"]
    assert rows["test_public/bad/001_regular.png"]["has_label"] and rows["validation/good/000_regular.png"]["has_label"]


def test_a_folder_beside_that_is_neither_defect_free_nor_test_data_keeps_the_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "part"
    for i in range(3):
        _image(root / "train" / "good" / f"{i}.png", i)
        _image(root / "train" / "scratch" / f"{i}.png", 5 + i)  # defective training images without masks
        _image(root / "test" / "crack" / f"{i}.png", 10 + i)
        _mask(root / "ground_truth" / "crack" / f"{i}_mask.png", _square())
    d = detect(root)
    assert d.source["path"] == str(root / "test") and "replace" not in d.source["labels"]
    assert "6 image(s) outside it (train/good, train/scratch) pair with no mask" in d.notes["path"]
    # healthy patients' X-rays in normal/ beside images/ + masks/: lungs, not empty masks; no split holds them
    xray = tmp_path / "cxr"
    for i in range(3):
        _image(xray / "images" / f"{i}.png", i)
        _mask(xray / "masks" / f"{i}.png", _square())
        _image(xray / "normal" / f"n{i}.png", 20 + i)
    d = detect(xray)
    assert d.source["path"] == str(xray / "images") and "empty_when_missing" not in d.source["labels"]


@pytest.mark.parametrize(
    ("layout", "pattern"),
    [
        # KolektorSDD2: train/10000.png + train/10000_GT.png (upper-case suffix)
        ({"train/{i}.png": "image", "train/{i}_GT.png": "mask"}, "{rel_stem}_GT.png"),
        # DAGM 2007: Class1/Train/0576.PNG + Class1/Train/Label/0576_label.PNG (a mask folder inside)
        (
            {"Class1/Train/{i}.PNG": "image", "Class1/Train/Label/{i}_label.PNG": "mask"},
            "{rel_dir}/Label/{stem}_label.PNG",
        ),
        # DeepCrack: train_img/x.jpg + train_lab/x.png
        ({"train_img/{i}.jpg": "image", "train_lab/{i}.png": "mask"}, "{rel_stem}.png"),
        # CVC-ClinicDB: Original/x.tif + "Ground Truth"/x.tif (a space in the folder's name)
        ({"Original/{i}.tif": "image", "Ground Truth/{i}.tif": "mask"}, "{rel_stem}.tif"),
        # GlaS: train_1.bmp + train_1_anno.bmp in one folder
        (
            {"Warwick QU Dataset/train_{i}.bmp": "image", "Warwick QU Dataset/train_{i}_anno.bmp": "mask"},
            "{rel_stem}_anno.bmp",
        ),
    ],
)
def test_defect_dataset_layouts_pair(tmp_path: Path, layout: dict[str, str], pattern: str) -> None:
    for i in range(4):
        for template, what in layout.items():
            path = tmp_path / template.format(i=f"{i:04d}")
            if what == "image":
                _image(path, i)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_square()).save(path)
    d = detect(tmp_path)
    assert d.source["labels"]["pattern"] == pattern and (d.n_images, d.n_paired) == (4, 4), d.notes
    assert "exclude" not in d.source and "no mask" not in d.notes["labels"]
    folder = tmp_path / PurePosixPath(next(iter(layout))).parent
    _image(folder / "9999.png", 9)  # a defect-free image: no mask, as DAGM stores them
    d = detect(tmp_path)
    assert (d.n_images, d.n_paired, d.source["labels"]["empty_when_missing"]) == (5, 5, ["**"])
    assert "the 1 image(s) without one are trained on and scored as defect-free" in d.notes["labels.empty_when_missing"]


def test_unmasked_images_stay_unlabelled_where_empty_masks_were_drawn_too(tmp_path: Path) -> None:
    """Annotators who drew an empty mask for a clean image did not skip the clean ones: an image
    without a mask there is not annotated yet, not defect-free."""
    for i in range(4):
        _image(tmp_path / "images" / f"{i}.png", i)
        _mask(tmp_path / "masks" / f"{i}.png", _square() if i % 2 else np.zeros((24, 32), np.uint8))
    _image(tmp_path / "images" / "9.png", 9)
    d = detect(tmp_path)
    assert (d.n_images, d.n_paired) == (5, 4) and "empty_when_missing" not in d.source["labels"]
    assert "1 image(s) have no mask: unlabelled" in d.notes["labels"] and "empty_when_missing" in d.notes["labels"]


def test_jpeg_masks_stored_as_rgb_are_binarised_at_the_midpoint(tmp_path: Path) -> None:
    # Kvasir-SEG: images/x.jpg + masks/x.jpg, the masks 3-channel JPEGs with compression noise
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:120, :160]
    for i in range(5):
        _image(tmp_path / "images" / f"{i}.jpg", i, 120, 160)
        cy, cx = rng.integers(30, 90), rng.integers(30, 130)
        disc = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < 400, 255, 0).astype(np.uint8)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.stack([disc] * 3, -1)).save(tmp_path / "masks" / f"{i}.jpg", quality=75)
    d = detect(tmp_path)
    assert d.pairing == "parallel-tree" and (d.n_images, d.n_paired) == (5, 5)
    assert d.source["labels"] == {
        "kind": "mask-png",
        "path": str(tmp_path / "masks"),
        "pattern": "{rel_stem}.jpg",
        "threshold": 128,
    }
    assert d.mask_kind == "anti-aliased" and "JPEG masks" in d.notes["labels"] and d.census.lossy


def test_the_mask_folder_is_the_one_that_pairs_even_when_a_shallower_level_has_none(tmp_path: Path) -> None:
    # YOLO's labels/*.txt beside images/ and masks/; a notes folder named like annotations one level up
    for i in range(3):
        _image(tmp_path / "data" / "images" / f"{i}.jpg", i)
        (tmp_path / "data" / "labels").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        _mask(tmp_path / "data" / "masks" / f"{i}.png", _square())
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "protocol.txt").write_text("how we labelled")
    d = detect(tmp_path)
    assert d.pairing == "parallel-tree" and d.n_paired == 3
    assert d.source["path"] == str(tmp_path / "data" / "images")
    assert d.source["labels"]["path"] == str(tmp_path / "data" / "masks")


def test_masks_that_are_one_region_on_every_image_are_said_to_be_no_label(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DRIVE's ``mask/`` folder holds the retina's field of view, the same disc on every image (its
    vessel labels are in ``1st_manual/``): the plan says so instead of training on it in silence."""
    yy, xx = np.mgrid[:40, :48]
    disc = ((yy - 20) ** 2 + (xx - 24) ** 2 < 18**2).astype(np.uint8) * 255
    for i in range(5):
        _image(tmp_path / "images" / f"{i:02d}_training.png", i, 40, 48)
        _mask(tmp_path / "mask" / f"{i:02d}_training_mask.png", disc)
    note = detect(tmp_path).notes["path"]
    assert note.startswith(f"every sampled mask in {tmp_path / 'mask'} is the same region")
    assert caplog.text.count("is the same region") == 1  # and warns, once
    moved = (yy - 20) ** 2 + (xx - 10) ** 2 < 12**2  # labels that differ between images: no such note
    _mask(tmp_path / "mask" / "03_training_mask.png", moved.astype(np.uint8) * 255)
    assert "same region" not in detect(tmp_path).notes.get("path", "")


def test_dicom_seg_objects(ct_archive: Path, tmp_path: Path) -> None:
    for name in ("series-000", "series-001"):
        shutil.copytree(ct_archive / "images" / name, tmp_path / "ct" / name)
    series = sorted((tmp_path / "ct" / "series-001").glob("*.dcm"))
    sources = [pydicom.dcmread(p) for p in series]
    masks = np.zeros((len(series), *sources[0].pixel_array.shape), np.uint8)
    masks[:, 10:20, 10:20] = 1
    write_seg(tmp_path / "seg" / "s1.dcm", build_seg(sources, masks, {1: "lesion"}))
    d = detect(tmp_path)
    assert d.pairing == "dicom-seg" and d.source["kind"] == "dicom"
    assert d.source["path"] == str(tmp_path / "ct")
    assert d.source["labels"] == {"kind": "dicom-seg", "path": str(tmp_path / "seg")}
    assert d.n_images == 2 * len(series)
    assert d.classes == 2 and d.class_names == {1: "lesion"}


def test_dicom_seg_segments_name_the_classes_and_a_renumbered_one_is_said(ct_archive: Path, tmp_path: Path) -> None:
    """Two segments per SEG: classes 1..2 by segment number, named by SegmentLabel; a SEG that calls
    segment 2 something else is named in the note (pixels are read by number)."""
    labels = ({1: "Liver", 2: "Tumor"}, {1: "liver", 2: "Cyst"})
    for k, name in enumerate(("series-000", "series-001")):
        shutil.copytree(ct_archive / "images" / name, tmp_path / "ct" / name)
        series = sorted((tmp_path / "ct" / name).glob("*.dcm"))
        sources = [pydicom.dcmread(p) for p in series]
        masks = np.zeros((len(series), *sources[0].pixel_array.shape), np.uint8)
        masks[:, 10:20, 10:20], masks[:, 12:15, 12:15] = 1, 2
        write_seg(tmp_path / "seg" / f"s{k}.dcm", build_seg(sources, masks, labels[k]))
    d = detect(tmp_path)
    assert d.classes == 3 and d.class_names == {1: "Liver", 2: "Tumor / Cyst"}
    assert "different SEGs name one segment number differently (segment 2 is Tumor, Cyst)" in d.notes["labels"]


def test_dicom_rtstruct_objects_propose_their_roi_names_as_classes(tmp_path: Path) -> None:
    from segops.config.schema import RtstructLabels

    make_rtstruct_archive(tmp_path)
    d = detect(tmp_path)
    assert d.pairing == "dicom-rtstruct" and d.mask_kind == "rtstruct" and d.classes == 5
    assert d.source["kind"] == "dicom" and d.source["path"] == str(tmp_path / "ct")
    rois = {"Couch": 1, "GTV_primary": 2, "Ring": 3, "SpinalCord": 4}
    assert d.source["labels"] == {"kind": "rtstruct", "path": str(tmp_path / "rtstruct"), "rois": rois}
    assert d.n_images == 8 and "1 RTSTRUCT object(s) in rtstruct" in d.notes["labels"]
    assert RtstructLabels(**d.source["labels"]).rois == rois
    assert d.class_names == {1: "Couch", 2: "GTV_primary", 3: "Ring", 4: "SpinalCord"}


def test_points_empty_rois_and_structures_few_patients_have_are_left_out_of_the_classes(tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    from .rtstruct_archive import CORD, GTV, _contour, build_rtstruct, point, write_ct_series

    for n in range(4):  # four patients' structure sets, as a clinical archive holds them
        cts = write_ct_series(tmp_path / "ct" / f"p{n}", 4, generate_uid(), generate_uid())
        uid = [ct.SOPInstanceUID for ct in cts]
        rois = [
            ("Lung_L", [_contour(GTV[k].points(), refs=(uid[k],)) for k in (1, 2)]),
            ("Heart", [_contour(CORD[2].points(), refs=(uid[2],))] if n < 3 else []),  # 3 of 4 draw it
            ("GTV-2", [_contour(GTV[3].points(), refs=(uid[3],))] if n == 0 else []),  # 1 of 4
            ("Isocenter", [_contour(point(1, 30, 30)[None], "POINT", (uid[1],))]),  # a point, no area
            ("PTV_opt", []),  # defined, never drawn
        ]
        path = tmp_path / "rtstruct" / f"RS.p{n}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        build_rtstruct(cts, rois).save_as(path, enforce_file_format=True)
    d = detect(tmp_path)
    assert d.source["labels"]["rois"] == {"Heart": 1, "Lung_L": 2} and d.classes == 3
    assert d.source["labels"]["missing_rois"] == "ignore"  # the 4th structure set must not teach Heart as background
    note = d.notes["labels"]
    assert "Heart drawn in 3 of 4" in note and "missing_rois: ignore" in note
    assert "GTV-2: drawn in 1 of 4 structure sets" in note
    assert "Isocenter: no area drawn" in note and "PTV_opt: no area drawn" in note


def test_a_side_spelt_four_ways_is_one_class_with_its_spellings_as_synonyms(tmp_path: Path) -> None:
    """Clinical archives spell a side as TG-263 (``Lung_L``), before the organ (``L Lung``), short
    (``Lt Lung``) or whole (``Left lung``): one structure, drawn in every structure set, not four
    drawn in a quarter each (which would all be left out)."""
    from pydicom.uid import generate_uid

    from segops.data.rtstruct_labels import roi_key

    from .rtstruct_archive import CORD, GTV, _contour, build_rtstruct, write_ct_series

    spellings = ("Lung_L", "L Lung", "Lt Lung", "Left lung")
    for n, left in enumerate(spellings):
        cts = write_ct_series(tmp_path / "ct" / f"p{n}", 4, generate_uid(), generate_uid())
        uid = [ct.SOPInstanceUID for ct in cts]
        rois = [
            (left, [_contour(GTV[k].points(), refs=(uid[k],)) for k in (1, 2)]),
            ("Spinal_Cord" if n % 2 else "SpinalCord", [_contour(CORD[2].points(), refs=(uid[2],))]),
        ]
        path = tmp_path / "rtstruct" / f"RS.p{n}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        build_rtstruct(cts, rois).save_as(path, enforce_file_format=True)
    d = detect(tmp_path)
    assert set(d.source["labels"]["rois"]) == {"Lung_L", "SpinalCord"} and d.classes == 3
    assert d.source["labels"]["synonyms"]["Lung_L"] == ("L Lung", "Lt Lung", "Left lung")
    assert {roi_key(s) for s in spellings} == {"left:lung"} and roi_key("Lung_R") == "right:lung"
    assert roi_key("Spinal_Cord") == roi_key("SpinalCord") == "spinalcord" and roi_key("L") == "l"


def test_the_body_outline_spelt_per_planning_system_is_one_class(tmp_path: Path) -> None:
    """``External`` (TG-263), ``BODY``, ``Body`` and a ROI whose RTROIInterpretedType is EXTERNAL
    whatever its name are the body outline, drawn in every structure set: one class with the
    others as synonyms, not one drawn in half (a class the others teach as background) and
    the rest left out. TG-263's ``Skin`` (a rind) is not the outline."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    from segops.data.rtstruct_labels import roi_key

    from .rtstruct_archive import CORD, RING_OUTER, _contour, build_rtstruct, write_ct_series

    outlines = ("External", "BODY", "Body", "Contour_1")
    for n, outline in enumerate(outlines):
        cts = write_ct_series(tmp_path / "ct" / f"p{n}", 4, generate_uid(), generate_uid())
        uid = [ct.SOPInstanceUID for ct in cts]
        rois = [
            (outline, [_contour(RING_OUTER.points(), refs=(uid[k],)) for k in (1, 2)]),
            ("SpinalCord", [_contour(CORD[2].points(), refs=(uid[2],))]),
        ]
        if n == 0:
            rois.append(("Skin", [_contour(RING_OUTER.points(), refs=(uid[3],))]))
        ds = build_rtstruct(cts, rois)
        ds.RTROIObservationsSequence = Sequence()
        for number, kind in ((1, "EXTERNAL"), (2, "ORGAN")):
            observation = Dataset()
            observation.ObservationNumber, observation.ReferencedROINumber = number, number
            observation.RTROIInterpretedType = kind
            ds.RTROIObservationsSequence.append(observation)
        path = tmp_path / "rtstruct" / f"RS.p{n}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    d = detect(tmp_path)
    labels = d.source["labels"]
    assert labels["rois"] == {"SpinalCord": 2, "External": 1} and d.classes == 3
    assert labels["synonyms"] == {"External": ("BODY", "Body", "Contour_1")}
    assert "Skin: drawn in 1 of 4" in d.notes["labels"]
    assert roi_key("BODY") == roi_key("External") == roi_key("body outline") == "external"
    assert roi_key("Skin") == "skin" and roi_key("Contour_1") == "contour1"


def test_planning_helpers_drawn_for_every_patient_are_no_classes(tmp_path: Path) -> None:
    """A treatment-planning export draws the couch (type SUPPORT), an optimisation ring (CONTROL)
    and TG-263 helpers (``zPTV_opt``, ``_avoid``) for every patient: none is anatomy, so none is a
    class, each left out with its reason; ``Zygoma_L`` (a capital Z) and ``Heart`` stay."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    from .rtstruct_archive import CORD, GTV, RING_OUTER, _contour, build_rtstruct, write_ct_series

    names = ("Heart", "Zygoma_L", "CouchSurface", "Ring_opt", "zPTV_opt", "_avoid")
    kinds = ("ORGAN", "ORGAN", "SUPPORT", "CONTROL", "", "")
    for n in range(2):
        cts = write_ct_series(tmp_path / "ct" / f"p{n}", 4, generate_uid(), generate_uid())
        uid = [ct.SOPInstanceUID for ct in cts]
        shapes = (GTV[1], CORD[2], RING_OUTER, GTV[2], GTV[3], CORD[3])
        slices = (1, 2, 0, 2, 3, 3)
        ds = build_rtstruct(
            cts, [(name, [_contour(e.points(), refs=(uid[k],))]) for name, e, k in zip(names, shapes, slices)]
        )
        ds.RTROIObservationsSequence = Sequence()
        for number, kind in enumerate(kinds, start=1):
            if kind:
                observation = Dataset()
                observation.ObservationNumber, observation.ReferencedROINumber = number, number
                observation.RTROIInterpretedType = kind
                ds.RTROIObservationsSequence.append(observation)
        (tmp_path / "rtstruct").mkdir(exist_ok=True)
        ds.save_as(tmp_path / "rtstruct" / f"RS.p{n}.dcm", enforce_file_format=True)
    d = detect(tmp_path)
    assert set(d.source["labels"]["rois"]) == {"Heart", "Zygoma_L"} and d.classes == 3
    note = d.notes["labels"]
    assert "CouchSurface: a planning helper (RTROIInterpretedType SUPPORT)" in note
    assert "Ring_opt: a planning helper (RTROIInterpretedType CONTROL)" in note
    assert "zPTV_opt: a planning helper (TG-263" in note and "_avoid: a planning helper (TG-263" in note


def test_an_rtstruct_among_the_images_is_found_by_its_name(tmp_path: Path) -> None:
    make_rtstruct_archive(tmp_path / "src")
    shutil.copytree(tmp_path / "src" / "ct" / "a", tmp_path / "a")
    shutil.copy(
        tmp_path / "src" / "rtstruct" / "RS.synthetic.dcm", tmp_path / "a" / "rtstruct.dcm"
    )  # sorts after ct0.dcm
    d = detect(tmp_path / "a")
    assert d.pairing == "dicom-rtstruct" and d.n_images == 6
    assert d.source["labels"]["path"] == str(tmp_path / "a")
    assert d.source["exclude"] == ["rtstruct.dcm"]  # no image: left out of the inputs, not "skipped" by ingest


def _coco_archive(root: Path, per_image: int) -> None:
    images, anns = [], []
    for i in range(2):
        _image(root / "imgs" / f"s{i}.png", i)
        images.append({"id": i + 1, "file_name": f"s{i}.png", "height": 24, "width": 32})
        for k in range(per_image):
            x = 2 + 8 * k
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 7,
                    "iscrowd": 0,
                    "area": 16.0,
                    "bbox": [x, 2, 4, 4],
                    "segmentation": [[x, 2, x + 4, 2, x + 4, 6, x, 6]],
                }
            )
    doc = {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "cell"}]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "train.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(("per_image", "task"), [(3, "instance"), (1, "semantic")])
def test_coco_file(tmp_path: Path, per_image: int, task: str) -> None:
    _coco_archive(tmp_path, per_image)
    d = detect(tmp_path)
    assert d.pairing == "coco" and d.task == task and d.classes == 2
    assert d.source["path"] == str(tmp_path / "imgs")
    expected = {"kind": "coco", "path": str(tmp_path / "annotations" / "train.json")}
    assert d.source["labels"] == expected | ({"instances": True} if task == "instance" else {})


def test_roboflow_coco_export_reads_every_split_and_skips_the_unused_supercategory(tmp_path: Path) -> None:
    # train/valid/test, each with its images and _annotations.coco.json, image ids from 0 and the
    # same file names in each; category 0 is Roboflow's supercategory, which no annotation uses
    for split, n in (("test", 1), ("train", 3), ("valid", 2)):
        images, anns = [], []
        for i in range(n):
            _image(tmp_path / split / f"{i}.jpg", i)
            images.append({"id": i, "file_name": f"{i}.jpg", "height": 24, "width": 32})
            for k, cat in enumerate((1, 1, 2) if split != "valid" else (2,) * (i + 1)):
                x = 2 + 8 * k
                poly = [x, 2, x + 4, 2, x + 4, 6, x, 6]
                anns.append({"id": len(anns), "image_id": i, "category_id": cat, "segmentation": [poly], "iscrowd": 0})
        cats = [{"id": 0, "name": "parts"}, {"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}]
        doc = {"images": images, "annotations": anns, "categories": cats}
        (tmp_path / split / "_annotations.coco.json").write_text(json.dumps(doc))
    captions = {"images": [{"id": 0, "file_name": "0.jpg"}], "annotations": [{"id": 0, "image_id": 0, "caption": "a"}]}
    (tmp_path / "captions.json").write_text(json.dumps(captions))  # COCO's captions file: not instances
    d = detect(tmp_path)
    assert d.pairing == "coco" and d.task == "instance" and d.classes == 3 and d.n_paired == 6
    assert d.source["path"] == str(tmp_path)
    assert d.source["labels"] == {
        "kind": "coco",
        "path": str(tmp_path / "train" / "_annotations.coco.json"),
        "more_files": [str(tmp_path / split / "_annotations.coco.json") for split in ("test", "valid")],
        "instances": True,
        "categories": {1: 1, 2: 2},
    }
    assert "ids [0] unused: no class" in d.notes["labels"]
    assert "other COCO files, not read: captions.json" in d.notes["labels"]
    source = ImageSource.model_validate(d.source)
    resolver = build_resolver(source.labels)
    rows = {rel: decode_file(str(tmp_path / rel), rel, source, resolver)[0] for rel in ("train/1.jpg", "valid/1.jpg")}
    # the same name and image id in two splits: each image finds the annotations of its own split
    assert rows["train/1.jpg"]["label_uri"] == f"{tmp_path / 'train' / '_annotations.coco.json'}#image=1"
    assert rows["valid/1.jpg"]["label_uri"] == f"{tmp_path / 'valid' / '_annotations.coco.json'}#image=1"
    assert sorted(np.unique(np.asarray(rows["train/1.jpg"]["label"])).tolist()) == [0, S + 1, S + 2, 2 * S + 3]
    assert sorted(np.unique(np.asarray(rows["valid/1.jpg"]["label"])).tolist()) == [0, 2 * S + 1, 2 * S + 2]
    assert len(resolver.all_label_keys()) == 6


def test_coco_2017_layout_reads_train_and_val_but_not_the_keypoints_file(tmp_path: Path) -> None:
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    for split, n in (("train2017", 3), ("val2017", 2)):
        images, anns = [], []
        for i in range(n):
            name = f"{split[:-4]}{i:012d}.jpg"
            _image(tmp_path / split / name, i)
            images.append({"id": 100 * i + 7, "file_name": name, "height": 24, "width": 32})
            poly = [2, 2, 10, 2, 10, 10, 2, 10]
            anns.append({"id": i, "image_id": 100 * i + 7, "category_id": 3, "segmentation": [poly], "iscrowd": 0})
        doc = {"images": images, "annotations": anns, "categories": cats}
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
        keypoints = {**doc, "categories": cats[:1], "annotations": [{**a, "category_id": 1} for a in anns]}
        (tmp_path / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(keypoints))
    d = detect(tmp_path)
    assert d.source["path"] == str(tmp_path) and d.n_paired == 5 and d.class_names == {1: "car"}  # person: unused
    assert d.source["labels"]["path"] == str(tmp_path / "annotations" / "instances_train2017.json")
    assert d.source["labels"]["more_files"] == [str(tmp_path / "annotations" / "instances_val2017.json")]
    assert "not read: annotations/person_keypoints_train2017.json" in d.notes["labels"]
    source = ImageSource.model_validate(d.source)
    (row,) = decode_file(str(tmp_path / "val2017/val000000000001.jpg"), "val2017/val000000000001.jpg", source)
    assert row["label_uri"] == f"{tmp_path / 'annotations' / 'instances_val2017.json'}#image=107"
    assert int((np.asarray(row["label"]) == 1).sum()) == 81  # car → class 1 (the only category used)


def _census(tmp_path: Path, masks: list[np.ndarray], ext: str = ".png") -> tuple:
    paths = []
    for i, m in enumerate(masks):
        paths.append(tmp_path / f"m{i}{ext}")
        Image.fromarray(m).save(paths[-1])
    census = mask_census(paths)
    return census, classify_masks(census)


def test_binary_masks_with_other_values_get_a_values_map(tmp_path: Path) -> None:
    census, (fields, task, classes, kind, _) = _census(tmp_path, [_square(value=200), _square(value=0)])
    assert census.values == {0: (2, 2 * 24 * 32 - 96), 200: (1, 96)}
    assert (fields, task, classes, kind) == ({"kind": "mask-png", "values": {0: 0, 200: 1}}, "semantic", 2, "binary")


def test_multi_class_masks(tmp_path: Path) -> None:
    a, b = _square(value=1), _square(value=0)
    a[16:20, 20:30] = 2
    b[0:3, 0:3] = 3
    _, (fields, task, classes, kind, _) = _census(tmp_path, [a, b])
    assert (fields, task, classes, kind) == ({"kind": "mask-png"}, "semantic", 4, "multi-class")
    _, (fields, *_rest) = _census(tmp_path, [a * 50, b * 50])  # stored 0, 50, 100, 150
    assert fields == {"kind": "mask-png", "values": {0: 0, 50: 1, 100: 2, 150: 3}}


def test_masks_saved_0_1_by_one_tool_and_0_255_by_another_are_one_binary_class(tmp_path: Path) -> None:
    """A folder merged from two sources: small defects stored as 1 in some files and as 255 in others."""
    ones, full = _square(value=1), _square(value=255)[::-1]
    _, (fields, task, classes, kind, why) = _census(tmp_path, [ones, full, _square(value=0)])
    assert (fields, task, classes, kind) == (
        {"kind": "mask-png", "values": {0: 0, 1: 1, 255: 1}},
        "semantic",
        2,
        "binary",
    )
    assert "0/1 in some files and 0/255 in others" in why
    both = ones.copy()
    both[12:24, 18:32] = 255  # one file holding both (a region, not a thin border): two classes, as before
    (tmp_path / "both").mkdir()
    _, (fields, _task, classes, kind, _why) = _census(tmp_path / "both", [both, full])
    assert (fields, classes, kind) == ({"kind": "mask-png", "values": {0: 0, 1: 1, 255: 2}}, 3, "multi-class")


def test_jpeg_masks_stored_0_1_are_binarised_not_three_classes(tmp_path: Path) -> None:
    """0/1 masks saved as JPEG: compression noise adds 2s around the edges, which a range-relative
    tolerance (1/16 of 2) did not see as noise, so the plan trained a third class on the noise."""
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(6):
        m = np.zeros((64, 64), np.uint8)
        y, x = rng.integers(5, 40, 2)
        m[y : y + 15, x : x + 20] = 1
        masks.append(m)
    census, (fields, task, classes, kind, why) = _census(tmp_path, masks, ".jpg")
    assert 2 in census.values and census.lossy  # the noise this is about
    assert (fields, task, classes, kind) == ({"kind": "mask-png", "threshold": 1}, "semantic", 2, "anti-aliased")
    assert "neither 0 nor 1 (compression noise), binarised at 1" in why


def test_instance_id_masks_16_bit(tmp_path: Path) -> None:
    ids = np.zeros((24, 32), np.uint16)
    for k in range(1, 6):
        ids[2:6, 5 * k : 5 * k + 3] = k  # five separate blobs, ids 1..5
    census, (fields, task, classes, kind, _) = _census(tmp_path, [ids, ids[::-1]])
    assert census.bits == 16 and census.blob_share == 1.0
    assert (fields, task, classes, kind) == ({"kind": "instance-png"}, "instance", 2, "instance-id")


def test_one_id_per_16_bit_mask_is_a_binary_mask(tmp_path: Path) -> None:
    census, (fields, task, classes, kind, _) = _census(tmp_path, [_square().astype(np.uint16), _square()[::-1]])
    assert census.bits == 16 and census.max_values_per_mask == 1
    assert (fields, task, classes, kind) == ({"kind": "mask-png"}, "semantic", 2, "binary")


def test_float_tiff_masks_are_read_as_integers(tmp_path: Path) -> None:
    one = _square(value=1)
    whole = [one.astype(np.float32), one[::-1].astype(np.float32)]  # 0.0 / 1.0 in 32-bit float TIFFs
    census, (fields, task, *_rest) = _census(tmp_path, whole, ".tif")
    assert (census.values.keys(), census.bits, fields, task) == ({0, 1}, 8, {"kind": "mask-png"}, "semantic")
    label = read_mask_png(tmp_path / "m0.tif", (24, 32))
    assert label.dtype == np.uint8 and np.array_equal(label, one)
    soft = one.astype(np.float32) * 0.8  # probabilities: stored as round(255 p)
    assert np.array_equal(integral(soft), one * 204)
    assert integral(np.array([[-1.5, 2.0]], np.float32)).dtype == np.float32  # neither: left as stored


def _voc_mask(objects: list[tuple[int, int, int]], border: int = 2) -> np.ndarray:
    """Pascal VOC style: each (value, row, col) a filled square, ringed by a 255 'void' border."""
    m = np.zeros((64, 96), np.uint8)
    for value, r, c in objects:
        m[r - border : r + 12 + border, c - border : c + 12 + border] = 255
        m[r : r + 12, c : c + 12] = value
    return m


def test_voc_void_borders_are_void_not_a_class(tmp_path: Path) -> None:
    classes = [_voc_mask([(15, 10, 10), (7, 30, 50)]), _voc_mask([(15, 40, 20)]), _voc_mask([(3, 20, 60)])]
    census, (fields, task, n, kind, why) = _census(tmp_path, classes)
    assert census.void == 255 and 255 not in census.values
    assert fields == {"kind": "mask-png", "values": {0: 0, 3: 1, 7: 2, 15: 3}, "void": 255}
    assert (task, n, kind) == ("semantic", 4, "multi-class") and "255 on thin borders" in why
    objects = [
        _voc_mask([(1, 10, 10), (2, 30, 50), (3, 10, 70)]),
        _voc_mask([(1, 40, 20)]),
        _voc_mask([(1, 5, 5), (2, 40, 60)]),
    ]
    census, (fields, task, *_rest) = _census(tmp_path, objects)  # SegmentationObject: ids 1..k with void borders
    assert (fields, task) == ({"kind": "instance-png", "void": 255}, "instance")
    solid = [_square(value=255) + _square(value=0), _voc_mask([(1, 10, 10)], border=0)]
    solid[0][14:20, 20:30] = 2  # 255 is a class with an interior here: no void
    census, _ = _census(tmp_path, solid)
    assert census.void is None and 255 in census.values


def test_anti_aliased_masks_are_thresholded_at_the_midpoint(tmp_path: Path) -> None:
    m = np.zeros((80, 80), np.uint8)
    m[20:60, 20:60] = 255
    m[19, 20:60] = 90  # a soft edge row above and below the square: 1.25 % of pixels
    m[60, 20:60] = 170
    census, (fields, _, _, kind, why) = _census(tmp_path, [m])
    assert census.edge_share == 1.0
    assert (fields, kind) == ({"kind": "mask-png", "threshold": 128}, "anti-aliased")
    assert "binarised at 128" in why


def test_no_mask_error_names_files_of_another_kind_that_share_the_images_names(tmp_path: Path) -> None:
    """NEU-DET's layout: ``IMAGES/crazing_1.jpg`` with Pascal VOC boxes ``ANNOTATIONS/crazing_1.xml``: no
    masks; the error says what the folder holds instead of masks, not only how to name masks."""
    for i in range(3):
        _image(tmp_path / "IMAGES" / f"crazing_{i}.jpg", i)
        (tmp_path / "ANNOTATIONS").mkdir(exist_ok=True)
        (tmp_path / "ANNOTATIONS" / f"crazing_{i}.xml").write_text("<annotation><bndbox/></annotation>")
    (tmp_path / "ANNOTATIONS" / "classes.xml").write_text("<classes/>")  # another name: not listed
    with pytest.raises(PlanError, match=r"of other kinds \(3 \.xml, e\.g\. ANNOTATIONS/crazing_0\.xml\): not masks"):
        detect(tmp_path)


def test_overrides_win(tmp_path: Path) -> None:
    """Masks named so no rule finds them (a prefix and a suffix around the number): an error that
    says to give --labels and --pattern, and with them a plan."""
    for i in range(3):
        _image(tmp_path / "em" / "raw" / f"{i}.png", i)
        _mask(tmp_path / "em" / "annot" / f"slice{i}_v2.png", _square())
    with pytest.raises(PlanError, match="no mask for any of them.*give --labels FOLDER and --pattern"):
        detect(tmp_path)
    overrides = PlanOverrides(labels=tmp_path / "em" / "annot", pattern="slice{stem}_v2.png", foreground_value=0)
    d = detect(tmp_path, overrides)
    assert d.pairing == "labels-option" and d.n_paired == 3
    assert d.source["path"] == str(tmp_path / "em" / "raw")
    assert d.source["labels"] == {
        "kind": "mask-png",
        "path": str(tmp_path / "em" / "annot"),
        "pattern": "slice{stem}_v2.png",
        "values": {0: 1, 255: 0},
    }
    d = detect(tmp_path, PlanOverrides(labels=tmp_path / "em" / "annot", pattern="slice{stem}_v2.png", task="instance"))
    assert d.task == "instance" and d.source["labels"]["kind"] == "instance-png"


def test_no_images_is_a_plan_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing")
    with pytest.raises(PlanError, match="no image or DICOM files under"):
        detect(tmp_path)


def test_colour_coded_masks_get_a_colour_map(tmp_path: Path) -> None:
    """Red and green defects painted on black (RGB) or on a transparent layer (RGBA), with
    anti-aliased edges: two class colours, the blends read as the nearest."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(6):
        Image.fromarray(np.full((32, 40), 90, np.uint8)).save(images / f"p{i}.png")
        rgba = np.zeros((32, 40, 4), np.uint8)
        rgba[4:12, 5:15] = (255, 0, 0, 255)
        rgba[20:28, 20:34] = (0, 200, 0, 255) if i % 2 else (255, 0, 0, 255)
        rgba[12, 5:15] = (128, 0, 0, 255)  # an anti-aliased edge: half red, half black
        Image.fromarray(rgba if i % 3 else rgba[..., :3].copy()).save(labels / f"p{i}.png")
    detection = detect(tmp_path, PlanOverrides())
    spec = detection.source["labels"]
    assert (detection.task, detection.classes, detection.mask_kind) == ("semantic", 3, "colour-coded")
    assert spec["colors"] == {"#000000": 0, "#ff0000": 1, "#00c800": 2}
    labels_spec = MaskPngLabels(**spec)
    classes = spec_mask(labels_spec, labels / "p1.png", (32, 40))
    assert (classes[4:12, 5:15] == 1).all() and (classes[20:28, 20:34] == 2).all()
    assert (classes[12, 5:15] == 1).all()  # the blend (128, 0, 0) is nearest to red
    assert classes.sum() == 10 * 9 + 2 * 8 * 14
    stray = np.zeros((32, 40, 3), np.uint8)
    stray[:, :20] = (0, 0, 255)  # half the mask in a colour the map does not list
    Image.fromarray(stray).save(tmp_path / "blue.png")
    with pytest.raises(LabelError, match=r"50.0% of its pixels have colours labels.colors does not list.*#0000ff"):
        spec_mask(labels_spec, tmp_path / "blue.png", (32, 40))


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 0, 0)])
def test_a_mask_painted_in_the_alpha_channel_is_read_from_it(tmp_path: Path, colour: tuple[int, int, int]) -> None:
    """Black (or red) strokes on a transparent layer: read from the colour, every mask would be empty
    (black) or the whole image (red; before, red strokes were taken for colour-coded classes and the
    plan warned that every mask was the same region)."""
    stroke = np.zeros((24, 32, 4), np.uint8)
    stroke[..., :3] = colour
    stroke[4:12, 6:18, 3] = 255
    census, (fields, task, classes, kind, _) = _census(tmp_path, [stroke, stroke[::-1].copy()])
    assert census.values == {0: (2, 2 * (24 * 32 - 96)), 255: (2, 2 * 96)}
    assert (fields, kind) == ({"kind": "mask-png"}, "binary")
    for i in range(4):
        _image(tmp_path / "set" / "images" / f"{i}.png", i)
        _mask(tmp_path / "set" / "masks" / f"{i}.png", np.roll(stroke, 3 * i, axis=1))
    d = detect(tmp_path / "set")
    assert d.mask_kind == "binary" and "path" not in d.notes  # no "every mask is the same region" warning


def test_an_mvtec_root_of_several_categories_plans_one_and_names_the_others(tmp_path: Path) -> None:
    """MVTec AD's root holds 15 categories, each with test/ and ground_truth/: separate datasets.
    Before, the category with the shortest name was planned and the others were said to pair
    with no mask."""
    root = tmp_path / "mvtec"
    for cat, n in (("screw", 2), ("bottle", 3), ("zipper", 1)):
        for i in range(n):
            _image(root / cat / "test" / "crack" / f"{i:03d}.png", i)
            _mask(root / cat / "ground_truth" / "crack" / f"{i:03d}_mask.png", _square())
            _image(root / cat / "train" / "good" / f"{i:03d}.png", 10 + i)
    d = detect(root)
    assert d.source["path"] == str(root / "bottle") and d.n_paired == 6  # the most masks, and its train/good
    assert d.source["labels"]["path"] == str(root / "bottle" / "ground_truth")
    assert d.source["labels"]["empty_when_missing"] == ["train/good/**"]  # not the other categories' train/good
    note = d.notes["path"]
    assert "3 folders hold images and masks in this layout (bottle, screw, zipper): separate datasets" in note
    assert f"segops plan {root / 'screw'}" in note and "outside it" not in note
    assert note.endswith("; 9 image(s) outside bottle are left out")  # the other categories' images and masks


def _stack(path: Path, pages: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(p) for p in pages]
    images[0].save(path, save_all=True, append_images=images[1:])


def test_masks_named_with_another_word_isbi_2012_stacks(tmp_path: Path) -> None:
    """ISBI 2012 as downloaded: train-volume.tif (a page per slice), train-labels.tif, test-volume.tif.
    The masks' name swaps a word; the test stack without labels is test data, not a defect-free part."""
    rng = np.random.default_rng(0)
    pages = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(3)]
    labels = [np.where(rng.random((16, 16)) > 0.7, 0, 255).astype(np.uint8) for _ in range(3)]
    _stack(tmp_path / "train-volume.tif", pages)
    _stack(tmp_path / "train-labels.tif", labels)
    _stack(tmp_path / "test-volume.tif", pages)
    d = detect(tmp_path)
    labels_spec = d.source["labels"]
    assert labels_spec["pattern"] == "{rel_stem}.tif" and labels_spec["replace"] == {"volume": "labels"}
    assert "empty_when_missing" not in labels_spec and "named as test data" in d.notes["labels"]
    source = ImageSource.model_validate(d.source)
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == ["test-volume.tif", "train-volume.tif"]  # the labels are no input
    resolver = build_resolver(source.labels)
    rows = {
        (r["rel_path"], r["frame"]): r for f in files for r in decode_file(f["path"], f["rel_path"], source, resolver)
    }
    for k in range(3):  # page k of the labels is the label of page k
        assert np.array_equal(rows[("train-volume.tif", k)]["label"], labels[k] // 255)
        assert not rows[("test-volume.tif", k)]["has_label"]
    assert resolver.all_label_keys() == {str((tmp_path / "train-labels.tif").resolve())}


def test_cityscapes_names_and_a_suffix_with_a_mask_word(tmp_path: Path) -> None:
    for city, n in (("aachen", 0), ("bremen", 1)):
        stem = f"{city}_000000_00001{n}"
        _image(tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", n)
        for kind, values in (("labelIds", _square(value=7)), ("color", _square(value=200))):
            _mask(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_{kind}.png", values)
    d = detect(tmp_path)
    assert d.source["path"] == str(tmp_path / "leftImg8bit")
    assert d.source["labels"]["replace"] == {"leftImg8bit": "gtFine_labelIds"}  # the one with a mask word
    assert d.n_paired == 2
    for i in range(3):  # EPFL mitochondria: training.tif + training_groundtruth.tif
        _image(tmp_path / "epfl" / f"vol{i}.tif", i)
        _mask(tmp_path / "epfl" / f"vol{i}_groundtruth.tif", _square())
    e = detect(tmp_path / "epfl")
    assert e.source["labels"]["pattern"] == "{rel_stem}_groundtruth.tif" and "replace" not in e.source["labels"]
    assert (e.n_images, e.n_paired) == (3, 3)


def test_a_mask_split_over_numbered_files_is_read_as_one_busi(tmp_path: Path) -> None:
    """BUSI: ``benign (3).png`` with ``benign (3)_mask.png`` and a second lesion in ``benign (3)_mask_1.png``."""
    second = np.zeros((24, 32), np.uint8)
    second[16:22, 20:30] = 255
    for i in (1, 2, 3):
        _image(tmp_path / "benign" / f"benign ({i}).png", i)
        _mask(tmp_path / "benign" / f"benign ({i})_mask.png", _square())
    _mask(tmp_path / "benign" / "benign (3)_mask_1.png", second)
    d = detect(tmp_path)
    assert d.source["labels"]["pattern"] == "{rel_stem}_mask.png" and d.source["labels"]["parts"] is True
    assert (d.n_images, d.n_paired) == (3, 3)  # the part is no image
    source = ImageSource.model_validate(d.source)
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == [f"benign/benign ({i}).png" for i in (1, 2, 3)]
    labels = {f["rel_path"]: decode_file(f["path"], f["rel_path"], source)[0]["label"] for f in files}
    assert np.array_equal(labels["benign/benign (3).png"], (_square() | second) // 255)  # both lesions
    assert np.array_equal(labels["benign/benign (1).png"], _square() // 255)


def test_oxford_pets_trimaps_one_folder_down_and_background_by_coverage(tmp_path: Path) -> None:
    """images/x.jpg + annotations/trimaps/x.png (annotations/xmls/ beside), values 1 pet, 2 background,
    3 border: no 0 is stored, so the value covering the most pixels is background."""
    trimap = np.full((24, 32), 2, np.uint8)
    trimap[4:16, 6:20] = 1
    trimap[16, 6:20] = 3
    for i in range(3):
        _image(tmp_path / "images" / f"Abyssinian_{i}.jpg", i)
        _mask(tmp_path / "annotations" / "trimaps" / f"Abyssinian_{i}.png", trimap)
        (tmp_path / "annotations" / "xmls").mkdir(parents=True, exist_ok=True)
        (tmp_path / "annotations" / "xmls" / f"Abyssinian_{i}.xml").write_text("<annotation/>")
    d = detect(tmp_path)
    assert d.source["labels"]["path"] == str(tmp_path / "annotations")
    assert d.source["labels"]["pattern"] == "trimaps/{rel_stem}.png" and d.n_paired == 3
    assert d.source["labels"]["values"] == {1: 1, 2: 0, 3: 2} and d.classes == 3
    binary = np.where(trimap == 1, 2, 1).astype(np.uint8)  # masks stored as 1 = background, 2 = object
    census = mask_census([_write(tmp_path / "b.png", binary)])
    assert classify_masks(census, None, None)[0] == {"kind": "mask-png", "values": {1: 0, 2: 1}}


def _write(path: Path, values: np.ndarray) -> Path:
    _mask(path, values)
    return path


def test_split_folders_each_beside_its_mask_folder_are_one_dataset(tmp_path: Path) -> None:
    """Massachusetts Roads: train/ + train_labels/, val/ + val_labels/, test/ + test_labels/ (tiff images,
    tif masks): every split is read, not only the one with the most masks."""
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(n):
            _image(tmp_path / split / f"{i:05d}_15.tiff", i)
            _mask(tmp_path / f"{split}_labels" / f"{i:05d}_15.tif", _square())
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("split-folders", 6, 6) and "path" not in d.notes
    assert d.source["path"] == d.source["labels"]["path"] == str(tmp_path)
    assert d.source["labels"]["pattern"] == "{rel_dir}_labels/{stem}.tif"
    source = ImageSource.model_validate(d.source)
    files = [f["rel_path"] for f in list_source_files(source)]
    assert files == sorted(f"{s}/{i:05d}_15.tiff" for s, n in (("train", 3), ("val", 1), ("test", 2)) for i in range(n))
    row = decode_file(str(tmp_path / "val" / "00000_15.tiff"), "val/00000_15.tiff", source)[0]
    assert np.array_equal(row["label"], _square() // 255)


@pytest.mark.parametrize(
    ("image_folder", "mask_folder"), [("{}_img", "{}_lab"), ("images_{}", "masks_{}"), ("{}-images", "{}-GT")]
)
def test_split_folders_named_by_split_and_word_are_one_dataset(
    tmp_path: Path, image_folder: str, mask_folder: str
) -> None:
    """DeepCrack: train_img/ + train_lab/, test_img/ + test_lab/ (and the word before the split:
    images_train/ + masks_train/): both splits are read, each image's mask from its own split's
    mask folder even where the two splits reuse file names."""
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            _image(tmp_path / image_folder.format(split) / f"{i:03d}.jpg", i)
            _mask(
                tmp_path / mask_folder.format(split) / f"{i:03d}.png",
                _square() if split == "train" else 255 - _square(),
            )
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("split-folders", 5, 5) and "path" not in d.notes
    assert d.source["path"] == d.source["labels"]["path"] == str(tmp_path)
    assert sorted(d.source["include"]) == sorted(f"{image_folder.format(s)}/**" for s in ("train", "test"))
    source = ImageSource.model_validate(d.source)
    files = [f["rel_path"] for f in list_source_files(source)]
    assert len(files) == 5 and all(
        f.split("/")[0] in (image_folder.format("train"), image_folder.format("test")) for f in files
    )
    train = decode_file(
        str(tmp_path / image_folder.format("train") / "000.jpg"), f"{image_folder.format('train')}/000.jpg", source
    )
    test = decode_file(
        str(tmp_path / image_folder.format("test") / "000.jpg"), f"{image_folder.format('test')}/000.jpg", source
    )
    assert np.array_equal(train[0]["label"], _square() // 255)
    assert np.array_equal(test[0]["label"], 1 - _square() // 255)  # the test split's own mask, not train's


def test_split_folders_each_with_images_and_masks_are_one_dataset(tmp_path: Path) -> None:
    """Kaggle / Roboflow exports: train/images + train/masks, valid/…, test/… (MVTec's categories, each
    with test/ + ground_truth/, stay separate datasets: see the test of an MVTec root above)."""
    for split, n in (("train", 3), ("valid", 1), ("test", 2)):
        for i in range(n):
            _image(tmp_path / split / "images" / f"img_{i}.jpg", i)
            _mask(tmp_path / split / "masks" / f"img_{i}.png", _square())
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("split-folders", 6, 6)
    assert d.source["include"] == ["*/images/**"] and d.source["labels"]["pattern"] == "{parent_dir}/masks/{stem}.png"
    source = ImageSource.model_validate(d.source)
    files = [f["rel_path"] for f in list_source_files(source)]
    assert len(files) == 6 and all("/images/" in f for f in files)
    row = decode_file(str(tmp_path / "valid" / "images" / "img_0.jpg"), "valid/images/img_0.jpg", source)[0]
    assert np.array_equal(row["label"], _square() // 255)


@pytest.mark.parametrize(
    ("image_folder", "mask_folder", "suffix"),
    [("{0}-org-img", "{0}-label-img", "_lab"), ("{0}_images", "{0}_masks", "")],  # FloodNet; a Kaggle export
)
def test_split_folders_holding_folders_named_with_the_split_are_one_dataset(
    tmp_path: Path, image_folder: str, mask_folder: str, suffix: str
) -> None:
    """FloodNet: ``train/train-org-img/6000.jpg`` + ``train/train-label-img/6000_lab.png``, ``val/val-…``,
    and ``test/test-org-img`` whose masks were withheld: one dataset (not one per split), each image's
    mask from its split's folder even where splits reuse names, the test photos segmented unlabelled."""
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        for i in range(n):
            _image(tmp_path / split / image_folder.format(split) / f"{i:03d}.jpg", i)
            if split != "test":
                values = _square() if split == "train" else 255 - _square()
                _mask(tmp_path / split / mask_folder.format(split) / f"{i:03d}{suffix}.png", values)
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("split-folders", 7, 5) and "path" not in d.notes
    assert d.source["path"] == str(tmp_path)
    assert sorted(d.source["include"]) == sorted(f"{s}/{image_folder.format(s)}/**" for s in ("train", "val", "test"))
    assert "2 image(s) have no mask, named as test data" in d.notes["labels"]
    source = ImageSource.model_validate(d.source)
    assert len(list_source_files(source)) == 7
    rows = {
        s: decode_file(
            str(tmp_path / s / image_folder.format(s) / "000.jpg"), f"{s}/{image_folder.format(s)}/000.jpg", source
        )[0]
        for s in ("train", "val", "test")
    }
    assert np.array_equal(rows["train"]["label"], _square() // 255)
    assert np.array_equal(rows["val"]["label"], 1 - _square() // 255)  # the val split's own mask, not train's
    assert not rows["test"]["has_label"]


def _mvtec_3d_category(root: Path) -> None:
    """MVTec 3D-AD's category: ``test/<defect>/rgb/000.png`` + ``test/<defect>/gt/000.png`` (and point
    clouds in ``xyz/``) for each defect and for ``test/good`` (empty masks), ``train/good/{rgb,xyz}``."""
    for defect in ("crack", "hole", "good"):
        for i in range(3):
            _image(root / "test" / defect / "rgb" / f"{i:03d}.png", i, ext_mode="L")
            _mask(root / "test" / defect / "gt" / f"{i:03d}.png", _square(value=0 if defect == "good" else 255))
            _image(root / "test" / defect / "xyz" / f"{i:03d}.tiff", 20 + i)
    for i in range(4):
        _image(root / "train" / "good" / "rgb" / f"{i:03d}.png", 30 + i)
        _image(root / "train" / "good" / "xyz" / f"{i:03d}.tiff", 40 + i)


def test_mvtec_3d_ad_defect_folders_each_with_rgb_and_gt_are_one_dataset(tmp_path: Path) -> None:
    """MVTec 3D-AD's category: one dataset from the category folder (before: one defect folder, the
    others named as separate datasets), point clouds left out, the clean training parts as empty masks."""
    _mvtec_3d_category(tmp_path)
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("split-folders", 13, 13) and "path" not in d.notes
    labels = d.source["labels"]
    assert d.source["include"] == ["**/rgb/**"] and labels["pattern"] == "{parent_dir}/gt/{stem}.png"
    assert "class_files" not in labels and labels["empty_when_missing"] == ["train/good/rgb/**"]
    source = ImageSource.model_validate(d.source)
    assert len(list_source_files(source)) == 13
    [hole] = decode_file(str(tmp_path / "test/hole/rgb/001.png"), "test/hole/rgb/001.png", source)
    [clean] = decode_file(str(tmp_path / "train/good/rgb/000.png"), "train/good/rgb/000.png", source)
    assert np.array_equal(hole["label"], _square() // 255)
    assert clean["has_label"] and not np.asarray(clean["label"]).any()


def test_mvtec_3d_ad_root_plans_one_category_and_names_the_others(tmp_path: Path) -> None:
    for category in ("bagel", "tire"):
        _mvtec_3d_category(tmp_path / category)
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("split-folders", 13, 13)
    assert d.source["path"] == str(tmp_path / "bagel") and d.source["include"] == ["**/rgb/**"]
    assert "2 folders hold images and masks in this layout (bagel, tire)" in d.notes["path"]
    assert f"plan another with: segops plan {tmp_path / 'tire'}" in d.notes["path"]


def test_a_test_split_without_masks_is_segmented_not_excluded(tmp_path: Path) -> None:
    """Kaggle's usual export: train/ and valid/ with masks, test/images without any: the images the
    user wants masks for. They stay in the source, unlabelled; a figure beside them is still left out."""
    for split, n in (("train", 4), ("valid", 2), ("test", 3)):
        for i in range(n):
            _image(tmp_path / split / "images" / f"img_{i}.jpg", i)
            if split != "test":
                _mask(tmp_path / split / "masks" / f"img_{i}.png", _square())
    _image(tmp_path / "test" / "images" / "overview.jpg", 9)
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("split-folders", 9, 6)  # the figure is not an image of the data
    assert d.source["exclude"] == ["test/images/overview.jpg"]
    assert "3 image(s) have no mask, named as test data" in d.notes["labels"]
    source = ImageSource.model_validate(d.source)
    files = sorted(f["rel_path"] for f in list_source_files(source))
    assert [f for f in files if f.startswith("test/")] == [f"test/images/img_{i}.jpg" for i in range(3)]


@pytest.mark.parametrize("top", ["", "satellite_roads/"])
def test_a_validation_split_without_masks_is_segmented_not_excluded(tmp_path: Path, top: str) -> None:
    """DeepGlobe's export: ``train/<id>_sat.jpg`` + ``<id>_mask.png`` beside ``valid/`` and ``test/``,
    which hold photos only (their masks were withheld). Every mask shows a road, so the unmasked photos
    would pass for defect-free parts; named as splits, they are data to segment, unlabelled. The
    swapped word ``sat`` is a whole word: a ``satellite_roads/`` folder above keeps its name."""
    for i in range(6):
        _image(tmp_path / f"{top}train" / f"{100 + i}_sat.jpg", i)
        _mask(tmp_path / f"{top}train" / f"{100 + i}_mask.png", _square())
    for split in ("valid", "test"):
        for i in range(2):
            _image(tmp_path / f"{top}{split}" / f"{200 + i}_sat.jpg", 10 + i)
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("same-folder", 10, 6)
    assert d.source["labels"]["replace"] == {"sat": "mask"}
    assert "exclude" not in d.source and "empty_when_missing" not in d.source["labels"]
    assert "4 image(s) have no mask, named as test data" in d.notes["labels"]
    source = ImageSource.model_validate(d.source)
    files = sorted(f["rel_path"] for f in list_source_files(source))
    assert [f for f in files if "valid/" in f] == [f"{top}valid/200_sat.jpg", f"{top}valid/201_sat.jpg"]
    assert not decode_file(str(tmp_path / f"{top}valid/200_sat.jpg"), f"{top}valid/200_sat.jpg", source)[0]["has_label"]
    [row] = decode_file(str(tmp_path / f"{top}train/100_sat.jpg"), f"{top}train/100_sat.jpg", source)
    assert np.array_equal(row["label"], _square() // 255)


def _leaves(seed: int, n: int) -> np.ndarray:
    """An instance-id mask of ``n`` discs numbered 1..n (later discs on top)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((24, 32), np.uint8)
    yy, xx = np.ogrid[:24, :32]
    for k in range(1, n + 1):
        y, x = rng.integers(4, 20), rng.integers(4, 28)
        ids[(yy - y) ** 2 + (xx - x) ** 2 < 9] = k
    return ids


def test_cvppp_rgb_label_and_fg_files_in_one_folder(tmp_path: Path) -> None:
    """CVPPP: plant_rgb.png (the photo), plant_label.png (palette instance ids) and plant_fg.png (the
    binary plant) and plant_centers.png (a dot per leaf) side by side, as CVPPP 2017 ships A1-A4. The
    photo pairs with its label, not the fg mask with the label; the fg and centre files are left out
    as other files of a paired plant (they made two thirds of the images, so the rule for stray files,
    which needs half of the images paired, left them in as images to segment), and no file is ever
    read as its own mask."""
    for i in range(6):
        _image(tmp_path / "A1" / f"plant{i:03d}_rgb.png", i, ext_mode="L")
        leaves = _leaves(i, 2 + i)
        label = Image.fromarray(leaves, "P")
        label.putpalette([0, 0, 0] + [(37 * k) % 256 for k in range(765)])
        label.save(tmp_path / "A1" / f"plant{i:03d}_label.png")
        _mask(tmp_path / "A1" / f"plant{i:03d}_fg.png", ((leaves > 0) * 255).astype(np.uint8))
        _mask(tmp_path / "A1" / f"plant{i:03d}_centers.png", ((leaves > 0) & (leaves % 2 == 0)).astype(np.uint8) * 255)
    d = detect(tmp_path)
    labels = d.source["labels"]
    assert (labels["kind"], labels["pattern"], labels["replace"]) == (
        "instance-png",
        "{rel_stem}.png",
        {"rgb": "label"},
    )
    assert d.source["exclude"] == ["**/*_centers.png", "**/*_fg.png"] and (d.n_images, d.n_paired) == (6, 6)
    source = ImageSource.model_validate(d.source)
    assert [f["rel_path"] for f in list_source_files(source)] == [f"A1/plant{i:03d}_rgb.png" for i in range(6)]
    row = decode_file(str(tmp_path / "A1" / "plant003_rgb.png"), "A1/plant003_rgb.png", source)[0]
    assert row["label_uri"] == str(tmp_path / "A1" / "plant003_label.png")
    assert len(np.unique(row["label"])) == 1 + 5  # background and the 5 leaves

    # without the exclude, a fg mask is an input whose pattern names itself: unlabelled, not its own mask
    listed = ImageSource.model_validate({**d.source, "exclude": []})
    fg = decode_file(str(tmp_path / "A1" / "plant003_fg.png"), "A1/plant003_fg.png", listed)[0]
    assert not fg["has_label"] and fg["label_uri"] == ""


def test_sibling_files_are_a_paired_images_name_with_another_whole_word() -> None:
    images = ["A1/p1_rgb.png", "A1/p1_fg.png", "A1/p1_centers.png", "A1/p2_rgb.png", "A2/p1_fg.png", "A1/p3_fg.png"]
    assert sibling_files(images, {"A1/p1_rgb.png", "A1/p2_rgb.png"}, {"rgb": "label"}) == [
        "A1/p1_fg.png",
        "A1/p1_centers.png",
    ]  # not another folder's p1, not a plant without a paired photo
    # ISBI: train-volume.tif pairs with train-labels.tif; test-volume.tif is data, not a sibling
    volumes = ["train-volume.tif", "test-volume.tif"]
    assert sibling_files(volumes, {"train-volume.tif"}, {"volume": "labels"}) == []
    assert sibling_files(images, {"A1/p1_rgb.png"}, None) == []

    # a paired image's name plus words of letters, shared by 3 or more: the sample's other files
    many = [f"ISIC_{i}.jpg" for i in range(4)] + [f"ISIC_{i}_superpixels.png" for i in range(4)]
    assert sibling_files(many, {f"ISIC_{i}.jpg" for i in range(4)}, None) == [
        f"ISIC_{i}_superpixels.png" for i in range(4)
    ]
    numbered = ["scan.png", "scan_2.png", "scan_3.png", "scan_4.png", "b.png", "b_extra.png"]
    assert sibling_files(numbered, {"scan.png", "b.png"}, None) == []  # numbers, and an ending only one file has


def test_isic_2017_superpixel_maps_beside_the_photos_are_left_out(tmp_path: Path) -> None:
    """ISIC 2017: ``ISIC-2017_Training_Data/ISIC_0000000.jpg`` beside ``ISIC_0000000_superpixels.png``,
    masks in ``ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png``. Every mask shows a
    lesion, so the unmasked superpixel maps would pass for 6 lesion-free photos trained as empty masks."""
    for i in range(6):
        _image(tmp_path / "ISIC-2017_Training_Data" / f"ISIC_{i:07d}.jpg", i)
        _image(tmp_path / "ISIC-2017_Training_Data" / f"ISIC_{i:07d}_superpixels.png", 10 + i)
        _mask(tmp_path / "ISIC-2017_Training_Part1_GroundTruth" / f"ISIC_{i:07d}_segmentation.png", _square())
    d = detect(tmp_path)
    assert (d.pairing, d.n_images, d.n_paired) == ("parallel-tree", 6, 6)
    assert d.source["exclude"] == ["**/*_superpixels.png"]
    assert "empty_when_missing" not in d.source["labels"]


def test_masks_named_with_a_letter_before_the_images_number(tmp_path: Path) -> None:
    """ETIS-LaribPolypDB: ``ETIS-LaribPolypDB/12.tif`` with its mask ``GroundTruth/p12.tif``."""
    for i in range(1, 5):
        _image(tmp_path / "ETIS-LaribPolypDB" / f"{i}.tif", i)
        _mask(tmp_path / "GroundTruth" / f"p{i}.tif", _square() if i % 2 else 255 - _square())
    d = detect(tmp_path)
    assert (d.pairing, d.n_paired, d.source["labels"]["pattern"]) == ("parallel-tree", 4, "{rel_dir}/p{stem}.tif")
    source = ImageSource.model_validate(d.source)
    [row] = decode_file(str(tmp_path / "ETIS-LaribPolypDB" / "2.tif"), "2.tif", source)
    assert np.array_equal(row["label"], 1 - _square() // 255)


def test_gif_masks_pair_and_read_as_their_palette_indices(tmp_path: Path) -> None:
    """Carvana's and DRIVE's masks are GIFs (palette images, index 0 background): a mask folder of
    them pairs as one of PNGs does."""
    masks = []
    for i in range(3):
        _image(tmp_path / "images" / f"c{i}_01.jpg", i)
        masks.append(_square(value=1))
        masks[-1][20:, :4] = i % 2  # differ a little
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(masks[-1], "P").save(tmp_path / "masks" / f"c{i}_01_mask.gif")
    d = detect(tmp_path)
    assert d.pairing == "parallel-tree" and d.n_paired == 3 and d.mask_kind == "binary"
    assert d.source["labels"]["pattern"] == "{rel_stem}_mask.gif"
    spec = MaskPngLabels(**d.source["labels"])
    for i, mask in enumerate(masks):
        np.testing.assert_array_equal(spec_mask(spec, tmp_path / "masks" / f"c{i}_01_mask.gif", (24, 32)), mask)


def test_thin_cracks_saved_as_jpeg_are_binarised_not_dozens_of_classes(tmp_path: Path) -> None:
    """A 3-pixel crack saved as JPEG: every foreground pixel lies on an edge, the noise reaches past
    1/16 of the range on 2 % of pixels, and the plan took its 43 stored values for 43 classes."""
    yy, xx = np.mgrid[:32, :40]
    masks = [((np.abs(yy - xx + i) < 2) * 255).astype(np.uint8) for i in range(6)]
    census, (fields, task, classes, kind, why) = _census(tmp_path, masks, ".jpg")
    assert len(census.values) > 10 and census.lossy  # the noise this is about
    assert (fields, task, classes, kind) == ({"kind": "mask-png", "threshold": 128}, "semantic", 2, "anti-aliased")


def test_real_iad_sample_folders_inside_ok_are_one_defect_free_glob(tmp_path: Path) -> None:
    """Real-IAD: ``<object>/OK/S0001/*.jpg`` … (a folder per part, five camera views) and
    ``NG/<defect>/S0001/`` with each view's mask beside it where the defect shows. The defect-free
    parts are one glob, ``OK/**``, not one per part folder (hundreds in the real set)."""
    root = tmp_path / "realiad_1024" / "audiojack"
    for kind, n in (("OK", 4), ("NG/AK", 3)):
        for s in range(1, n + 1):
            for c in range(1, 4):
                stem = root / kind / f"S{s:04d}" / f"audiojack_{s:04d}_C{c}"
                _image(stem.with_suffix(".jpg"), s * 10 + c)
                if kind != "OK" and c == 1:
                    _mask(stem.with_suffix(".png"), _square())
    d = detect(tmp_path)
    assert d.source["labels"]["empty_when_missing"] == ["realiad_1024/audiojack/OK/**"]
    assert d.notes["labels.empty_when_missing"].startswith("12 images in realiad_1024/audiojack/OK have no mask")
    assert (d.n_images, d.n_paired) == (21, 15)

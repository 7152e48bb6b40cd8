"""Masks told by their contents: a mask folder whose name has no mask word (the Concrete Crack
Segmentation set's ``rgb/`` + ``BW/``), found by ``segops plan`` as ``--labels`` would name it."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.decode import decode_file, list_source_files
from segops.data.mask_content import mask_folder_by_content
from segops.data.pairing import detect
from segops.errors import PlanError

H, W = 32, 40


def _crack(i: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((np.abs(yy - xx + i) < 2) * 255).astype(np.uint8)


def _layout(root: Path, images: str, masks: str, n: int = 6, mask_ext: str = ".jpg") -> None:
    rng = np.random.default_rng(0)
    (root / images).mkdir(parents=True)
    (root / masks).mkdir(parents=True)
    for i in range(n):
        photo = rng.integers(0, 150, (H, W, 3), dtype=np.uint8)
        photo[_crack(i) > 0] += 90
        Image.fromarray(photo).save(root / images / f"{i:05d}.jpg")
        Image.fromarray(_crack(i)).save(root / masks / f"{i:05d}{mask_ext}", quality=75)


def test_a_folder_of_jpeg_masks_named_without_a_mask_word_is_the_mask_folder(tmp_path: Path) -> None:
    _layout(tmp_path, "rgb", "BW")
    masks, why = mask_folder_by_content(
        tmp_path, sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg"))
    )
    assert masks == "BW" and why.startswith("BW holds mask-like files (one channel, two values or nearly) under")
    d = detect(tmp_path)
    assert d.pairing == "content" and d.n_paired == 6 and d.mask_kind == "anti-aliased"
    assert d.source["path"] == str(tmp_path / "rgb")
    assert d.source["labels"] | {"threshold": None} == {
        "kind": "mask-png",
        "path": str(tmp_path / "BW"),
        "pattern": "{rel_stem}.jpg",
        "threshold": None,
    }
    assert d.notes["labels"].startswith("content pairing (BW holds mask-like files")


def test_two_folders_of_photos_under_the_same_names_are_no_pairing(tmp_path: Path) -> None:
    _layout(tmp_path, "left", "right")
    for path in (tmp_path / "right").iterdir():  # the second folder: photos too (a stereo pair)
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
    with pytest.raises(PlanError, match="no mask for any of them"):
        detect(tmp_path)


def test_masks_beside_their_images_under_an_observers_suffix_pair_by_content(tmp_path: Path) -> None:
    """CHASE_DB1: ``Image_01L.jpg`` with ``Image_01L_1stHO.png`` and ``Image_01L_2ndHO.png``, two
    observers' vessels under a suffix without a mask word. The first observer's are the labels; the
    second's are neither labels nor images (excluded)."""
    rng = np.random.default_rng(2)
    for i in range(1, 5):
        for eye in "LR":
            name = f"Image_{i:02d}{eye}"
            Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(tmp_path / f"{name}.jpg")
            Image.fromarray(_crack(i)).save(tmp_path / f"{name}_1stHO.png")
            Image.fromarray(_crack(i + 1)).save(tmp_path / f"{name}_2ndHO.png")
    d = detect(tmp_path)
    assert d.pairing == "content" and (d.n_images, d.n_paired) == (8, 8)
    assert d.source["labels"] == {"kind": "mask-png", "path": str(tmp_path), "pattern": "{rel_stem}_1stHO.png"}
    assert d.source["exclude"] == ["**/*_2ndHO.png"] and d.notes["exclude"] == "the other mask-like files"
    assert d.notes["labels"].startswith(
        "content pairing (8 of 8 images have a mask-like file at {rel_stem}_1stHO.png; those at "
        "{rel_stem}_2ndHO.png are left out (another reader's or region masks)): 8 of 8 images have a mask"
    )


def test_a_mask_in_a_folder_named_after_its_image_pairs_by_example(tmp_path: Path) -> None:
    """PH2: ``IMD002/IMD002_Dermoscopic_Image/IMD002.bmp`` with ``IMD002/IMD002_lesion/IMD002_lesion.bmp``
    (and, for some cases, colour-region masks in ``IMD002_roi/``): the pattern found from the examples,
    the region masks excluded, nothing else taken for an image."""
    rng = np.random.default_rng(3)
    for i in range(2, 8):
        case = tmp_path / "PH2 Dataset images" / f"IMD{i:03d}"
        for sub in ("Dermoscopic_Image", "lesion", "roi"):
            (case / f"IMD{i:03d}_{sub}").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            case / f"IMD{i:03d}_Dermoscopic_Image" / f"IMD{i:03d}.bmp"
        )
        Image.fromarray(_crack(i)).save(case / f"IMD{i:03d}_lesion" / f"IMD{i:03d}_lesion.bmp")
        Image.fromarray(_crack(i + 1)).save(case / f"IMD{i:03d}_roi" / f"IMD{i:03d}_R1_Label4.bmp")
    d = detect(tmp_path)
    assert d.pairing == "content" and (d.n_images, d.n_paired) == (6, 6)
    assert d.source["labels"]["pattern"] == "{parent_dir}/{stem}_lesion/{stem}_lesion.bmp"
    assert d.source["exclude"] == ["**/*_roi/*_R1_Label4.bmp", "**/*_lesion/*_lesion.bmp"]
    assert d.notes["exclude"] == "the masks and the other mask-like files"
    listed = [f["rel_path"] for f in list_source_files(ImageSource.model_validate(d.source))]
    assert len(listed) == 6 and all("_Dermoscopic_Image/" in f for f in listed)  # no lesion mask read as an input
    # the region masks removed, the lesions alone still pair; the images are no masks
    for f in tmp_path.rglob("*_R1_Label4.bmp"):
        f.unlink()
    d = detect(tmp_path)
    assert d.source["labels"]["pattern"] == "{parent_dir}/{stem}_lesion/{stem}_lesion.bmp"
    assert d.source["exclude"] == ["**/*_lesion/*_lesion.bmp"]


def test_netpbm_images_with_two_observers_masks_in_folders_of_their_own_pair_by_example(tmp_path: Path) -> None:
    """STARE: ``stare-images/im0001.ppm`` with ``labels-ah/im0001.ah.ppm`` and ``labels-vk/im0001.vk.ppm``
    (two observers): the first observer's masks, read from the root; the second's and the masks
    themselves are no inputs."""
    rng = np.random.default_rng(5)
    for sub in ("stare-images", "labels-ah", "labels-vk"):
        (tmp_path / sub).mkdir()
    for i in range(1, 7):
        vessels = _crack(i)
        Image.fromarray(rng.integers(0, 120, (H, W, 3), dtype=np.uint8)).save(
            tmp_path / "stare-images" / f"im{i:04d}.ppm"
        )
        Image.fromarray(vessels).save(tmp_path / "labels-ah" / f"im{i:04d}.ah.ppm")
        Image.fromarray(np.roll(vessels, 1, axis=0)).save(tmp_path / "labels-vk" / f"im{i:04d}.vk.ppm")
    d = detect(tmp_path)
    assert d.pairing == "content" and (d.n_images, d.n_paired) == (6, 6)
    assert d.source["path"] == str(tmp_path) and d.source["labels"]["pattern"] == "labels-ah/{stem}.ah.ppm"
    assert d.source["exclude"] == ["labels-vk/*.vk.ppm", "labels-ah/*.ah.ppm"]
    source = ImageSource.model_validate(d.source)
    assert sorted(f["rel_path"] for f in list_source_files(source)) == [
        f"stare-images/im{i:04d}.ppm" for i in range(1, 7)
    ]
    [row] = decode_file(str(tmp_path / "stare-images/im0003.ppm"), "stare-images/im0003.ppm", source)
    np.testing.assert_array_equal(np.asarray(row["label"]).reshape(H, W), (_crack(3) > 0).astype(np.uint8))


def test_objects_numbered_beside_their_image_are_not_taken_for_readers(tmp_path: Path) -> None:
    """``x.jpg`` with ``x_0.png``, ``x_1.png``: one object per file. Taking ``_0`` for the label and
    dropping ``_1`` as a second reader's would lose objects: no pattern is found by example, and the
    plan stops with its error (``--task instance`` and mask-folder labels are the user's way)."""
    rng = np.random.default_rng(4)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(tmp_path / f"part{i:03d}.jpg")
        first, second = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
        first[2:8, 2:10], second[20:28, 20:30] = 255, 255
        Image.fromarray(first).save(tmp_path / f"part{i:03d}_0.png")
        Image.fromarray(second).save(tmp_path / f"part{i:03d}_1.png")
    with pytest.raises(PlanError, match="no mask for any of them"):
        detect(tmp_path)
    # the same per-object files in a masks/ folder beside images/: not paired by their id either
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for f in tmp_path.glob("part*.*"):
        f.rename(tmp_path / ("images" if f.suffix == ".jpg" else "masks") / f.name)
    with pytest.raises(PlanError, match="no mask for any of them"):
        detect(tmp_path)
    for f in [*(tmp_path / "images").iterdir(), *(tmp_path / "masks").iterdir()]:
        f.rename(tmp_path / f.name)
    # the same two files drawn by two readers of one region: the first is the label
    for i in range(5):
        Image.fromarray(np.asarray(Image.open(tmp_path / f"part{i:03d}_0.png"))).save(tmp_path / f"part{i:03d}_1.png")
    d = detect(tmp_path)
    assert d.source["labels"]["pattern"] == "{rel_stem}_0.png" and d.source["exclude"] == ["**/*_1.png"]


def _drive(root: Path) -> None:
    """DRIVE's layout: ``training/images/21_training.tif`` with its vessels in
    ``training/1st_manual/21_manual1.gif`` and its field of view (the same disc for every image) in
    ``training/mask/21_training_mask.gif``; ``test/`` alike, with a second observer's ``2nd_manual``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    fov = (yy - H / 2) ** 2 + (xx - W / 2) ** 2 < (H / 2 - 1) ** 2
    for split, ids in (("training", range(21, 27)), ("test", range(1, 5))):
        for sub in ("images", "1st_manual", "2nd_manual", "mask"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in ids:
            vessels = (_crack(i) > 0) & fov
            photo = rng.integers(0, 120, (H, W, 3), dtype=np.uint8) + 100 * vessels[..., None].astype(np.uint8)
            Image.fromarray(photo).save(root / split / "images" / f"{i:02d}_{split}.tif")
            Image.fromarray((vessels * 255).astype(np.uint8)).save(root / split / "1st_manual" / f"{i:02d}_manual1.gif")
            if split == "test":
                second = np.roll(vessels, 1, axis=1)
                Image.fromarray((second * 255).astype(np.uint8)).save(
                    root / split / "2nd_manual" / f"{i:02d}_manual2.gif"
                )
            Image.fromarray((fov * 255).astype(np.uint8)).save(root / split / "mask" / f"{i:02d}_{split}_mask.gif")


def test_vessels_that_share_only_an_id_with_their_images_pair_and_the_field_of_view_is_no_label(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from segops.data.mask_names import match_pattern, name_id

    _drive(tmp_path)
    d = detect(tmp_path)
    assert d.pairing == "content" and not d.region_only and (d.n_images, d.n_paired) == (10, 10)
    assert d.source["path"] == str(tmp_path) and d.source["include"] == ["**/images/*"]
    assert d.source["labels"]["pattern"] == "{parent_dir}/1st_manual/{id}_manual1.gif"
    assert d.notes["labels"].endswith(
        f"{tmp_path / '{parent_dir}/mask/{stem}_mask.gif'} holds one region for every image (a field of view), no label"
    )
    assert "same region" not in caplog.text  # the field of view was set aside, not planned with a warning
    assert name_id("21_training") == "21" and match_pattern(
        d.source["labels"]["pattern"], "test/images/03_test.tif"
    ) == ("test/1st_manual/03_manual1.gif")
    # the planned source reads only the images, each with its vessels (not its field of view)
    source = ImageSource.model_validate(d.source)
    listed = [f["rel_path"] for f in list_source_files(source)]
    assert len(listed) == 10 and all("/images/" in f for f in listed)
    [row] = decode_file(str(tmp_path / "test/images/03_test.tif"), "test/images/03_test.tif", source)
    truth = np.asarray(Image.open(tmp_path / "test/1st_manual/03_manual1.gif")) > 0
    np.testing.assert_array_equal(np.asarray(row["label"]).reshape(H, W), truth.astype(np.uint8))


def test_ids_that_repeat_in_a_folder_pair_nothing_by_id(tmp_path: Path) -> None:
    from segops.data.mask_content import mask_pattern_by_id

    _drive(tmp_path)
    for f in (tmp_path / "training" / "images").iterdir():  # Image_21.tif …: every id is "Image"
        f.rename(f.with_name("Image_" + f.name))
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert mask_pattern_by_id(tmp_path, files) is None

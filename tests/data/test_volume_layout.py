"""``segops plan`` on volume files outside the nnU-Net layout (KiTS, LiTS, BTCV, suffixes, sibling
folders), and reading such a source: labels kept beside their images are never inputs (no Ray)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segops.cluster.datasets import rows_to_table
from segops.config.schema import VolumeSource
from segops.data.decode import decode_file, list_source_files
from segops.data.pairing import detect

AFFINE = np.diag([0.8, 0.8, 3.0, 1.0])


def _case(image: Path, label: Path | None, seed: int) -> None:
    """An int16 CT-like volume (as CT NIfTI files store it) and its two-class label."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 40, (12, 10, 4)).astype(np.int16)
    seg = np.zeros(data.shape, np.uint8)
    seg[3:8, 2:6, 1:3] = 1
    seg[4:6, 3:5, 2] = 2
    for path, array in ((image, data), (label, seg)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, AFFINE), path)


LAYOUTS = {
    "kits": (
        lambda n: (f"case_{n:05d}/imaging.nii.gz", f"case_{n:05d}/segmentation.nii.gz"),
        "",
        "",
        "{rel_dir}/segmentation.nii.gz",
    ),
    "lits": (
        lambda n: (f"volume-{n}.nii", f"segmentation-{n}.nii"),
        "",
        "",
        "{rel_dir}/segmentation-{case_number}.nii",
    ),
    "btcv": (
        lambda n: (f"img/img{n + 1:04d}.nii.gz", f"label/label{n + 1:04d}.nii.gz"),
        "img",
        "label",
        "{rel_dir}/label{case_number}.nii.gz",
    ),
    "suffix": (lambda n: (f"scans/p{n}.nii.gz", f"scans/p{n}_seg.nii.gz"), "", "", "{rel_dir}/{case}_seg.nii.gz"),
    "sibling": (lambda n: (f"images/x{n}.nii.gz", f"masks/x{n}.nii.gz"), "images", "masks", "{rel_dir}/{case}.nii.gz"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_plan_pairs_volume_files_and_the_source_reads_only_the_images(tmp_path: Path, layout: str) -> None:
    names, image_dir, label_dir, pattern = LAYOUTS[layout]
    for n in range(3):
        image, label = names(n)
        _case(tmp_path / image, tmp_path / label if n < 2 else None, n)  # the third case unlabelled
    d = detect(tmp_path)
    assert (d.pairing, d.task, d.classes, d.n_images) == ("volume-files", "semantic", 3, 3)
    assert d.n_paired == 2
    assert d.source == {
        "kind": "volumes",
        "path": str(tmp_path / image_dir) if image_dir else str(tmp_path),
        "labels": {
            "kind": "volume",
            "path": str(tmp_path / label_dir) if label_dir else str(tmp_path),
            "pattern": pattern,
        },
    }
    source = VolumeSource.model_validate(d.source)
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == sorted(
        names(n)[0][len(image_dir) + 1 :] if image_dir else names(n)[0] for n in range(3)
    )  # the labels beside the images are not cases
    cases = [decode_file(f["path"], f["rel_path"], source) for f in files]
    # the slices of one int16 volume: each its own buffer, or Ray's tensor column cannot hold them
    assert [rows_to_table(case).num_rows for case in cases] == [4, 4, 4]
    rows = [r for case in cases for r in case]
    assert {r["status"] for r in rows} == {"ok"}
    labelled = [r for r in rows if r["has_label"]]
    assert len(labelled) == 4 * d.n_paired and max(int(r["label"].max()) for r in labelled) == 2


def _brats(root: Path, n: int, skip: str | None = None) -> None:
    """A BraTS case folder: one file per modality (modality k holds the case's volume + 1000 * k, so a
    channel's position is readable from its values) and a label of values 0, 1, 2 and 4."""
    folder = root / f"BraTS_{n:05d}"
    _case(folder / "image.nii.gz", folder / f"BraTS_{n:05d}_seg.nii.gz", n)
    volume = np.asarray(nib.load(folder / "image.nii.gz").dataobj).astype(np.int16)
    (folder / "image.nii.gz").unlink()
    seg = np.asarray(nib.load(folder / f"BraTS_{n:05d}_seg.nii.gz").dataobj).copy()
    seg[seg == 2] = 4
    seg[0, 0, 0] = 2
    nib.save(nib.Nifti1Image(seg, AFFINE), folder / f"BraTS_{n:05d}_seg.nii.gz")
    for k, modality in enumerate(("flair", "t1", "t1ce", "t2")):
        if modality != skip:
            nib.save(nib.Nifti1Image(volume + 1000 * k, AFFINE), folder / f"BraTS_{n:05d}_{modality}.nii.gz")


def test_cases_of_one_file_per_modality_are_planned_with_named_channels(tmp_path: Path) -> None:
    """BraTS: four modalities and a label per case folder (before: a plan error asking to rename every
    file to nnU-Net's _0000 channels)."""
    for n in range(3):
        _brats(tmp_path, n)
    d = detect(tmp_path)
    assert d.source["channels"] == ["flair", "t1", "t1ce", "t2"] and (d.n_images, d.n_paired) == (3, 3)
    assert d.source["labels"]["pattern"] == "{rel_dir}/{case}_seg.nii.gz" and d.classes == 5
    assert "value(s) [3] in none of them (values [0, 1, 2, 4])" in d.notes["labels"]
    source = VolumeSource.model_validate(d.source)
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == [f"BraTS_{n:05d}/BraTS_{n:05d}_flair.nii.gz" for n in range(3)]
    rows = decode_file(files[1]["path"], files[1]["rel_path"], source)
    assert len(rows) == 4 and all(r["has_label"] for r in rows) and rows[0]["image"].shape == (4, 10, 12)
    offsets = [float(np.median(rows[0]["image"][k] - rows[0]["image"][0])) for k in range(4)]
    assert offsets == [0.0, 1000.0, 2000.0, 3000.0]  # flair, t1, t1ce, t2: the source's order
    assert rows[0]["group_id"].endswith("BraTS_00001") and sorted(np.unique(rows[2]["label"])) == [0, 1, 4]


def test_a_case_missing_a_named_channel_is_quarantined_naming_it(tmp_path: Path) -> None:
    _brats(tmp_path, 0)
    _brats(tmp_path, 1, skip="t1ce")
    labels = {"kind": "volume", "path": str(tmp_path), "pattern": "{rel_dir}/{case}_seg.nii.gz"}
    source = VolumeSource.model_validate(
        {"kind": "volumes", "path": str(tmp_path), "channels": ["flair", "t1", "t1ce", "t2"], "labels": labels}
    )
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == [f"BraTS_{n:05d}/BraTS_{n:05d}_flair.nii.gz" for n in range(2)]
    (bad,) = decode_file(files[1]["path"], files[1]["rel_path"], source)
    assert bad["status"] != "ok" and "no file for channel(s) ['t1ce']" in bad["error"]
    with pytest.raises(ValueError, match="name a channel twice"):
        VolumeSource.model_validate({"kind": "volumes", "path": str(tmp_path), "channels": ["t1", "t1"]})


def test_a_stray_volume_among_pictures_does_not_make_a_volume_dataset(tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        mask = np.zeros((8, 8), np.uint8)
        mask[2:5, 2:5] = 255
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    _case(tmp_path / "atlas.nii.gz", None, 0)
    assert detect(tmp_path).source["kind"] == "images"


def test_labels_beside_cases_with_four_digit_names_are_not_inputs(tmp_path: Path) -> None:
    """``amos_0001.nii.gz`` + ``amos_0001_seg.nii.gz``: the listing names the case as reading does
    (``amos_0001``, not channel 1 of ``amos``), so its label is left out of the inputs and found."""
    for n in (1, 4):
        _case(tmp_path / f"amos_{n:04d}.nii.gz", tmp_path / f"amos_{n:04d}_seg.nii.gz", n)
    source = VolumeSource.model_validate(
        {
            "kind": "volumes",
            "path": str(tmp_path),
            "labels": {"kind": "volume", "path": str(tmp_path), "pattern": "{rel_dir}/{case}_seg.nii.gz"},
        }
    )
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == ["amos_0001.nii.gz", "amos_0004.nii.gz"]
    rows = [r for f in files for r in decode_file(f["path"], f["rel_path"], source)]
    assert len(rows) == 8 and all(r["has_label"] for r in rows)


def _structure_case(folder: Path, seed: int, structures: tuple[str, ...]) -> np.ndarray:
    """TotalSegmentator's case folder: ``ct.nii.gz`` and ``segmentations/<structure>.nii.gz``, one
    binary file per structure (uint8, as TotalSegmentator writes them); returns the expected class
    map with the structures numbered in name order, the first listed winning where two overlap."""
    _case(folder / "ct.nii.gz", None, seed)
    boxes = {
        "kidney_left": (slice(1, 4), slice(1, 4), slice(0, 2)),
        "kidney_right": (slice(6, 9), slice(1, 4), slice(0, 2)),
        "liver": (slice(2, 8), slice(5, 9), slice(1, 4)),
        "spleen": (slice(7, 11), slice(6, 10), slice(2, 4)),  # overlaps the liver at [7, 6:9, 2:4]
    }
    expected = np.zeros((12, 10, 4), np.uint8)
    order = sorted(boxes)
    for name in reversed(order):  # numbered in name order; the first (lower class) wins
        if name in structures:
            expected[boxes[name]] = order.index(name) + 1
    for name in order:
        seg = np.zeros((12, 10, 4), np.uint8)
        if name in structures:
            seg[boxes[name]] = 1
        (folder / "segmentations").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(seg, AFFINE), folder / "segmentations" / f"{name}.nii.gz")
    return expected


def test_plan_reads_per_structure_files_as_one_class_map(tmp_path: Path) -> None:
    """TotalSegmentator / AbdomenAtlas: a case folder of ct.nii.gz and segmentations/*.nii.gz, one
    binary file per structure; the structure files are never inputs, a case without them is unlabelled."""
    everything = ("kidney_left", "kidney_right", "liver", "spleen")
    expected = {f"s{n:04d}": _structure_case(tmp_path / f"s{n:04d}", n, everything[n:]) for n in range(3)}
    _case(tmp_path / "s0003" / "ct.nii.gz", None, 3)  # not segmented yet
    d = detect(tmp_path)
    structures = {"kidney_left": 1, "kidney_right": 2, "liver": 3, "spleen": 4}
    assert d.source["labels"] == {
        "kind": "volume",
        "path": str(tmp_path),
        "pattern": "{rel_dir}/segmentations/{structure}.nii.gz",
        "structures": structures,
    }
    assert (d.classes, d.n_images, d.n_paired) == (5, 4, 3) and d.class_names[1] == "kidney_left"
    source = VolumeSource.model_validate(d.source)
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == [f"s{n:04d}/ct.nii.gz" for n in range(4)]
    for f in files:
        rows = decode_file(f["path"], f["rel_path"], source)
        case = f["rel_path"].split("/")[0]
        assert {r["status"] for r in rows} == {"ok"} and len(rows) == 4
        if case == "s0003":
            assert not any(r["has_label"] for r in rows)
            continue
        assert {r["label_uri"] for r in rows} == {str((tmp_path / case / "segmentations").resolve())}
        got = np.stack([r["label"] for r in rows], axis=-1)  # slices (H, W) = (J, I) of the (I, J, K) volume
        np.testing.assert_array_equal(got, expected[case].transpose(1, 0, 2))
    from segops.data.volume_labels import volume_label_files

    assert volume_label_files(source.labels) == {
        str((tmp_path / f"s{n:04d}" / "segmentations").resolve()) for n in range(3)
    }


def test_per_structure_labels_need_the_structure_field_and_names() -> None:
    from pydantic import ValidationError

    from segops.config.schema import VolumeLabels

    with pytest.raises(ValidationError, match="structures and a pattern with"):
        VolumeLabels(kind="volume", path=Path("x"), pattern="{rel_dir}/segmentations/{structure}.nii.gz")
    with pytest.raises(ValidationError, match="structures and a pattern with"):
        VolumeLabels(kind="volume", path=Path("x"), structures={"liver": 1})
    with pytest.raises(ValidationError, match="must be in the file name"):
        VolumeLabels(kind="volume", path=Path("x"), pattern="{structure}/seg.nii.gz", structures={"liver": 1})


def _nrrd(path: Path, array: np.ndarray, origin: tuple[float, float, float], extra: str = "") -> None:
    """A raw NRRD in LPS as 3D Slicer writes one: (I, J, K) array, 0.8 x 0.8 x 3 mm voxels; a 4D
    (layers, I, J, K) array is a segmentation of several layers."""
    kind = {np.dtype(np.uint8): "unsigned char", np.dtype(np.int16): "short"}[array.dtype]
    layers = array.ndim == 4
    header = (
        f"NRRD0004\ntype: {kind}\ndimension: {array.ndim}\nspace: left-posterior-superior\n"
        f"sizes: {' '.join(map(str, array.shape))}\n"
        f"space directions: {'none ' if layers else ''}(0.8,0,0) (0,0.8,0) (0,0,3)\n"
        f"kinds: {'list ' if layers else ''}domain domain domain\nendian: little\nencoding: raw\n"
        f"space origin: ({origin[0]},{origin[1]},{origin[2]})\n{extra}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + np.asfortranarray(array).tobytes(order="F"))


def test_3d_slicer_segmentations_cropped_to_their_segments_are_planned_with_their_names(tmp_path: Path) -> None:
    """3D Slicer: ``case/CT.nrrd`` + ``case/Segmentation.seg.nrrd`` holding only the block of the CT's
    voxels its segments cover, the segments' names in its header."""
    names = "Segment0_ID:=Segment_1\nSegment0_Name:=tumour\nSegment0_LabelValue:=1\nSegment1_Name:=necrosis\n"
    block = np.zeros((5, 4, 2), np.uint8)
    block[1:4, 1:3, 0] = 1
    block[2, 2, 1] = 2
    for n in range(2):
        ct = np.random.default_rng(n).normal(0, 40, (12, 10, 4)).astype(np.int16)
        _nrrd(tmp_path / f"case{n}" / "CT.nrrd", ct, (0.0, 0.0, 0.0))
        _nrrd(tmp_path / f"case{n}" / "Segmentation.seg.nrrd", block, (3 * 0.8, 2 * 0.8, 1 * 3.0), names)
    d = detect(tmp_path)
    assert d.source["labels"]["pattern"] == "{rel_dir}/Segmentation.seg.nrrd" and d.n_paired == 2
    assert d.class_names == {1: "tumour", 2: "necrosis"} and d.classes == 3
    source = VolumeSource.model_validate(d.source)
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == ["case0/CT.nrrd", "case1/CT.nrrd"]
    rows = decode_file(files[0]["path"], files[0]["rel_path"], source)
    expected = np.zeros((12, 10, 4), np.uint8)
    expected[3:8, 2:6, 1:3] = block  # the block's first voxel is the CT's voxel (3, 2, 1)
    assert [r["status"] for r in rows] == ["ok"] * 4
    for k, r in enumerate(rows):
        assert np.array_equal(r["label"], expected[:, :, k].T)


def test_a_slicer_segmentation_of_overlapping_layers_is_one_map_of_its_segments(tmp_path: Path) -> None:
    """Segments that overlap (a tumour inside the liver) make Slicer write several layers; read as one
    map, segments numbered in order, the first one listed winning where they overlap."""
    names = (
        "Segment0_Name:=liver\nSegment0_Layer:=0\nSegment0_LabelValue:=1\n"
        "Segment1_Name:=tumour\nSegment1_Layer:=1\nSegment1_LabelValue:=1\n"
        "Segment2_Name:=vessel\nSegment2_Layer:=0\nSegment2_LabelValue:=2\n"
    )
    layers = np.zeros((2, 12, 10, 4), np.uint8)
    layers[0, 2:10, 2:8, :] = 1  # liver
    layers[0, 0:2, 0:2, :] = 2  # vessel
    layers[1, 4:6, 4:6, 1:3] = 1  # tumour, inside the liver
    for n in range(2):
        _nrrd(tmp_path / f"case{n}" / "CT.nrrd", np.zeros((12, 10, 4), np.int16), (0.0, 0.0, 0.0))
        _nrrd(tmp_path / f"case{n}" / "Segmentation.seg.nrrd", layers, (0.0, 0.0, 0.0), names)
    d = detect(tmp_path)
    assert d.class_names == {1: "liver", 2: "tumour", 3: "vessel"} and d.classes == 4
    source = VolumeSource.model_validate(d.source)
    rows = decode_file(str(tmp_path / "case0" / "CT.nrrd"), "case0/CT.nrrd", source)
    expected = np.zeros((12, 10, 4), np.uint8)
    expected[4:6, 4:6, 1:3] = 2
    expected[0:2, 0:2, :] = 3
    expected[2:10, 2:8, :] = 1  # the liver, listed first, wins over the tumour inside it
    for k, r in enumerate(rows):
        assert np.array_equal(r["label"], expected[:, :, k].T)


def test_channels_after_a_double_underscore_are_named_channels(tmp_path: Path) -> None:
    """HECKTOR (PET/CT): ``imagesTr/CHUM-001__CT.nii.gz`` + ``CHUM-001__PT.nii.gz``, its label
    ``labelsTr/CHUM-001.nii.gz``: nnU-Net's folders, channels named instead of numbered."""
    for n in range(1, 4):
        _case(tmp_path / "imagesTr" / f"CHUM-00{n}__CT.nii.gz", tmp_path / "labelsTr" / f"CHUM-00{n}.nii.gz", n)
        _case(tmp_path / "imagesTr" / f"CHUM-00{n}__PT.nii.gz", None, 10 + n)
    d = detect(tmp_path)
    assert d.source["channels"] == ["CT", "PT"] and (d.n_images, d.n_paired) == (3, 3)
    source = VolumeSource.model_validate(d.source)
    files = list_source_files(source)
    assert [f["rel_path"] for f in files] == [f"CHUM-00{n}__CT.nii.gz" for n in range(1, 4)]
    rows = decode_file(files[0]["path"], files[0]["rel_path"], source)
    assert len(rows) == 4 and all(r["has_label"] for r in rows) and rows[0]["image"].shape[0] == 2
    assert rows[0]["group_id"].endswith("CHUM-001")


def test_frames_with_labels_of_their_own_are_cases_and_a_cine_beside_them_is_left_out(tmp_path: Path) -> None:
    """ACDC's ``patient001/patient001_frame01.nii.gz`` + ``_frame01_gt``, ``_frame12`` + ``_frame12_gt``
    and the unlabelled cine ``patient001_4d.nii.gz`` (10 frames on the fourth axis): two cases per
    patient, not one case of channels 4d/frame01/frame12."""
    for p in range(1, 4):
        folder = tmp_path / "training" / f"patient{p:03d}"
        for frame in ("frame01", "frame12"):
            _case(folder / f"patient{p:03d}_{frame}.nii.gz", folder / f"patient{p:03d}_{frame}_gt.nii.gz", p)
        nib.save(nib.Nifti1Image(np.zeros((12, 10, 4, 10), np.int16), AFFINE), folder / f"patient{p:03d}_4d.nii.gz")
    d = detect(tmp_path)
    assert d.pairing == "volume-files" and "channels" not in d.source
    assert d.source["labels"]["pattern"] == "{rel_dir}/{case}_gt.nii.gz"
    assert d.source["exclude"] == ["**/*_4d.nii.gz"] and (d.n_images, d.n_paired) == (6, 6)
    assert d.notes["exclude"].startswith("3 unlabelled file(s) of another number of channels or frames")
    source = VolumeSource.model_validate(d.source)
    listed = sorted(f["rel_path"] for f in list_source_files(source))
    assert len(listed) == 6 and not any("_4d" in f or "_gt" in f for f in listed)

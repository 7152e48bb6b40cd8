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
from segops.errors import PlanError

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


def test_cases_of_several_files_without_channel_suffixes_are_a_plan_error(tmp_path: Path) -> None:
    for n in range(2):  # BraTS: four modalities and a label per case folder
        folder = tmp_path / f"BraTS_{n:05d}"
        for modality in ("t1", "t1ce", "t2", "flair"):
            _case(folder / f"BraTS_{n:05d}_{modality}.nii.gz", None, n)
        _case(folder / "unused.nii.gz", folder / f"BraTS_{n:05d}_seg.nii.gz", n)
        (folder / "unused.nii.gz").unlink()
    with pytest.raises(PlanError, match="nnU-Net's channels"):
        detect(tmp_path)


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

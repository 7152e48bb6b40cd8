import hashlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from segops.data.synth import make_ct_archive, make_inspection_archive


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    make_ct_archive(tmp_path / "a", series=2, slices=3, seed=7)
    make_ct_archive(tmp_path / "b", series=2, slices=3, seed=7)
    make_ct_archive(tmp_path / "c", series=2, slices=3, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert len(_digest(tmp_path / "a")) == 12  # 6 slices + 6 masks
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    make_inspection_archive(tmp_path / "i1", count=4, seed=1)
    make_inspection_archive(tmp_path / "i2", count=4, seed=1)
    assert _digest(tmp_path / "i1") == _digest(tmp_path / "i2")


def test_ct_series_geometry_and_uids(tmp_path: Path) -> None:
    summary = make_ct_archive(tmp_path, series=2, slices=4, seed=0)
    files = sorted((summary.images / "series-000").glob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 4
    assert all(ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian for ds in datasets)
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert np.allclose(np.diff(z), 2.5)
    first = datasets[0]
    assert first.Modality == "CT" and first.PixelRepresentation == 1 and first.BitsAllocated == 16
    assert first.pixel_array.dtype == np.int16
    assert first.pixel_array.shape == (first.Rows, first.Columns)
    assert len(first.PixelSpacing) == 2 and float(first.PixelSpacing[0]) > 0
    hu = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    assert hu.min() < -900 and hu.max() > 300  # air outside the body, bone inside
    other = pydicom.dcmread(next((summary.images / "series-001").glob("*.dcm")))
    assert other.SeriesInstanceUID != first.SeriesInstanceUID


def test_ct_labels_align_with_bright_lesions(tmp_path: Path) -> None:
    summary = make_ct_archive(tmp_path, series=2, slices=8, seed=1)
    assert 0 < summary.n_foreground <= summary.n_images
    for dcm in sorted(summary.images.rglob("*.dcm")):
        mask = np.asarray(Image.open(summary.labels / dcm.relative_to(summary.images).with_suffix(".png")))
        ds = pydicom.dcmread(dcm)
        assert mask.shape == ds.pixel_array.shape and set(np.unique(mask)) <= {0, 255}
        if mask.any():
            hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            assert hu[mask > 0].mean() > 100  # lesions are brighter than soft tissue (~30-60 HU)


def test_inspection_images_vary_and_have_masks(tmp_path: Path) -> None:
    summary = make_inspection_archive(tmp_path, count=12, seed=2, rgb_fraction=0.5)
    modes, sizes = set(), set()
    for img_path in sorted(summary.images.glob("*.png")):
        with Image.open(img_path) as img:
            modes.add(img.mode)
            sizes.add(img.size)
            mask = np.asarray(Image.open(summary.labels / img_path.name))
            assert mask.shape == (img.size[1], img.size[0])
    assert modes == {"L", "RGB"}
    assert len(sizes) > 3
    assert summary.n_foreground > 0

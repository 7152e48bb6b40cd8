import numpy as np
import pytest
from PIL import Image

from segops.config.schema import PercentileIntensity, WindowIntensity, ZScoreIntensity
from segops.data.labels import mask_png_path
from segops.data.mask_files import read_mask_png
from segops.data.transforms import match_channels, normalize_intensity, pad_to_multiple, random_patch
from segops.errors import LabelError, ShapeError


def test_mask_path_patterns(tmp_path) -> None:
    assert mask_png_path(tmp_path, "{rel_stem}.png", "s1/a.dcm") == tmp_path / "s1/a.png"
    assert mask_png_path(tmp_path, "{rel_dir}/{stem}_mask.png", "s1/a.dcm") == tmp_path / "s1/a_mask.png"
    assert mask_png_path(tmp_path, "{stem}.png", "deep/er/b.tif") == tmp_path / "b.png"


def test_binary_255_masks_become_0_1_and_indices_are_kept(tmp_path) -> None:
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).save(tmp_path / "bin.png")
    Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8)).save(tmp_path / "multi.png")
    np.testing.assert_array_equal(read_mask_png(tmp_path / "bin.png", (2, 2)), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(read_mask_png(tmp_path / "multi.png", (2, 2)), [[0, 1], [2, 3]])
    with pytest.raises(LabelError, match="is 2x2 but its image is 3x2"):
        read_mask_png(tmp_path / "bin.png", (2, 3))
    # a gray mask saved as RGB (OpenCV) or as a JPEG (channels within a few levels) reads as one channel
    gray = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(np.stack([gray, gray, gray], -1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask_png(tmp_path / "rgb.png", (2, 2)), [[0, 1], [1, 0]])
    near = np.stack([gray, np.clip(gray.astype(int) - 3, 0, 255).astype(np.uint8), gray, np.full_like(gray, 255)], -1)
    Image.fromarray(near, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_mask_png(tmp_path / "rgba.png", (2, 2)), [[0, 1], [1, 0]])
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 1] = (255, 0, 0)  # colour-coded classes: refused, not read as one channel
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(LabelError, match=r"colour\.png has shape \(2, 2, 3\) with channels that differ"):
        read_mask_png(tmp_path / "colour.png", (2, 2))


def test_intensity_normalisations() -> None:
    image = np.array([[[-1000.0, -160.0, 40.0, 240.0, 1000.0]]], np.float32)
    window = normalize_intensity(image, WindowIntensity(kind="window", lower=-160, upper=240))
    np.testing.assert_allclose(window[0, 0], [0, 0, 0.5, 1, 1])
    pct = normalize_intensity(image, PercentileIntensity(kind="percentile", lower=0, upper=100))
    assert pct.min() == 0 and pct.max() == 1
    z = normalize_intensity(image, ZScoreIntensity(kind="zscore"))
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-3


def test_channel_matching() -> None:
    rgb = np.stack([np.full((2, 2), v, np.float32) for v in (100, 50, 10)])
    gray = match_channels(rgb, 1)
    assert gray.shape == (1, 2, 2) and np.allclose(gray, 0.299 * 100 + 0.587 * 50 + 0.114 * 10)
    assert match_channels(gray, 3).shape == (3, 2, 2)
    with pytest.raises(ShapeError, match="has 2 channel"):
        match_channels(np.zeros((2, 4, 4), np.float32), 3)


def test_pad_and_patch_keep_image_and_label_aligned() -> None:
    rng = np.random.default_rng(0)
    image = np.arange(50 * 70, dtype=np.float32).reshape(1, 50, 70)
    assert pad_to_multiple(image, 16).shape == (1, 64, 80)
    # up to the patch size first where smaller (mirrored), then to the divisor
    assert pad_to_multiple(image, 16, (96, 40)).shape == (1, 96, 80)
    np.testing.assert_array_equal(pad_to_multiple(image, 16, (96, 40))[0, 50:, 0], image[0, ::-1, 0][:46])
    label = (image[0] % 7 == 0).astype(np.uint8)
    for _ in range(20):
        x, y = random_patch(image, label, (32, 32), rng)
        assert x.shape == (1, 32, 32) and y.shape == (32, 32)
        np.testing.assert_array_equal(y, (x[0] % 7 == 0).astype(np.uint8))


def test_patch_larger_than_image_pads() -> None:
    x, y = random_patch(
        np.ones((1, 10, 12), np.float32), np.ones((10, 12), np.uint8), (16, 16), np.random.default_rng(1)
    )
    assert x.shape == (1, 16, 16) and y.sum() == 120


def test_3d_patches_keep_volume_and_label_aligned_and_find_foreground() -> None:
    rng = np.random.default_rng(0)
    volume = np.arange(10 * 30 * 26, dtype=np.float32).reshape(1, 10, 30, 26)
    label = (volume[0] % 11 == 0).astype(np.uint8)
    for _ in range(20):
        x, y = random_patch(volume, label, (8, 16, 16), rng)
        assert x.shape == (1, 8, 16, 16) and y.shape == (8, 16, 16)
        np.testing.assert_array_equal(y, (x[0] % 11 == 0).astype(np.uint8))
    sparse = np.zeros((10, 30, 26), np.uint8)
    sparse[9, 29, 25] = 1  # one voxel in a far corner: foreground-centred patches must reach it
    hits = [random_patch(volume, sparse, (4, 8, 8), rng, foreground_prob=1.0)[1].sum() for _ in range(5)]
    assert hits == [1] * 5


def test_a_small_class_beside_a_large_one_is_centred_as_often_as_the_large_one() -> None:
    rng = np.random.default_rng(0)
    label = np.zeros((128, 128), np.uint8)
    label[4:68, 4:68] = 1  # 4096 px of a large class (two lungs)
    label[120:122, 120:122] = 2  # 4 px of a small one (an oesophagus), far from it
    image = np.zeros((1, 128, 128), np.float32)
    shown = [2 in random_patch(image, label, (16, 16), rng, foreground_prob=1.0)[1] for _ in range(400)]
    # a class first, then its pixel: about half the patches show class 2 (by pixels: 4 in 4100)
    assert 0.4 < np.mean(shown) < 0.6


def test_3d_patch_larger_than_volume_pads_and_wrong_rank_is_named() -> None:
    x, y = random_patch(
        np.ones((1, 5, 10, 12), np.float32), np.ones((5, 10, 12), np.uint8), (8, 16, 16), np.random.default_rng(1)
    )
    assert x.shape == (1, 8, 16, 16) and y.sum() == 600
    assert pad_to_multiple(np.ones((1, 5, 10, 12), np.float32), 4).shape == (1, 8, 12, 12)
    with pytest.raises(ShapeError, match=r"patch_size \[8, 16, 16\] does not fit image \(1, 10, 12\)"):
        random_patch(
            np.ones((1, 10, 12), np.float32), np.ones((10, 12), np.uint8), (8, 16, 16), np.random.default_rng(1)
        )


def test_prepare_image_leaves_the_callers_pixels_as_decoded() -> None:
    from segops.config.schema import PercentileIntensity, WindowIntensity, ZScoreIntensity
    from segops.data.transforms import prepare_image

    for spec in (
        ZScoreIntensity(kind="zscore"),  # MONAI's NormalizeIntensity normalises a writable input in place
        WindowIntensity(kind="window", lower=0, upper=10),
        PercentileIntensity(kind="percentile"),
    ):
        image = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
        prepared = prepare_image(image, spec, 1)
        np.testing.assert_array_equal(image, np.arange(12, dtype=np.float32).reshape(1, 3, 4))
        assert not np.array_equal(prepared, image)

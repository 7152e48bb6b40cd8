import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segops.data.instances import INSTANCE_STRIDE as S
from segops.data.mask_files import read_mask_png
from segops.errors import SegopsError
from segops.outputs.atomic import atomic_write, atomic_write_text, safe_join
from segops.outputs.manifest import RunManifest, StepState, load_manifest
from segops.outputs.masks import mask_relpath, write_mask_png
from segops.outputs.overlays import (
    decode_case,
    display_image,
    draw_masks,
    fit_for_display,
    guess_source,
    overlay_rgb,
    percentile_scale,
)
from segops.outputs.reports import SplitGroups, build_report, report_metrics, write_table


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "old")

    def explode(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("bad", ["../x.png", "a/../../x.png", "/etc/passwd", ""])
def test_safe_join_refuses_escapes(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SegopsError, match="must be relative and stay inside"):
        safe_join(tmp_path, bad)


def test_mask_png_round_trip_and_paths(tmp_path: Path) -> None:
    assert mask_relpath("s1/slice-0001.dcm", 0) == "s1/slice-0001.png"
    assert mask_relpath("s1/multi.dcm", 3) == "s1/multi.f0003.png"
    # every slice of a volume file is numbered, named by its case (no .nii, no channel suffix)
    assert mask_relpath("imagesTr/liver_7_0000.nii.gz", 0) == "imagesTr/liver_7.f0000.png"
    assert mask_relpath("ct.nrrd", 12) == "ct.f0012.png"
    mask = np.zeros((5, 7), np.uint8)
    mask[1:3, 2:5] = 1
    path = write_mask_png(tmp_path, "a/b.png", mask, classes=2)
    assert path == tmp_path / "a" / "b.png"
    np.testing.assert_array_equal(read_mask_png(path, (5, 7)), mask)
    multi = np.arange(35, dtype=np.uint8).reshape(5, 7) % 3
    np.testing.assert_array_equal(read_mask_png(write_mask_png(tmp_path, "m.png", multi, 3), (5, 7)), multi)


def test_report_keeps_labelled_cases_and_summarises_heldout(tmp_path: Path) -> None:
    results = pd.DataFrame(
        {
            "case_id": list("abcd"),
            "group_id": ["g1", "g1", "g2", "g3"],
            "source_uri": list("abcd"),
            "rel_path": list("abcd"),
            "frame": [0] * 4,
            "modality": ["CT"] * 4,
            "has_label": [True, True, True, False],
            "dice": [0.5, 1.0, 0.8, np.nan],
            "iou": [0.4, 1.0, 0.6, np.nan],
            "fg_fraction": [0.1, 0.0, 0.2, 0.3],
            "label_fg_fraction": [0.1, 0.0, 0.2, np.nan],
            "mask_path": list("abcd"),
        }
    )
    split = SplitGroups(val=frozenset({"g2"}), test=frozenset({"g1"}))
    report = build_report(results, split)
    assert list(report["case_id"]) == ["a", "b", "c"]
    assert list(report["split"]) == ["test", "test", "val"]
    metrics = report_metrics(report)
    assert metrics["labelled_cases"] == 3 and metrics["heldout_cases"] == 2 and metrics["val_cases"] == 1
    assert metrics["val_dice_mean"] == pytest.approx(0.8)
    assert metrics["dice_mean"] == pytest.approx((0.5 + 1.0 + 0.8) / 3)
    assert metrics["heldout_dice_mean"] == pytest.approx(0.75)
    assert metrics["heldout_fg_dice_mean"] == pytest.approx(0.5)  # only case a has foreground
    assert metrics["fg_dice_mean"] == pytest.approx((0.5 + 0.8) / 2)  # a and c: all labelled cases with foreground
    assert report["pixel_error"].isna().all() and "heldout_pixel_error_mean" not in metrics  # parts of an older run
    parquet, csv = write_table(report, tmp_path / "report")
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), report)
    assert pd.read_csv(csv).shape == report.shape
    scored = report_metrics(build_report(results.assign(pixel_error=[0.1, 0.0, 0.2, np.nan]), split))
    assert scored["heldout_pixel_error_mean"] == pytest.approx(0.05) and scored["pixel_error_mean"] == pytest.approx(
        0.1
    )


def test_manifest_tracks_step_states(tmp_path: Path) -> None:
    manifest = RunManifest(
        "r1", "wf", "abc", str(tmp_path), "mlflow-id", steps=[StepState(0, "ingest"), StepState(1, "train")]
    )
    manifest.save()
    manifest.step_started(0)
    manifest.step_done(0, {"dataset": "x"})
    manifest.step_started(1)
    manifest.step_failed(1, ValueError("boom"))
    data = load_manifest(tmp_path)
    assert [s["state"] for s in data["steps"]] == ["done", "failed"]
    assert data["steps"][1]["error"] == "ValueError: boom" and data["state"] == "failed"
    assert json.loads((tmp_path / "manifest.json").read_text())["spec_hash"] == "abc"


def test_overlay_marks_prediction_and_truth_outline() -> None:
    image = np.full((6, 6), 0.5)
    pred = np.zeros((6, 6), np.uint8)
    pred[1:3, 1:3] = 1
    truth = np.zeros((6, 6), np.uint8)
    truth[2:5, 2:5] = 1
    rgb = overlay_rgb(image, pred, truth)
    assert rgb.shape == (6, 6, 3) and rgb.dtype == np.uint8
    assert rgb[1, 1, 0] > rgb[1, 1, 1]  # red tint on prediction
    assert tuple(rgb[4, 4]) == (26, 255, 26)  # truth edge in green
    assert tuple(rgb[0, 5]) == (128, 128, 128)  # untouched


def test_a_large_image_is_shrunk_to_a_display_size_with_its_masks() -> None:
    """A 12-megapixel photo's overlay is a ~1000 px picture, not a 20 MB PNG: the image block-averaged,
    the masks subsampled (no class mixes), so a mask still sits where it was."""
    h, w = 3000, 4000  # factor 4 -> 750 x 1000
    image = np.zeros((h, w))
    image[:, w // 2 :] = 1.0
    pred = np.zeros((h, w), np.uint8)
    pred[1000:1400, 2000:2400] = 2
    small, small_pred, small_truth = fit_for_display(image, pred, np.zeros((0, 0), np.uint8))
    assert small.shape == (750, 1000) and small_pred.shape == (750, 1000) and small_truth.size == 0
    assert small[0, 499] == 0.0 and small[0, 500] == 1.0 and set(np.unique(small_pred)) == {0, 2}
    assert np.argwhere(small_pred).min(axis=0).tolist() == [250, 500]
    rgb = overlay_rgb(image, pred, pred)
    assert rgb.shape == (750, 1000, 3)
    assert tuple(rgb[250, 500]) == (26, 255, 26)  # the truth's outline
    assert tuple(rgb[300, 550]) == (255, 152, 152)  # white tinted 45 % red
    odd = np.full((1500, 7), 0.5)  # a long strip: the factor pads the last block with the edge
    assert fit_for_display(odd, np.zeros((1500, 7), np.uint8))[0].shape == (750, 4)
    assert fit_for_display(np.zeros((1024, 10)), np.zeros((1024, 10)))[0].shape == (1024, 10)  # fits: as it is


def test_overlay_ignores_the_empty_label_of_an_unlabelled_record() -> None:
    pred = np.zeros((4, 4), np.uint8)
    rgb = overlay_rgb(np.full((4, 4), 0.5), pred, np.zeros((0, 0), np.uint8))
    assert (rgb == 128).all()


def test_draw_masks_outlines_in_order_enlarged_and_on_colour_images() -> None:
    image = np.zeros((4, 4, 3))
    image[..., 2] = 1.0  # blue
    a = np.zeros((4, 4), np.uint8)
    a[0:3, 0:3] = 1
    b = np.zeros((4, 4), np.uint8)
    b[2:4, 2:4] = 1
    rgb = draw_masks(image, outlines=[(a, (1.0, 0.0, 0.0)), (b, (0.0, 1.0, 0.0))], scale=2)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (255, 0, 0)  # A's outer edge
    assert tuple(rgb[1, 2]) == (0, 0, 255)  # inside A, next to its edge: untouched
    assert tuple(rgb[5, 4]) == (0, 255, 0)  # on both edges: B is drawn last
    assert tuple(rgb[5, 5]) == (255, 0, 0)  # A's edge inside B: outlines do not fill
    assert tuple(rgb[7, 0]) == (0, 0, 255)  # outside both
    thick = draw_masks(image, outlines=[(a, (1.0, 0.0, 0.0))], scale=2, width=2)
    assert tuple(thick[1, 2]) == (255, 0, 0) and tuple(thick[2, 2]) == (0, 0, 255)  # 2 pixels thick
    with pytest.raises(SegopsError, match=r"mask of shape \(3, 3\) does not fit an image of shape \(4, 4\)"):
        draw_masks(image, outlines=[(a[:3, :3], (1.0, 0.0, 0.0))])


def test_decode_case_finds_the_case_again_or_says_why_not(tmp_path: Path) -> None:
    from PIL import Image

    from segops.data.records import path_case_id

    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(pixels).save(tmp_path / "scan.png")
    source = guess_source(tmp_path / "scan.png")
    assert source.kind == "images" and guess_source(tmp_path / "IM0001").kind == "dicom"
    row = decode_case(str(tmp_path / "scan.png"), "scan.png", path_case_id("scan.png"), source)
    np.testing.assert_array_equal(np.asarray(row["image"])[0], pixels)
    assert decode_case(str(tmp_path / "scan.png"), "scan.png", "other", source, frame=0)["frame"] == 0
    with pytest.raises(SegopsError, match=r"cannot show .*scan.png: no case other"):
        decode_case(str(tmp_path / "scan.png"), "scan.png", "other", source)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SegopsError, match=r"cannot show .*bad.png: "):
        decode_case(str(tmp_path / "bad.png"), "bad.png", "x", source)
    shown = display_image(str(tmp_path / "scan.png"), "scan.png", path_case_id("scan.png"), modality="XC")
    lo, hi = np.percentile(pixels, [1, 99])
    np.testing.assert_allclose(shown, np.clip((pixels - lo) / (hi - lo), 0, 1), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="is not on this machine"):
        display_image(str(tmp_path / "gone.png"), "gone.png", "x")


def test_a_volume_slice_is_shown_again_from_its_nifti_file(tmp_path: Path) -> None:
    import nibabel as nib

    volume = np.arange(6 * 5 * 3, dtype=np.float32).reshape(6, 5, 3)  # (I, J, K): slice k = A[:, :, k]
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "case_0000.nii.gz")
    assert guess_source(tmp_path / "case_0000.nii.gz").kind == "volumes"
    row = decode_case(
        str(tmp_path / "case_0000.nii.gz"),
        "case_0000.nii.gz",
        "unknown",
        guess_source(tmp_path / "case_0000.nii.gz"),
        frame=2,
    )
    assert row["frame"] == 2
    # records hold slice k as (rows along J, columns along I): the transpose of A[:, :, k]
    np.testing.assert_array_equal(np.asarray(row["image"])[0], volume[:, :, 2].T)


def test_a_segmented_localizer_is_shown_again_though_a_default_source_skips_localizers(tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    from tests.data.rtstruct_archive import write_ct_series

    [ct] = write_ct_series(tmp_path, 1, generate_uid(), generate_uid(), pixels=lambda k: np.arange(64 * 64) % 97)
    ct.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]  # a run with skip: [] segmented it; the audit shows it
    ct.save_as(tmp_path / "scout.dcm", enforce_file_format=True)
    shown = display_image(str(tmp_path / "scout.dcm"), "scout.dcm", ct.SOPInstanceUID)
    assert shown.shape == (64, 64) and shown.max() == 1.0 and shown.min() == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../../escape", "____escape"),
        ("..", "_"),
        (".hidden", "hidden"),
        ("a/b\\c", "a_b_c"),
        ("", "unknown"),
        (None, "unknown"),
        ("1.2.840.113619", "1.2.840.113619"),
        ("x" * 100, "x" * 64),
        ("a..b", "a_b"),
        ("na me", "na_me"),
    ],
)
def test_sanitize_component(value, expected) -> None:
    from segops.outputs.layout import dicom_tag_stem, sanitize_component

    assert sanitize_component(value) == expected
    assert ".." not in dicom_tag_stem(value, "1.2", "../3", "4", frame=0).split("/")


def test_stale_temps_are_removed_and_outputs_kept(tmp_path: Path) -> None:
    from segops.outputs.atomic import remove_stale_temps

    atomic_write_text(tmp_path / "a" / "m.png", "done")
    (tmp_path / "a" / ".m2.png.x1y2.tmp").write_text("half")  # what a SIGKILLed writer leaves
    assert remove_stale_temps(tmp_path) == 1
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["m.png"]
    assert remove_stale_temps(tmp_path / "missing") == 0


def test_instance_outputs_write_class_png_instance_png_and_coco_json(tmp_path: Path) -> None:
    from PIL import Image

    from segops.data.instances import stack_instances
    from segops.instance_metrics import coco_results, decode_rle
    from segops.outputs.case_outputs import OutputConfig, write_instance_outputs

    a, b = np.zeros((6, 8), bool), np.zeros((6, 8), bool)
    a[1:3, 1:4], b[2:5, 3:7] = True, True  # b overlaps a and is on top
    label_map = stack_instances([a, b], [2, 1], (6, 8))
    results = [
        {k: v for k, v in r.items() if k != "image_id"}
        for r in coco_results(0, np.stack([a, b]), np.array([0.6, 0.9]), np.array([2, 1]))
    ]
    cfg = OutputConfig(str(tmp_path), ("png", "coco-rle"), "mirror", {1: "cell", 2: "rod"}, 3, "digest")
    meta = {
        "case_id": "c1",
        "rel_path": "plate/img.png",
        "frame": 0,
        "source_uri": "/x/plate/img.png",
        "transfer_syntax": "PNG",
    }
    written = write_instance_outputs(cfg, meta, label_map, results)

    assert written["mask_path"] == str(tmp_path / "masks" / "plate" / "img.png")
    assert written["instance_path"] == str(tmp_path / "instances" / "plate" / "img.png")
    np.testing.assert_array_equal(read_mask_png(written["mask_path"], (6, 8)), label_map // S)
    with Image.open(written["instance_path"]) as img:
        ids = np.asarray(img)
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, 1, 2}
    assert np.array_equal(ids == 2, b) and np.array_equal(ids == 1, a & ~b)
    doc = json.loads(Path(written["coco_path"]).read_text())
    assert doc["case_id"] == "c1" and [r["score"] for r in doc["results"]] == [0.6, 0.9]
    assert np.array_equal(decode_rle(doc["results"][1]["segmentation"]), b)
    assert len(written["mask_sha256"]) == 64


def test_a_slice_of_a_volume_cut_in_another_plane_is_shown_from_that_cut(tmp_path: Path) -> None:
    """KiTS' (slices, rows, columns) file cut axially: the audit, without the workflow's source,
    re-decodes the slice its case id names (the cut is in the id), not the file's sagittal slice."""
    import nibabel as nib

    from segops.config.schema import VolumeSource
    from segops.data.decode import decode_file

    kits = np.array([[0.0, 0.0, -0.8, 0], [0.0, -0.8, 0.0, 0], [-3.0, 0.0, 0.0, 0], [0, 0, 0, 1.0]])
    data = np.random.default_rng(2).normal(0, 100, size=(5, 6, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, kits), tmp_path / "imaging.nii.gz")
    cut = decode_file(str(tmp_path / "imaging.nii.gz"), "imaging.nii.gz", VolumeSource(kind="volumes", path=tmp_path))
    axial = decode_file(
        str(tmp_path / "imaging.nii.gz"),
        "imaging.nii.gz",
        VolumeSource(kind="volumes", path=tmp_path, slice_plane="axial"),
    )
    assert (
        len({r["case_id"] for r in cut} & {r["case_id"] for r in axial}) == 0
    )  # each cut's slices have ids of their own
    row = axial[3]
    shown = display_image(str(tmp_path / "imaging.nii.gz"), "imaging.nii.gz", row["case_id"], row["frame"])
    assert shown.shape == (6, 4)
    np.testing.assert_allclose(shown, percentile_scale(row["image"]))
    assert display_image(str(tmp_path / "imaging.nii.gz"), "imaging.nii.gz", cut[2]["case_id"]).shape == (6, 5)

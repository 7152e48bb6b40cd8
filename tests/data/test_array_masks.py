"""Masks in NumPy ``.npy`` / ``.npz`` files (WGISD's per-object stacks), written here with NumPy, read
back as label maps, planned and decoded as a new user's folder would be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.array_masks import is_array_mask, read_array_mask
from segops.data.decode import decode_file, list_source_files
from segops.data.pairing import detect
from segops.errors import LabelError


def _objects(h: int = 24, w: int = 32) -> np.ndarray:
    """Three binary masks stacked on the last axis; the second overlaps the first at column 10-11."""
    stack = np.zeros((h, w, 3), np.uint8)
    stack[2:10, 2:12, 0] = 1
    stack[4:12, 10:20, 1] = 1
    stack[15:22, 22:30, 2] = 1
    return stack


def test_a_2d_map_is_read_as_stored_in_the_smallest_integer_type(tmp_path: Path) -> None:
    classes = np.zeros((6, 8), np.int64)
    classes[1:3, 2:5] = 2
    np.save(tmp_path / "classes.npy", classes)
    read = read_array_mask(tmp_path / "classes.npy")
    assert read.dtype == np.uint8 and read.tolist() == classes.tolist()
    np.save(tmp_path / "ids.npy", (classes * 300).astype(np.float64))  # whole floats, ids above 255
    assert read_array_mask(tmp_path / "ids.npy").dtype == np.uint16
    np.savez(tmp_path / "bool.npz", classes == 2)  # one unnamed array: arr_0
    assert read_array_mask(tmp_path / "bool.npz").tolist() == (classes == 2).astype(int).tolist()
    np.savez(tmp_path / "named.npz", image=np.ones((6, 8)) * 0.5, mask=classes)  # several: the one named mask
    assert read_array_mask(tmp_path / "named.npz").tolist() == classes.tolist()
    assert is_array_mask("x/CDY_2015.NPZ") and is_array_mask(Path("a.npy")) and not is_array_mask("a.png")


def test_a_stack_of_binary_masks_on_either_axis_is_one_id_per_object_the_first_keeping_overlaps(
    tmp_path: Path,
) -> None:
    stack = _objects()
    np.savez_compressed(tmp_path / "last.npz", arr_0=stack)  # WGISD: (H, W, N)
    np.save(tmp_path / "first.npy", np.moveaxis(stack, -1, 0).astype(bool))  # (N, H, W)
    for name in ("last.npz", "first.npy"):
        ids = read_array_mask(tmp_path / name)
        assert ids.shape == (24, 32) and sorted(np.unique(ids).tolist()) == [0, 1, 2, 3]
        assert int((ids == 1).sum()) == 80 and int((ids == 2).sum()) == 80 - 12  # 12 px of object 2 under object 1
        assert ids[5, 11] == 1 and ids[11, 11] == 2


def test_arrays_that_are_no_label_map_are_label_errors_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    np.save(tmp_path / "soft.npy", np.full((4, 4), 0.5))
    with pytest.raises(LabelError, match=r"soft.npy holds float64 values that are not whole numbers"):
        read_array_mask(tmp_path / "soft.npy")
    np.save(tmp_path / "rgb.npy", np.full((4, 4, 3), 7, np.uint8))
    with pytest.raises(LabelError, match=r"rgb.npy holds a \(4, 4, 3\) array of values other than 0 and 1"):
        read_array_mask(tmp_path / "rgb.npy")
    one_hot = np.zeros((4, 4, 2), np.uint8)
    one_hot[:2, :, 0] = one_hot[2:, :, 1] = 1
    np.save(tmp_path / "onehot.npy", one_hot)
    with pytest.raises(LabelError, match="one-hot classes, not objects; save the class map"):
        read_array_mask(tmp_path / "onehot.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 4)), b=np.ones((4, 4)))
    with pytest.raises(LabelError, match=r"two.npz holds 2 arrays \(a, b\); expected one, or one named mask"):
        read_array_mask(tmp_path / "two.npz")
    np.save(tmp_path / "pickled.npy", np.array([{"mask": 1}], dtype=object))  # never unpickled
    with pytest.raises(LabelError, match="cannot read mask .*pickled.npy as a NumPy file"):
        read_array_mask(tmp_path / "pickled.npy")
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(LabelError, match="cannot read mask .*text.npz as a NumPy file"):
        read_array_mask(tmp_path / "text.npz")


def test_a_wgisd_folder_is_planned_as_instances_and_decoded_with_its_npz_masks(tmp_path: Path) -> None:
    """WGISD's layout: ``data/CDY_2015.jpg`` beside ``CDY_2015.npz`` (a binary mask per bunch) and
    ``CDY_2015.txt`` (YOLO boxes), one folder for all. Each bunch is in two pieces (a leaf in front
    of it), so no id image would read as instances by its shapes: the stack says they are objects."""
    rng = np.random.default_rng(0)
    root = tmp_path / "wgisd"
    (root / "data").mkdir(parents=True)
    for i in range(6):
        stack = np.roll(_objects(), 3 * i, axis=1)[..., : 1 + i % 3]  # 1-3 bunches
        for k in range(stack.shape[-1]):
            stack[22:24, 1 + 10 * k : 4 + 10 * k, k] = 1  # the bunch's other piece
        image = np.where(stack.any(-1, keepdims=True), 50, rng.normal(150, 10, (24, 32, 3)))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "data" / f"CDY_{2015 + i}.jpg")
        np.savez_compressed(root / "data" / f"CDY_{2015 + i}.npz", arr_0=stack)
        (root / "data" / f"CDY_{2015 + i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    d = detect(root)
    assert d.source["labels"] == {"kind": "instance-png", "path": str(root), "pattern": "{rel_stem}.npz"}
    assert d.task == "instance" and (d.n_images, d.n_paired) == (6, 6)
    assert d.notes["labels"].endswith(
        "8-bit, numbered 1..k in 100% of masks, 6 of 6 stored as one binary mask per object"
    )
    source = ImageSource.model_validate(d.source)
    rows = [r for f in list_source_files(source) for r in decode_file(f["path"], f["rel_path"], source)]
    assert [r["status"] for r in rows] == ["ok"] * 6 and all(r["has_label"] for r in rows)
    objects = {r["rel_path"]: len(np.unique(np.asarray(r["label"]))) - 1 for r in rows}
    assert objects == {f"data/CDY_{2015 + i}.jpg": 1 + i % 3 for i in range(6)}
    # the same ids saved as 2-D maps (no stack to say they are objects) are classes: two pieces each
    for npz in (root / "data").glob("*.npz"):
        np.save(npz.with_suffix(".npy"), read_array_mask(npz))
        npz.unlink()
    assert detect(root).task == "semantic"

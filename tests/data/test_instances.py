"""Instance label maps: value = class * 65536 + k (segops.data.instances)."""

import numpy as np
import pytest

from segops.data.instances import (
    INSTANCE_STRIDE,
    class_map,
    encode_instances,
    instance_id_map,
    split_instances,
    stack_instances,
)
from segops.errors import LabelError

S = INSTANCE_STRIDE


def test_encode_renumbers_sparse_ids_in_increasing_order() -> None:
    ids = np.array([[0, 250, 250], [3, 0, 17], [3, 3, 0]], dtype=np.uint16)
    label = encode_instances(ids, {3: 2, 17: 1, 250: 2})
    assert label.dtype == np.int32
    np.testing.assert_array_equal(label, [[0, 2 * S + 3, 2 * S + 3], [2 * S + 1, 0, S + 2], [2 * S + 1, 2 * S + 1, 0]])
    assert encode_instances(np.zeros((2, 2), np.uint16), {}).max() == 0


def test_encode_errors_name_the_instance_and_count() -> None:
    ids = np.array([[0, 5], [17, 17]], dtype=np.uint16)
    with pytest.raises(LabelError, match=r"instance 17 has no foreground class \(got None\)"):
        encode_instances(ids, {5: 1})
    with pytest.raises(LabelError, match=r"instance 5 has no foreground class \(got 0\)"):
        encode_instances(ids, {5: 0, 17: 1})
    many = np.arange(INSTANCE_STRIDE + 1, dtype=np.uint32).reshape(1, -1)  # 65536 instances
    with pytest.raises(LabelError, match=r"65536 instances in one image; at most 65535 are supported"):
        encode_instances(many, {i: 1 for i in range(1, INSTANCE_STRIDE + 1)})


def test_a_dense_image_of_thousands_of_instances_round_trips() -> None:
    """A confluent microscopy image holds thousands of cells (LIVECell: over 2,000 in some)."""
    ids = np.arange(1, 2501, dtype=np.uint16).reshape(50, 50)[::-1]  # 2,500 one-pixel cells, ids out of order
    label = encode_instances(ids, {i: 1 + i % 2 for i in range(1, 2501)})
    assert label.max() == 2 * S + 2499 and len(np.unique(label)) == 2500
    masks, classes = split_instances(label)
    assert len(masks) == 2500 and (masks.sum(axis=(1, 2)) == 1).all()
    np.testing.assert_array_equal(classes, 1 + np.arange(1, 2501) % 2)
    np.testing.assert_array_equal(instance_id_map(label), ids)  # the 16-bit instance PNG's values
    np.testing.assert_array_equal(class_map(label), 1 + ids % 2)
    assert np.array_equal(label.astype(np.float32).astype(np.int64), label)  # exact through float32 (class <= 255)


def test_stack_puts_later_masks_on_top() -> None:
    a = np.zeros((4, 6), bool)
    a[0:3, 0:4] = True
    b = np.zeros((4, 6), bool)
    b[1:4, 2:6] = True
    label = stack_instances([a, b], [1, 2], (4, 6))
    assert label[0, 0] == S + 1 and label[1, 2] == 2 * S + 2 and label[3, 5] == 2 * S + 2 and label[3, 0] == 0
    assert int((label == S + 1).sum()) == 12 - 4  # the overlap belongs to b
    swapped = stack_instances([b, a], [2, 1], (4, 6))
    assert swapped[1, 2] == S + 2  # now a, drawn second, is on top


def test_split_masks_and_classes_and_hidden_instances() -> None:
    a = np.zeros((5, 5), bool)
    a[1:3, 1:3] = True
    hidden = a.copy()
    c = np.zeros((5, 5), bool)
    c[3:5, :] = True
    label = stack_instances([hidden, a, c], [2, 1, 2], (5, 5))  # `hidden` is covered entirely by `a`
    masks, classes = split_instances(label)
    assert masks.shape == (2, 5, 5) and masks.dtype == bool
    np.testing.assert_array_equal(masks[0], a)
    np.testing.assert_array_equal(masks[1], c)
    np.testing.assert_array_equal(classes, [1, 2])
    empty_masks, empty_classes = split_instances(np.zeros((3, 4), np.int32))
    assert empty_masks.shape == (0, 3, 4) and empty_classes.shape == (0,) and empty_classes.dtype == np.int64


def test_class_map_and_instance_id_map_views() -> None:
    ids = np.array([[0, 40, 40], [9, 9, 0], [0, 0, 200]], dtype=np.uint16)
    label = encode_instances(ids, {9: 1, 40: 2, 200: 3})
    cls = class_map(label)
    assert cls.dtype == np.uint8
    np.testing.assert_array_equal(cls, [[0, 2, 2], [1, 1, 0], [0, 0, 3]])
    inst = instance_id_map(label)
    assert inst.dtype == np.uint16
    np.testing.assert_array_equal(inst, [[0, 2, 2], [1, 1, 0], [0, 0, 3]])
    # round trip: the dense ids and the class map encode back to the same label map
    again = encode_instances(inst, {k: int(cls[inst == k][0]) for k in (1, 2, 3)})
    np.testing.assert_array_equal(again, label)

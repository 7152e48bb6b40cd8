"""Instance label maps: one (H, W) int32 array that carries both instance and class.

A pixel's value is ``class * INSTANCE_STRIDE + k`` for the k-th instance, 0 for background:
the class in the high 16 bits, the instance index k = 1..65535 in the low 16 (``value >> 16``,
``value & 0xFFFF``), so a dense microscopy image with thousands of cells fits, and every value
of a class up to 255 is exact in float32 (below 2**24). One array keeps the record layout of
semantic labels (one ``label`` tensor column), so ingest, datasets and splits need no second
column; :func:`split_instances` turns it into the per-instance masks and classes that Mask
R-CNN targets, COCO annotations and instance metrics use. Instances do not overlap in a label
map; where annotations overlap, the later one is on top (what an instance-id PNG stores).
"""

from __future__ import annotations

import numpy as np

from segops.config.sources import is_instance_labels
from segops.errors import LabelError

#: label value = class * INSTANCE_STRIDE + instance index (1..INSTANCE_STRIDE - 1): the low 16 bits
INSTANCE_STRIDE = 1 << 16


def label_dtype(labels: object) -> np.dtype:
    """The dtype of every label of a source: int32 instance maps, else uint8 class maps.

    One dtype per source keeps every Arrow block of a dataset on the same schema, including
    blocks with only unlabelled or quarantined rows.
    """
    return np.dtype(np.int32) if is_instance_labels(labels) else np.dtype(np.uint8)


def class_coded_ids(
    ids: np.ndarray, stride: int, class_values: dict[int, int] | None, where: str
) -> tuple[np.ndarray, dict[int, int]]:
    """Instance ids that encode their class (``id = class * stride + object``, Cityscapes' and
    KITTI-MOTS' ``instanceIds``) → the ids of objects and each one's class, for
    :func:`encode_instances`. Ids below ``stride`` (stuff classes, crowd regions) are no object;
    ``class_values`` maps the encoded classes (0: no object), else they are the classes.

    Raises:
        LabelError: an encoded class that ``class_values`` does not list, or above 255 without it.
    """
    ids = np.where(ids >= stride, ids, 0)
    coded = {int(i): int(i) // stride for i in np.unique(ids) if i}
    mapping = class_values if class_values is not None else {c: c for c in coded.values() if c <= 255}
    unlisted = sorted({c for c in coded.values() if c not in mapping})
    if unlisted:
        raise LabelError(
            f"{where} holds objects of encoded class(es) {unlisted} (id // {stride}) that "
            f"{'class_values does not list' if class_values is not None else 'exceed 255'}; list every class "
            "that occurs in class_values (0 leaves one out)"
        )
    left_out = [i for i, c in coded.items() if mapping[c] == 0]
    if left_out:
        ids = np.where(np.isin(ids, left_out), 0, ids)
    return ids, {i: mapping[c] for i, c in coded.items() if mapping[c]}


def encode_instances(instance_ids: np.ndarray, classes: dict[int, int]) -> np.ndarray:
    """Instance-id map (0 = background, k = instance k) + class of each id → instance label map.

    Ids are renumbered 1..N in increasing order, so sparse ids (e.g. 3, 17, 250) are fine.

    Raises:
        LabelError: an id has no class, a class is < 1, or there are too many instances.
    """
    stored, inverse = np.unique(instance_ids, return_inverse=True)
    ids = [int(i) for i in stored if i != 0]
    if len(ids) >= INSTANCE_STRIDE:
        raise LabelError(f"{len(ids)} instances in one image; at most {INSTANCE_STRIDE - 1} are supported")
    codes = np.zeros(len(stored), dtype=np.int32)  # stored id → its code, looked up once per pixel
    for k, inst in enumerate(ids, start=1):
        cls = classes.get(inst)
        if cls is None or cls < 1:
            raise LabelError(f"instance {inst} has no foreground class (got {cls!r})")
        codes[int(np.searchsorted(stored, inst))] = cls * INSTANCE_STRIDE + k
    return codes[inverse.reshape(instance_ids.shape)]


def stack_instances(masks: list[np.ndarray], classes: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Per-instance boolean masks (later ones on top) + their classes → instance label map."""
    ids = np.zeros(shape, dtype=np.int32)
    for k, mask in enumerate(masks, start=1):
        ids[np.asarray(mask, dtype=bool)] = k
    return encode_instances(ids, {k: c for k, c in enumerate(classes, start=1)})


def objects_label(
    masks: list[np.ndarray], classes: list[int], shape: tuple[int, int], instances: bool, where: str
) -> np.ndarray:
    """Drawn objects (boolean masks, later ones on top) → an int32 instance label map with
    ``instances``, else an (H, W) uint8 class map; ``where`` names the label file in errors."""
    if instances:
        try:
            return stack_instances(masks, classes, shape)
        except LabelError as exc:
            raise LabelError(f"{where}: {exc}") from exc
    label = np.zeros(shape, np.uint8)
    for cls, mask in zip(classes, masks):
        label[np.asarray(mask, dtype=bool)] = cls
    return label


def split_instances(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance label map → (masks (N, H, W) bool, classes (N,) int64), in instance-index order.

    Instances hidden completely by others (no pixels left) are absent.
    """
    values = sorted((int(v) for v in np.unique(label) if v > 0), key=lambda v: v % INSTANCE_STRIDE)
    if not values:
        return np.zeros((0, *label.shape), dtype=bool), np.zeros((0,), dtype=np.int64)
    masks = np.stack([label == v for v in values])
    classes = np.array([v // INSTANCE_STRIDE for v in values], dtype=np.int64)
    return masks, classes


def class_map(label: np.ndarray) -> np.ndarray:
    """Instance label map → (H, W) uint8 class-index map (the semantic view of the same label)."""
    return (np.asarray(label) // INSTANCE_STRIDE).astype(np.uint8)


def instance_id_map(label: np.ndarray) -> np.ndarray:
    """Instance label map → (H, W) uint16 instance indices k (0 = background), classes dropped."""
    return (np.asarray(label) % INSTANCE_STRIDE).astype(np.uint16)

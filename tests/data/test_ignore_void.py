"""The ignore label (mask-png ``ignore_void``): void pixels read as 255, accepted by the label
checks, never foreground for the fingerprint or the patch sampler, and planned for VOC's class
masks. The loss and the scores: tests/test_losses.py, tests/test_metrics.py. Files made here, no Ray."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

from segops.config.sources import IGNORE_LABEL, MaskPngLabels
from segops.data.detection import PlanOverrides
from segops.data.fingerprint import record_stats
from segops.data.label_census import check_label_values, label_counts, unusual_labels_warning
from segops.data.mask_files import spec_mask
from segops.data.pairing import detect
from segops.data.transforms import random_patch
from segops.errors import LabelValueError

from .test_voc_layout import make_voc


def _voc_mask() -> np.ndarray:
    """Class 15 (a person) in a 255 border, as VOC stores it."""
    mask = np.zeros((20, 24), np.uint8)
    mask[4:16, 4:16] = 255
    mask[5:15, 5:15] = 15
    return mask


def _spec(tmp_path: Path, **extra) -> MaskPngLabels:
    return MaskPngLabels(kind="mask-png", path=tmp_path, values={0: 0, 15: 1}, void=255, **extra)


def test_void_reads_as_ignored_or_as_background(tmp_path: Path) -> None:
    Image.fromarray(_voc_mask()).save(tmp_path / "m.png")
    ignored = spec_mask(_spec(tmp_path, ignore_void=True), tmp_path / "m.png", (20, 24))
    assert int((ignored == 1).sum()) == 100 and int((ignored == IGNORE_LABEL).sum()) == 144 - 100
    background = spec_mask(_spec(tmp_path), tmp_path / "m.png", (20, 24))
    assert int((background == 1).sum()) == 100 and not (background == IGNORE_LABEL).any()


def test_ignore_void_needs_void_and_leaves_255_to_it(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="give void"):
        MaskPngLabels(kind="mask-png", path=tmp_path, ignore_void=True)
    with pytest.raises(ValidationError, match="map no value to class 255"):
        MaskPngLabels(kind="mask-png", path=tmp_path, void=0, values={255: 255, 1: 1}, ignore_void=True)


def test_ignored_pixels_fit_every_model_only_when_declared() -> None:
    counts = [label_counts(np.where(_voc_mask() == 15, 1, _voc_mask()).astype(np.uint8))]
    rows = pd.DataFrame(
        {"label_uri": ["m.png"], "label_values": [c[0] for c in counts], "label_pixels": [c[1] for c in counts]}
    )
    check_label_values(rows, classes=2, ignore=True)
    assert unusual_labels_warning(rows, ignore=True) is None
    with pytest.raises(LabelValueError, match=r"label value\(s\) \[255\] are not classes"):
        check_label_values(rows, classes=2)  # 255 not declared ignored: a value the model lacks


def test_ignored_pixels_are_no_foreground_for_the_fingerprint_or_the_patch_sampler() -> None:
    label = np.zeros((40, 40), np.uint8)
    label[:, 30:] = IGNORE_LABEL
    image = np.random.default_rng(0).random((1, 40, 40), dtype=np.float32)
    stats = record_stats(image, label, "c", "semantic")
    assert stats["class_values"] == [0] and stats["object_count"] == 0 and not len(stats["fg_samples"])
    rng = np.random.default_rng(0)  # nothing to centre on: patches start anywhere, not on the ignored band
    patches = [random_patch(image, label, (8, 8), rng, foreground_prob=1.0)[1] for _ in range(20)]
    assert sum(not (p == IGNORE_LABEL).any() for p in patches) >= 10  # centred on the band, none would be free
    label[10, 10] = 1
    _, patch = random_patch(image, label, (8, 8), np.random.default_rng(1), foreground_prob=1.0)
    assert (patch == 1).any()  # centred on the one foreground pixel, not on an ignored one


def test_voc_class_masks_alone_are_planned_with_their_void_ignored(tmp_path: Path) -> None:
    make_voc(tmp_path)
    d = detect(tmp_path, PlanOverrides(task="semantic"))
    assert d.source["labels"]["void"] == 255 and d.source["labels"]["ignore_void"] is True
    assert "left out of the loss and the scores (ignore_void)" in d.notes["labels"]
    MaskPngLabels.model_validate(d.source["labels"])

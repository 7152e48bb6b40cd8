"""The training loop's batches from a real Ray dataset, every row or an epoch's draw of them."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from segops.cluster.train import _pairs
from segops.engine.train import epoch_rows

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def _rows(n: int) -> ray.data.Dataset:
    items = [{"image": np.full((1, 4, 4), i, np.float32), "label": np.zeros((4, 4), np.uint8)} for i in range(n)]
    return ray.data.from_items(items)


def _ids(batches: list[list[tuple[np.ndarray, np.ndarray]]]) -> list[int]:
    return [int(image[0, 0, 0]) for batch in batches for image, _ in batch]


def test_without_a_draw_every_row_trains_in_batches() -> None:
    batches = list(_pairs(_rows(10), batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2] and _ids(batches) == list(range(10))


def test_an_epoch_draw_trains_exactly_the_rows_it_marks() -> None:
    keep = epoch_rows(20, 1, 7, seed=0, epoch=2, rank=0)
    batches = list(_pairs(_rows(20), batch_size=3, keep=keep))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert _ids(batches) == list(np.flatnonzero(keep))

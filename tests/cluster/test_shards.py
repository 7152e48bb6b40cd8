"""A training worker's rows read from a real Ray dataset's blocks: every row, a rank's share, an
epoch's draw, and each validation case scored by exactly one rank."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from segops.cluster.shards import PIXEL_COLUMNS, Blocks, owns, train_rows
from segops.cluster.train import _batched
from segops.engine.train import epoch_rows

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def _blocks(n: int, rows_per_block: int = 3) -> Blocks:
    items = [
        {
            "case_id": f"case-{i}",
            "image": np.full((1, 2 + i % 3, 4), i, np.float32),
            "label": np.zeros((4, 4), np.uint8),
        }
        for i in range(n)
    ]
    return Blocks.of(ray.data.from_items(items, override_num_blocks=max(1, -(-n // rows_per_block))))


def _ids(pairs) -> list[int]:
    return [int(image[0, 0, 0]) for image, _ in pairs]


def test_rows_come_back_in_the_order_asked_across_blocks_with_their_own_shapes() -> None:
    blocks = _blocks(10)
    assert blocks.num_rows == 10 and len(blocks.refs) == 4
    order = np.array([9, 0, 1, 2, 3, 7, 5])  # runs within a block, across blocks, backwards
    rows = list(blocks.rows(order, PIXEL_COLUMNS))
    assert _ids(rows) == list(order)
    assert [image.shape for image, _ in rows] == [(1, 2 + i % 3, 4) for i in order]  # variable-shaped tensors
    odd = list(
        blocks.rows(blocks.indices_where("case_id", lambda c: int(c.split("-")[1]) % 2), ("case_id", *PIXEL_COLUMNS))
    )
    assert [c for c, _, _ in odd] == [f"case-{i}" for i in range(1, 10, 2)] and _ids(p[1:] for p in odd) == [
        1,
        3,
        5,
        7,
        9,
    ]


def test_ranks_train_equal_disjoint_shares_and_the_rows_left_over_rotate() -> None:
    n, world = 11, 2
    seen: set[int] = set()
    for epoch in range(3):
        shares = [train_rows(n, world, rank, epoch) for rank in range(world)]
        assert [len(s) for s in shares] == [5, 5]  # the same DDP steps on every rank
        assert not set(shares[0]) & set(shares[1])
        seen |= set(shares[0]) | set(shares[1])
    assert seen == set(range(n))  # one row a epoch is left out, never the same one each time
    assert list(train_rows(10, 1, 0, 4)) == list(range(10))
    assert len(train_rows(1, 2, 1, 0)) == 0


def test_an_epoch_draw_trains_exactly_the_rows_it_marks_in_batches() -> None:
    blocks = _blocks(20)
    rows = train_rows(blocks.num_rows, 1, 0, epoch=2)
    keep = epoch_rows(blocks.num_rows, 1, 7, seed=0, epoch=2, rank=0)
    batches = list(_batched(blocks.rows(rows[keep], PIXEL_COLUMNS), batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [i for b in batches for i in _ids(b)] == list(np.flatnonzero(keep))


def test_every_validation_case_is_scored_by_exactly_one_rank() -> None:
    case_ids = [f"case-{i}" for i in range(25)]
    shares = [{c for c in case_ids if owns(c, rank, 3)} for rank in range(3)]
    assert sorted(c for s in shares for c in s) == sorted(case_ids)
    assert all(shares)  # 25 hashed cases leave no rank without one


def test_a_sliced_block_gives_only_the_datasets_rows() -> None:
    ds = ray.data.from_items(
        [
            {"case_id": str(i), "image": np.full((1, 2, 2), i, np.float32), "label": np.zeros((2, 2), np.uint8)}
            for i in range(10)
        ],
        override_num_blocks=1,
    )
    blocks = Blocks.of(ds.limit(4).materialize())
    assert blocks.num_rows == 4
    assert _ids(blocks.rows(np.arange(4), PIXEL_COLUMNS)) == [0, 1, 2, 3]

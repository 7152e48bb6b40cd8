"""``samples_per_epoch``: which rows of a rank's shard train in an epoch."""

import numpy as np

from segops.engine.train import epoch_rows


def test_each_rank_takes_the_same_count_of_its_equal_share() -> None:
    # 103 rows over 2 ranks: 51 each (Ray Train drops the remainder); 25 samples: 13 per rank
    masks = [epoch_rows(103, 2, 25, seed=0, epoch=3, rank=r) for r in (0, 1)]
    assert [len(m) for m in masks] == [51, 51]
    assert [int(m.sum()) for m in masks] == [13, 13]


def test_draws_differ_by_epoch_and_repeat_for_the_same_epoch() -> None:
    first, second = (epoch_rows(200, 1, 20, seed=7, epoch=e, rank=0) for e in (0, 1))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, epoch_rows(200, 1, 20, seed=7, epoch=0, rank=0))  # a resumed epoch


def test_epochs_cover_the_archive_not_one_corner_of_it() -> None:
    seen = np.zeros(300, dtype=bool)
    for epoch in range(30):
        seen |= epoch_rows(300, 1, 30, seed=0, epoch=epoch, rank=0)
    assert seen.mean() > 0.9  # 1 - 0.9**30 = 0.96 expected; a fixed draw would stay at 0.1


def test_no_draw_when_the_samples_cover_the_shard_or_are_unset() -> None:
    assert epoch_rows(40, 2, 40, seed=0, epoch=0, rank=0) is None
    assert epoch_rows(40, 2, None, seed=0, epoch=0, rank=0) is None
    assert epoch_rows(1, 2, 1, seed=0, epoch=0, rank=1) is None  # an empty share: nothing to draw from

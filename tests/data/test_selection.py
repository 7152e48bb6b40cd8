"""Risk-weighted k-center selection: distinct picks, duplicates picked once, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from segops.data.selection import select_cases
from segops.errors import ShapeError


def _pool(n: int = 12, dims: int = 8, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"case-{i:03d}" for i in range(n)], rng.uniform(0, 1, n), rng.normal(0, 1, (n, dims))


def test_returns_budget_distinct_cases_starting_from_the_riskiest() -> None:
    ids, risk, emb = _pool()
    picked = select_cases(ids, risk, emb, 5)
    assert len(picked.indices) == 5
    assert len(set(picked.indices.tolist())) == 5
    assert picked.indices[0] == int(np.argmax(risk))
    assert np.isinf(picked.distances[0])
    assert (picked.distances[1:] > 0).all()


def test_five_copies_of_the_riskiest_image_are_picked_once() -> None:
    ids, risk, emb = _pool(n=10)
    # five exact duplicates of one image, all riskier than every other case
    dup = np.repeat(emb[:1], 5, axis=0)
    ids = ids + [f"dup-{i}" for i in range(5)]
    risk = np.concatenate([risk * 0.5, np.full(5, 0.99)])
    emb = np.concatenate([emb, dup])
    # and a copy of the original as well: six images the same
    picked = select_cases(ids, risk, emb, 8)
    same = {0, 10, 11, 12, 13, 14}
    assert len(same & set(picked.indices.tolist())) == 1
    assert picked.indices[0] == 10  # the riskiest, ties broken by id: "dup-0" < "dup-1"…


def test_duplicates_are_picked_only_after_every_distinct_image() -> None:
    ids = ["a", "b", "c", "d"]
    emb = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    picked = select_cases(ids, np.array([0.9, 0.8, 0.1, 0.2]), emb, 4)
    assert picked.indices.tolist()[:3] in ([0, 3, 2], [0, 2, 3])
    assert picked.indices.tolist()[3] == 1
    assert picked.distances[3] == 0.0


def test_risk_decides_between_equally_distant_cases() -> None:
    ids = ["a", "b", "c"]
    emb = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    picked = select_cases(ids, np.array([1.0, 0.2, 0.6]), emb, 2)
    assert picked.indices.tolist() == [0, 2]


def test_budget_over_the_candidates_returns_every_candidate() -> None:
    ids, risk, emb = _pool(n=4)
    picked = select_cases(ids, risk, emb, 10)
    assert sorted(picked.indices.tolist()) == [0, 1, 2, 3]
    assert len(select_cases(ids, risk, emb, 0).indices) == 0


def test_the_same_inputs_give_the_same_picks_and_ties_go_to_the_smaller_id() -> None:
    ids, risk, emb = _pool(n=30, seed=4)
    first = select_cases(ids, risk, emb, 10)
    assert first.indices.tolist() == select_cases(ids, risk.copy(), emb.copy(), 10).indices.tolist()
    # all risks equal and no embeddings: picks in id order
    shuffled = ["c", "a", "b"]
    picked = select_cases(shuffled, np.zeros(3), np.zeros((3, 0)), 3)
    assert [shuffled[i] for i in picked.indices] == ["a", "b", "c"]


def test_nan_risk_ranks_last_and_without_embeddings_picks_follow_risk() -> None:
    picked = select_cases(["a", "b", "c"], np.array([np.nan, 0.5, 0.9]), np.zeros((3, 0)), 3)
    assert picked.indices.tolist() == [2, 1, 0]


def test_mismatched_shapes_and_bad_weights_are_rejected() -> None:
    with pytest.raises(ShapeError, match=r"expected 3 case ids"):
        select_cases(["a", "b", "c"], np.zeros(2), np.zeros((3, 4)), 1)
    with pytest.raises(ValueError, match="risk_weight must be in"):
        select_cases(["a"], np.zeros(1), np.zeros((1, 1)), 1, risk_weight=1.0)

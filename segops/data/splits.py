"""Seeded, grouped splits of cases: train / validation / test, and k folds for cross-validation.

Everything splits by *group* (a DICOM series, or an image file), so all slices of a series fall
on one side and validation measures generalisation to unseen series, not to neighbouring slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segops.errors import StepError


@dataclass(frozen=True)
class Split:
    """Sorted group ids of each part; ``test`` may be empty (``test_fraction: 0`` or too few groups)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def split_groups(groups: list[str], val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Deterministic train / validation / test split of group ids.

    The test groups are drawn first (``round(test_fraction * n)``, at least 1 when the fraction is
    above 0), then the validation groups from the rest (at least 1); at least one group trains.
    With fewer than 3 groups there is no test set (a warning is the caller's to give).

    Raises:
        StepError: fewer than two groups (nothing to hold out).
    """
    unique = sorted(set(groups))
    n = len(unique)
    if n < 2:
        raise StepError(f"need at least 2 labelled groups (series or images) to split train/val, found {n}")
    order = [unique[i] for i in np.random.default_rng(seed).permutation(n)]
    n_test = 0 if test_fraction <= 0 or n < 3 else min(n - 2, max(1, round(test_fraction * n)))
    n_val = min(n - n_test - 1, max(1, round(val_fraction * n)))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))


def fold_groups(groups: list[str], k: int, seed: int) -> list[tuple[str, ...]]:
    """``k`` disjoint folds of group ids that together hold every group once (sizes differ by at most 1).

    Raises:
        StepError: fewer groups than folds.
    """
    unique = sorted(set(groups))
    if len(unique) < k:
        raise StepError(
            f"{k} folds need at least {k} groups (series or images) outside the test set, found {len(unique)}; "
            "lower train.folds or split.test_fraction"
        )
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    return [tuple(sorted(order[i::k])) for i in range(k)]

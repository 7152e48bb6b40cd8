"""Seeded, grouped splits of cases: train / validation / test, and k folds for cross-validation.

Everything splits by *group* (a DICOM series, or an image file, or a folder of images with an image
source's ``group_by``), so all slices of a series fall on one side and validation measures
generalisation to unseen series, not to neighbouring slices; where a DICOM archive holds several
series of one patient (contrast phases, follow-ups, 4D-CT), by patient, so the held-out figures are
for unseen patients (:func:`split_labelled`). :func:`folder_units` is the plan's rule for when an
image archive's folders are such units.
Given ``strata`` (a group → stratum map, e.g. "has foreground"), each stratum is spread over the
parts in proportion, as scikit-learn's ``StratifiedGroupKFold`` does: on an inspection archive
where one image in ten shows a defect, a random 6-image validation set has none half of the
time, and then neither checkpoint selection nor the held-out figures see a defect.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from segops.errors import StepError

log = logging.getLogger(__name__)

#: Distinct patients an archive must name before its split keeps each patient's series together.
MIN_PATIENTS = 3
#: Image folders a plan keeps whole in the split whatever their names (``group_by: folder``) ...
MANY_FOLDERS = 20
#: ... or, where the folders are numbered alike (``kos01``, ``kos02``, …; ``patient_7``), at least this many.
MIN_NUMBERED_FOLDERS = 4


def folder_units(rel_paths: Iterable[str]) -> str | None:
    """Why the images at ``rel_paths`` (relative to the source folder) should be split by folder,
    or None where each image is its own unit.

    A folder is taken for one unit (a part photographed from several sides, as KolektorSDD's
    ``kos01/Part0..7``; a patient's slices, as the LGG MRI set's ``TCGA_…/``; a city, as Cityscapes')
    where the median folder holds two or more images and there are :data:`MANY_FOLDERS` folders, or
    :data:`MIN_NUMBERED_FOLDERS` whose names differ only in their digits, and the names are distinct
    (DAGM's ``Class1/Train``, ``Class2/Train`` … are textures' splits, not units) or numbered alike
    (Real-IAD's ``OK/S0001`` and ``NG/AK/S0001``: each category numbers its parts). A few folders with word
    names are categories (MVTec AD's defect types, ``MT_Blowhole``/``MT_Crack``, a split's
    ``train``/``test``): holding one out would test on a category never trained on, so those stay
    split by image. Splitting the images of one unit between training and the held-out set scores
    the model on near-copies of what it trained on.
    """
    counts = Counter(PurePosixPath(p).parent.as_posix() for p in rel_paths)
    if len(counts) < MIN_NUMBERED_FOLDERS or statistics.median(counts.values()) < 2:
        return None
    names = [PurePosixPath(f).name for f in counts]
    stems = Counter(re.sub(r"\d+", "#", n) for n in names if re.search(r"\d", n))
    stem, numbered = stems.most_common(1)[0] if stems else ("", 0)
    # DAGM's Class1/Train, Class1/Test, Class2/Train …: word names repeated, not units; Real-IAD's
    # OK/S0001, NG/AK/S0001 … number each category's parts from 1: repeated names, numbered alike
    if len(set(names)) < 0.8 * len(names) and numbered < 0.8 * len(names):
        return None
    if len(counts) < MANY_FOLDERS and numbered < max(MIN_NUMBERED_FOLDERS, 0.8 * len(counts)):
        return None
    listed = names if len(set(names)) == len(names) else list(counts)  # OK/S0001, NG/AK/S0001: by their paths
    shown = ", ".join(sorted(listed)[:3]) + (", ..." if len(names) > 3 else "")
    named = f"numbered alike ({stem.replace('#', 'N')})" if numbered >= 0.8 * len(counts) else "many"
    return (
        f"{sum(counts.values())} images in {len(counts)} folders ({shown}; {named}), "
        f"{statistics.median(counts.values()):g} in the median one: a folder is taken for one part, patient or "
        "scene, kept whole on one side of the split so held-out figures are for folders never trained on "
        "('file' splits the images themselves)"
    )


#: The end of a file name that numbers the images of one unit: a separator, an optional short word
#: (``slice``, ``frame``, ``view``, ``z``), the number (Carvana's ``<car>_01``, ``case0005_slice040``).
_NUMBERED_END = re.compile(r"(?P<sep>[-_ ]+(?:[A-Za-z]{1,6}[-_ ]?)?)(?P<n>\d+)$")


def name_units(rel_paths: Iterable[str]) -> tuple[str, str] | None:
    """(``group_by`` regular expression, why) where the images' names, not their folders, say which
    are one unit: ``<id><sep><n>`` with the same separator in 90 % of the names (Carvana's 16 views
    ``<car>_01..16``; 2D exports of volumes, ``case0005_slice040``; video frames, ``video03_frame0045``),
    :data:`MIN_NUMBERED_FOLDERS` or more ids holding two or more images in the median one, the ids
    holding a digit (Oxford-IIIT Pet's ``Abyssinian_1`` names a breed, a category, not a unit), and the
    numbers restarting at 0 or 1 in 80 % of them (Pascal VOC's ``2007_000032`` numbers a year's photos,
    not views of one thing). None otherwise."""
    paths = list(rel_paths)
    ends = [_NUMBERED_END.search(PurePosixPath(p).stem) for p in paths]
    seps = Counter(m["sep"] for m in ends if m)
    if not seps:
        return None
    sep, count = seps.most_common(1)[0]
    if count < 0.9 * len(paths):
        return None
    pattern = rf"^(.+){re.escape(sep)}\d+\.[^./]+$"
    numbers: dict[str, list[int]] = {}
    for path in paths:
        if m := re.search(pattern, path):
            numbers.setdefault(m[1], []).append(int(re.findall(r"\d+", path[m.end(1) :])[0]))
    sizes = [len(v) for v in numbers.values()]
    if len(numbers) < MIN_NUMBERED_FOLDERS or statistics.median(sizes) < 2:
        return None
    with_digit = sum(bool(re.search(r"\d", PurePosixPath(u).name)) for u in numbers)
    restarting = sum(min(v) <= 1 for v in numbers.values())
    if with_digit < 0.8 * len(numbers) or restarting < 0.8 * len(numbers):
        return None
    shown = ", ".join(PurePosixPath(u).name for u in sorted(numbers)[:3]) + (", ..." if len(numbers) > 3 else "")
    why = (
        f"{len(paths)} images named <id>{sep}<n> for {len(numbers)} ids ({shown}), {statistics.median(sizes):g} "
        "in the median one, numbered from 0 or 1 each: an id is taken for one part, patient or sequence, kept "
        "whole on one side of the split so held-out figures are for ids never trained on ('file' splits the "
        "images themselves)"
    )
    return pattern, why


def foreground_strata(labelled: pd.DataFrame) -> dict[str, bool] | None:
    """Group → whether any of its labels holds foreground (``label_values`` above 0): the strata of
    the split; None for a dataset written before ``label_values`` existed."""
    if "label_values" not in labelled:
        return None
    has_fg = labelled["label_values"].map(lambda values: any(int(v) > 0 for v in values))
    return has_fg.groupby(labelled["group_id"]).any().to_dict()


@dataclass(frozen=True)
class Split:
    """Sorted group ids of each part; ``test`` may be empty (``test_fraction: 0`` or too few groups)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def split_groups(
    groups: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    strata: Mapping[str, Hashable] | None = None,
) -> Split:
    """Deterministic train / validation / test split of group ids.

    The test groups are drawn first (``round(test_fraction * n)``, at least 1 when the fraction is
    above 0), then the validation groups from the rest (at least 1); at least one group trains.
    With fewer than 3 groups there is no test set (a warning is the caller's to give). With
    ``strata``, each stratum goes to test, validation and training in proportion
    (:func:`_stratified_order`); one stratum alone splits as without. With "has foreground" strata
    (booleans), test and then validation each hold a foreground-bearing group wherever training
    keeps one besides (:func:`_with_foreground`).

    Raises:
        StepError: fewer than two groups (nothing to hold out).
    """
    unique = sorted(set(groups))
    n = len(unique)
    if n < 2:
        raise StepError(f"need at least 2 labelled groups (series or images) to split train/val, found {n}")
    order = _stratified_order(unique, seed, strata)
    n_test = 0 if test_fraction <= 0 or n < 3 else min(n - 2, max(1, round(test_fraction * n)))
    n_val = min(n - n_test - 1, max(1, round(val_fraction * n)))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if strata is not None and all(isinstance(strata.get(g), bool) for g in unique):
        for part in (test, val):  # test first: the held-out figures must see the task
            _with_foreground(part, train, strata)
    return Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))


def _with_foreground(part: list[str], train: list[str], has_fg: Mapping[str, Hashable]) -> None:
    """Where a held-out part holds no foreground-bearing group while training keeps two or more,
    swap the first of those in for the part's last group. Proportional interleaving alone can
    leave a small part without one: 8 of 10 series with nodules, test 2 and validation 1 takes
    the order's third group, the first of the 2 without; a validation set without foreground
    chooses no postprocessing and calibrates no risk, a test set without it scores only background."""
    if not part or any(has_fg.get(g) for g in part):
        return
    spare = [g for g in train if has_fg.get(g)]
    if len(spare) < 2:  # training keeps at least one
        return
    train[train.index(spare[0])], part[-1] = part[-1], spare[0]


def fold_groups(
    groups: list[str], k: int, seed: int, strata: Mapping[str, Hashable] | None = None
) -> list[tuple[str, ...]]:
    """``k`` disjoint folds of group ids that together hold every group once (sizes differ by at most 1;
    with ``strata``, each stratum spread over the folds as evenly).

    Raises:
        StepError: fewer groups than folds.
    """
    unique = sorted(set(groups))
    if len(unique) < k:
        raise StepError(
            f"{k} folds need at least {k} groups (series or images) outside the test set, found {len(unique)}; "
            "lower train.folds or split.test_fraction"
        )
    order = _stratified_order(unique, seed, strata, dealt=True)
    return [tuple(sorted(order[i::k])) for i in range(k)]


def _stratified_order(
    unique: list[str], seed: int, strata: Mapping[str, Hashable] | None, dealt: bool = False
) -> list[str]:
    """The groups in a seeded random order. With two or more strata, either interleaved so that
    every prefix holds each stratum in proportion (a group's key is its position within its
    stratum's shuffled list, as a fraction of that stratum's size), or with ``dealt`` one stratum
    after the other, so that dealing every ``k``-th group to a fold spreads each stratum evenly."""
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    if strata is None or len({strata.get(g) for g in unique}) < 2:
        return order
    members: dict[Hashable, list[str]] = {}
    for g in order:
        members.setdefault(strata.get(g), []).append(g)
    if dealt:
        return [g for _, gs in sorted(members.items(), key=lambda kv: repr(kv[0])) for g in gs]
    rank = {g: i for i, g in enumerate(order)}
    key = {g: ((j + 0.5) / len(gs), rank[g]) for gs in members.values() for j, g in enumerate(gs)}
    return sorted(order, key=key.__getitem__)


def patient_units(labelled: pd.DataFrame) -> dict[str, str] | None:
    """Group → the unit a split keeps together (:func:`patient_unit_map` over the records' PatientIDs)."""
    if "patient_id" not in labelled.columns:
        return None
    by_group = labelled.drop_duplicates("group_id").set_index("group_id")["patient_id"]
    units = patient_unit_map({str(g): str(p) for g, p in by_group.fillna("").items()})
    if units is not None:
        patients = {u for u in units.values() if u.startswith("patient:")}
        log.info(
            "%d series of %d patients: the split keeps each patient's series on one side", len(units), len(patients)
        )
    return units


def patient_unit_map(patients: Mapping[str, str]) -> dict[str, str] | None:
    """Group → ``patient:<PatientID>`` (a group without a PatientID: itself) where ``patients``
    (group → PatientID) names at least :data:`MIN_PATIENTS` patients and one of them has several
    series; None where each group is its own unit (one series per patient, image files, or an
    archive anonymised to fewer patient IDs than could be held out)."""
    named = {g: p.strip() for g, p in patients.items() if p.strip()}
    distinct = len(set(named.values()))
    if distinct < MIN_PATIENTS or distinct == len(named):
        return None
    return {g: f"patient:{named[g]}" if g in named else g for g in patients}


def split_labelled(
    labelled: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int, folds: int = 1
) -> tuple[Split, list[tuple[str, ...]]]:
    """The run's split of the labelled records' groups (:func:`split_groups`, stratified by
    :func:`foreground_strata`, by patient where :func:`patient_units` says so), and with ``folds`` > 1
    its non-test groups cut into folds (:func:`fold_groups`); every part lists groups."""
    units = patient_units(labelled) or {}
    members: dict[str, list[str]] = {}
    for group in sorted(set(labelled["group_id"])):
        members.setdefault(units.get(group, group), []).append(group)
    strata = foreground_strata(labelled)
    unit_strata = None if strata is None else {u: any(strata[g] for g in gs) for u, gs in members.items()}

    def groups_of(part: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(g for unit in part for g in members[unit]))

    split = split_groups(list(members), val_fraction, test_fraction, seed, unit_strata)
    cut = fold_groups([*split.train, *split.val], folds, seed, unit_strata) if folds > 1 else []
    return Split(groups_of(split.train), groups_of(split.val), groups_of(split.test)), [groups_of(f) for f in cut]

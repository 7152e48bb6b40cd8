"""Grouped train/validation/test splits and k folds."""

import pandas as pd
import pytest

from segops.data.splits import fold_groups, foreground_strata, patient_units, split_groups, split_labelled
from segops.errors import StepError

GROUPS = [f"series-{i:02d}" for i in range(10) for _ in range(3)]  # 10 groups, 3 slices each


def test_three_way_split_sizes_disjoint_and_complete():
    split = split_groups(GROUPS, val_fraction=0.2, test_fraction=0.3, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (5, 2, 3)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert set().union(*parts) == set(GROUPS)
    assert sum(map(len, parts)) == 10  # disjoint


def test_split_is_seeded():
    assert split_groups(GROUPS, 0.2, 0.2, seed=1) == split_groups(GROUPS, 0.2, 0.2, seed=1)
    assert split_groups(GROUPS, 0.2, 0.2, seed=1) != split_groups(GROUPS, 0.2, 0.2, seed=2)


def test_no_test_set_when_fraction_zero_or_too_few_groups():
    assert split_groups(GROUPS, 0.2, 0.0, seed=0).test == ()
    two = split_groups(["a", "b"], 0.5, 0.2, seed=0)
    assert two.test == () and len(two.train) == 1 and len(two.val) == 1
    three = split_groups(["a", "b", "c"], 0.2, 0.2, seed=0)
    assert (len(three.train), len(three.val), len(three.test)) == (1, 1, 1)


def test_one_group_is_an_error():
    with pytest.raises(StepError, match="at least 2 labelled groups"):
        split_groups(["a", "a"], 0.2, 0.2, seed=0)


def test_folds_are_disjoint_grouped_and_cover_every_group_once():
    folds = fold_groups(GROUPS, 3, seed=0)
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    flat = [g for fold in folds for g in fold]
    assert sorted(flat) == sorted(set(GROUPS))  # each group exactly once; slices of a group go together
    assert fold_groups(GROUPS, 3, seed=0) == folds


def test_more_folds_than_groups_is_an_error_naming_the_fix():
    with pytest.raises(StepError, match="lower train.folds"):
        fold_groups(["a", "b"], 3, seed=0)


def test_rare_defect_groups_are_spread_over_the_parts_in_proportion():
    """60 images, 6 with a defect: every seed puts one in validation and one or two in test
    (a random split leaves validation without a defect for some seeds)."""
    images = [f"img-{i:02d}" for i in range(60)]
    defect = {g: i % 10 == 0 for i, g in enumerate(images)}
    unstratified = [sum(defect[g] for g in split_groups(images, 0.1, 0.2, seed=s).val) for s in range(20)]
    assert 0 in unstratified  # the failure this guards against
    for seed in range(20):
        split = split_groups(images, 0.1, 0.2, seed=seed, strata=defect)
        counted = [sum(defect[g] for g in part) for part in (split.train, split.val, split.test)]
        assert counted[1] == 1 and counted[2] in (1, 2) and sum(counted) == 6
        assert (len(split.train), len(split.val), len(split.test)) == (42, 6, 12)  # sizes as without strata
    assert split_groups(images, 0.1, 0.2, 3, defect) != split_groups(images, 0.1, 0.2, 4, defect)
    one_stratum = dict.fromkeys(images, True)
    assert split_groups(images, 0.1, 0.2, 5, one_stratum) == split_groups(images, 0.1, 0.2, 5)


def test_a_small_held_out_part_gets_a_foreground_group_while_training_keeps_one():
    """8 of 10 series with nodules, test 2 and validation 1: in proportion, validation took a
    series without (its val_fg_dice was nan, postprocessing chose nothing); now each part holds
    one with foreground, the sizes stay, and training keeps the rest."""
    series = [f"s{i}" for i in range(10)]
    for seed in range(20):
        nodules = {g: i not in (seed % 10, (seed + 3) % 10) for i, g in enumerate(series)}
        split = split_groups(series, 0.1, 0.2, seed=seed, strata=nodules)
        assert (len(split.train), len(split.val), len(split.test)) == (7, 1, 2)
        assert all(any(nodules[g] for g in part) for part in (split.train, split.val, split.test))
        assert sorted(split.train + split.val + split.test) == series
    rare = {g: g in ("s3", "s7") for g in series}  # two: one held out, training keeps the other
    for seed in range(20):
        split = split_groups(series, 0.1, 0.2, seed=seed, strata=rare)
        assert [sum(rare[g] for g in split.train), sum(rare[g] for g in split.val + split.test)] == [1, 1]


def test_folds_spread_each_stratum_evenly():
    images = [f"img-{i:02d}" for i in range(50)]
    defect = {g: i % 5 == 0 for i, g in enumerate(images)}  # 10 of 50
    folds = fold_groups(images, 5, seed=0, strata=defect)
    assert [sum(defect[g] for g in fold) for fold in folds] == [2, 2, 2, 2, 2]
    assert sorted(g for fold in folds for g in fold) == images


def test_foreground_strata_of_the_labelled_rows():
    rows = pd.DataFrame(
        {
            "group_id": ["series-a", "series-a", "img-b", "img-c"],
            "label_values": [[0], [0, 1], [0], [0, 2]],  # series-a: one slice with foreground is enough
        }
    )
    assert foreground_strata(rows) == {"series-a": True, "img-b": False, "img-c": True}
    assert foreground_strata(rows.drop(columns="label_values")) is None  # a dataset from before the column


def _series(patients: dict[str, int], slices: int = 2) -> pd.DataFrame:
    """Labelled slice rows: ``patients`` maps a PatientID to its number of series (all with foreground)."""
    rows = [
        {"group_id": f"{p}-s{s}", "patient_id": p, "label_values": [0, 1]}
        for p, n in patients.items()
        for s in range(n)
        for _ in range(slices)
    ]
    return pd.DataFrame(rows)


def test_a_patients_series_stay_on_one_side_of_the_split_and_of_the_folds():
    """Ten patients of three series each (contrast phases): no patient is both trained on and held out."""
    labelled = _series({f"P{i:02d}": 3 for i in range(10)})
    assert patient_units(labelled)["P03-s1"] == "patient:P03"
    split, folds = split_labelled(labelled, 0.2, 0.3, seed=0, folds=1)
    patients = [{g.split("-")[0] for g in part} for part in (split.train, split.val, split.test)]
    assert [len(p) for p in patients] == [5, 2, 3] and set().union(*patients) == {f"P{i:02d}" for i in range(10)}
    assert sum(map(len, patients)) == 10  # no patient in two parts
    assert len(split.test) == 9 and folds == []  # every series of the held-out patients
    _, folds = split_labelled(labelled, 0.2, 0.3, seed=0, folds=3)
    assert sorted(len({g.split("-")[0] for g in f}) for f in folds) == [2, 2, 3]
    assert all(len(f) == 3 * len({g.split("-")[0] for g in f}) for f in folds)


def test_one_series_per_patient_or_an_anonymised_archive_splits_by_series_as_before():
    one_each = _series({f"P{i}": 1 for i in range(6)})
    assert patient_units(one_each) is None
    assert split_labelled(one_each, 0.2, 0.3, seed=0)[0] == split_groups(list(one_each["group_id"]), 0.2, 0.3, 0)
    anonymised = _series({"ANON": 6, "": 2})  # one patient ID for every series: nothing could be held out by patient
    assert patient_units(anonymised) is None
    assert patient_units(_series({"A": 2, "B": 1, "": 2})) is None  # two named patients: too few
    files = pd.DataFrame({"group_id": ["a.png", "b.png", "c.png"], "label_values": [[0, 1]] * 3})
    assert patient_units(files) is None  # image files carry no PatientID column here


def test_folders_are_split_units_when_numbered_alike_or_many_not_when_few_categories():
    """The plan's rule: KolektorSDD's kos01..kos14 (a part each) and 21 Cityscapes cities are units;
    MVTec's defect folders, Magnetic-tile's MT_<defect>/Imgs, DAGM's 20 Class<k>/Train|Test folders,
    2 numbered sequences, and one image per folder are not."""
    from segops.data.splits import folder_units

    ksdd = [f"kos{k:02d}/Part{p}.jpg" for k in range(1, 15) for p in range(8)]
    why = folder_units(ksdd)
    assert why is not None and why.startswith(
        "112 images in 14 folders (kos01, kos02, kos03, ...; numbered alike (kosN))"
    )
    assert folder_units([f"kos{k:02d}/Part{p}.jpg" for k in range(1, 4) for p in range(8)]) is None  # 3: too few
    cities = [
        f"leftImg8bit/train/{c}/{c}_{i}.png" for c in map("city_{}".format, "abcdefghijklmnopqrstu") for i in range(3)
    ]
    assert folder_units(cities) is not None and "21 folders" in folder_units(cities)
    assert folder_units([f"c{chr(97 + k)}/{i}.png" for k in range(19) for i in range(3)]) is None  # 19 word folders
    mvtec = [f"test/{d}/{i:03d}.png" for d in ("crack", "cut", "hole", "print", "good", "scratch") for i in range(9)]
    tiles = [f"MT_{d}/Imgs/exp1_num_{i}.jpg" for d in ("Blowhole", "Break", "Crack", "Fray", "Free") for i in range(9)]
    dagm = [f"Class{c}/{part}/{i:04d}.PNG" for c in range(1, 11) for part in ("Train", "Test") for i in range(5)]
    for layout in (mvtec, tiles, dagm, [f"0{s}/t{i:03d}.tif" for s in (1, 2) for i in range(40)]):
        assert folder_units(layout) is None
    assert folder_units([f"case{k}/images/case{k}.png" for k in range(40)]) is None  # one image a folder
    # Real-IAD: each category (OK, NG/<defect>) numbers its parts from S0001, 5 camera views each
    realiad = [
        f"{kind}/S{s:04d}/audiojack_{s:04d}_C{c}.jpg"
        for kind, n in (("OK", 8), ("NG/AK", 5))
        for s in range(1, n + 1)
        for c in range(1, 6)
    ]
    why = folder_units(realiad)
    assert why is not None and why.startswith("65 images in 13 folders (NG/AK/S0001, NG/AK/S0002, NG/AK/S0003, ...")


def test_ids_in_file_names_are_units_where_each_ids_numbers_restart() -> None:
    """Carvana's ``<car>_01..16`` views, ``case0005_slice040`` volume exports and video frames are
    units by name (``group_by`` a regular expression capturing the id); Pascal VOC's year-numbered
    photos, Oxford-IIIT Pet's breeds, Shenzhen/Montgomery's ``_0``/``_1`` diagnosis digit, ISIC ids
    and GlaS's ``train_<k>`` are not."""
    import re

    from segops.data.images import image_group
    from segops.data.splits import name_units

    cars = [f"train/{c:012x}_{v:02d}.jpg" for c in range(0x5A1B2C3D4E50, 0x5A1B2C3D4E56) for v in range(1, 17)]
    pattern, why = name_units(cars)
    assert pattern == r"^(.+)_\d+\.[^./]+$"
    assert why.startswith("96 images named <id>_<n> for 6 ids (5a1b2c3d4e50, 5a1b2c3d4e51, 5a1b2c3d4e52, ...), 16")
    assert image_group("train/5a1b2c3d4e50_07.jpg", pattern) == "re:train/5a1b2c3d4e50"
    slices = [f"case{c:04d}_slice{s:03d}.png" for c in range(5, 11) for s in range(30)]
    assert name_units(slices)[0] == r"^(.+)_slice\d+\.[^./]+$"
    frames = [f"video{c:02d}_frame{s:04d}.png" for c in range(1, 6) for s in range(0, 200, 10)]
    assert re.search(name_units(frames)[0], "video03_frame0040.png")[1] == "video03"
    assert name_units(frames[:60]) is None  # 3 videos: too few ids
    voc = [f"{y}_{n:06d}.jpg" for y in range(2007, 2013) for n in range(32, 400, 7)]
    pets = [f"{b}_{i}.jpg" for b in ("Abyssinian", "Bengal", "beagle", "pug", "boxer") for i in range(1, 40)]
    shenzhen = [f"CHNCXR_{i:04d}_{i % 2}.png" for i in range(1, 100)]
    isic = [f"ISIC_{i:07d}.jpg" for i in range(100)]
    glas = [f"train_{i}.bmp" for i in range(1, 80)] + [f"testA_{i}.bmp" for i in range(1, 60)]
    mixed = cars[:48] + [f"photo{i}.jpg" for i in range(10)]  # 17 % without the id form
    for layout in (voc, pets, shenzhen, isic, glas, mixed):
        assert name_units(layout) is None

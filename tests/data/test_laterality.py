"""Class names told apart by side: mirroring swaps them, so a plan turns it off."""

from __future__ import annotations

import pytest

from segops.data.laterality import mirroring_choices, side_pairs


@pytest.mark.parametrize(
    "names, pairs",
    [
        ({1: "Heart", 2: "Lung_L", 3: "Lung_R", 4: "SpinalCord"}, [("Lung_L", "Lung_R")]),  # RTSTRUCT (LCTSC)
        ({1: "kidney_right", 2: "kidney_left", 3: "liver"}, [("kidney_left", "kidney_right")]),  # TotalSegmentator
        ({1: "Right Kidney", 2: "Left Kidney"}, [("Left Kidney", "Right Kidney")]),  # BTCV / AMOS
        (
            {1: "Parotid_Lt", 2: "Parotid_Rt", 3: "L Femur", 4: "R Femur"},
            [("Parotid_Lt", "Parotid_Rt"), ("L Femur", "R Femur")],
        ),
        ({1: "vertebrae_L1", 2: "vertebrae_L2", 3: "rectum", 4: "Lung_L"}, []),  # a vertebra, no side; one side alone
        ({1: "liver", 2: "tumour"}, []),
        ({}, []),
    ],
)
def test_side_pairs_are_names_the_same_but_for_a_side_word(names: dict[int, str], pairs: list) -> None:
    assert side_pairs(names) == pairs


def test_a_pair_turns_mirroring_off_and_says_why() -> None:
    choices = mirroring_choices({1: "Lung_L", 2: "Lung_R"})
    assert choices["augment.flip"].value == 0.0 and choices["augment.rotate90"].value == 0.0
    assert choices["augment.flip"].why.startswith("Lung_L / Lung_R: told apart by side")
    assert mirroring_choices({1: "liver", 2: "Lung_L"}) == {}

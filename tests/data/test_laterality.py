"""Class names told apart by side (a plan then turns mirroring off: tests/steps/test_plan_outputs.py)."""

from __future__ import annotations

import pytest

from segops.data.laterality import side_pairs


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

"""The explicit list of SOP classes that carry no image."""

import pydicom.uid
import pytest

from segops.data.sop_classes import _RETIRED_NON_IMAGE, NON_IMAGE_SOP_CLASSES, is_non_image_class


@pytest.mark.parametrize(
    "keyword",
    [
        "RTPlanStorage",
        "RTStructureSetStorage",
        "BasicTextSRStorage",
        "ComprehensiveSRStorage",
        "KeyObjectSelectionDocumentStorage",
        "EncapsulatedPDFStorage",
        "GrayscaleSoftcopyPresentationStateStorage",
        "TwelveLeadECGWaveformStorage",
        "RawDataStorage",
        "SpatialRegistrationStorage",
        "RTBeamsTreatmentRecordStorage",
    ],
)
def test_non_image_classes_are_listed(keyword: str) -> None:
    assert is_non_image_class(getattr(pydicom.uid, keyword))


@pytest.mark.parametrize(
    "keyword",
    [
        "CTImageStorage",
        "MRImageStorage",
        "RTDoseStorage",
        "SegmentationStorage",
        "RTImageStorage",
        "ParametricMapStorage",
        "SecondaryCaptureImageStorage",
        "VLWholeSlideMicroscopyImageStorage",
    ],
)
def test_classes_that_carry_pixels_are_not(keyword: str) -> None:
    assert not is_non_image_class(getattr(pydicom.uid, keyword))


def test_unknown_or_missing_class_is_not_a_non_image_class() -> None:
    assert not is_non_image_class("") and not is_non_image_class("1.2.3.4")


def test_retired_uids_are_the_classes_their_names_say() -> None:
    for uid, name in _RETIRED_NON_IMAGE.items():
        assert pydicom.uid.UID(uid).name == name
    assert len(NON_IMAGE_SOP_CLASSES) == 126
    assert all(pydicom.uid.UID(uid).is_valid for uid in NON_IMAGE_SOP_CLASSES)

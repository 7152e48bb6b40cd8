"""Contour labels of DICOM sources: RTSTRUCT structure sets and LIDC-IDRI's XML reading sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from segops.config.spec import Spec

#: The class-map value of ignored pixels (:data:`segops.config.sources.IGNORE_LABEL`, which imports this module).
IGNORE_CLASS = 255


class RtstructLabels(Spec):
    """A folder of DICOM RTSTRUCT objects (any depth): contours per ROI, rasterised onto each slice.

    ``rois`` maps ROI-name globs (case-insensitive, ``*`` and ``?``) to classes, e.g.
    ``{"GTV*": 1, "spinal*": 2}``; ``synonyms`` adds further globs for a rule where names vary
    between archives (``{"GTV*": ["tumou?r*", "lesion"]}``). A ROI is matched by the first rule
    that fits; where ROIs of different rules overlap, the rule listed first wins. Contours are
    joined to slices by ReferencedSOPInstanceUID, else by slice position; nested contours of one
    ROI make holes (even-odd rule). Contours off every slice, open contours and ROIs that match no
    rule are counted in the label census. A series no RTSTRUCT references is unlabelled.

    ``missing_rois``: what the pixels no ROI covers are on the slices of a series whose structure
    sets draw no contour for some class (clinical archives draw the heart for some patients and not
    others): ``background`` (the default) teaches the undrawn class as background there;
    ``ignore`` leaves those pixels out of the loss and the scores (nnU-Net's ignore label, as for
    partial annotations), so only the classes drawn are learnt from that series.
    """

    kind: Literal["rtstruct"]
    path: Path
    rois: dict[str, Annotated[int, Field(ge=1, le=255)]] = Field(min_length=1)
    synonyms: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    missing_rois: Literal["background", "ignore"] = "background"

    @model_validator(mode="after")
    def _synonyms_name_rules(self) -> RtstructLabels:
        unknown = sorted(set(self.synonyms) - set(self.rois))
        if unknown:
            raise ValueError(
                f"synonyms for {unknown} name no rule of rois ({sorted(self.rois)}); key them by a rois glob"
            )
        if self.missing_rois == "ignore" and IGNORE_CLASS in self.rois.values():
            raise ValueError(
                f"with missing_rois: ignore, {IGNORE_CLASS} marks ignored pixels; number the classes below it"
            )
        return self


class LidcLabels(Spec):
    """LIDC-IDRI nodule outlines: the XML files (``LidcReadMessage``, any depth under ``path``, as
    TCIA's download puts one in each CT series' folder), one reading session per radiologist.

    A slice is labelled when an XML names its series; its class map is the readers' consensus:
    class ``class_id`` where at least ``agreement`` of the series' reading sessions outlined the
    pixel (LIDC's usual 50 % consensus: 2 of 4 readers), else background. Outlines are each
    nodule's edge points (>= 3 mm nodules), filled with their edge; ``inclusion: FALSE`` outlines
    cut holes. Nodules < 3 mm (one point) and non-nodules are marked, not outlined: counted, not
    drawn. Series no XML names are unlabelled.
    """

    kind: Literal["lidc-xml"]
    path: Path
    agreement: float = Field(default=0.5, gt=0.0, le=1.0, description="Fraction of the readers that must agree.")
    class_id: Annotated[int, Field(ge=1, le=254)] = 1

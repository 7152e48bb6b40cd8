"""Contour labels of DICOM sources: RTSTRUCT structure sets and LIDC-IDRI's XML reading sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from segops.config.spec import Spec


class RtstructLabels(Spec):
    """A folder of DICOM RTSTRUCT objects (any depth): contours per ROI, rasterised onto each slice.

    ``rois`` maps ROI-name globs (case-insensitive, ``*`` and ``?``) to classes, e.g.
    ``{"GTV*": 1, "spinal*": 2}``; ``synonyms`` adds further globs for a rule where names vary
    between archives (``{"GTV*": ["tumou?r*", "lesion"]}``). A ROI is matched by the first rule
    that fits; where ROIs of different rules overlap, the rule listed first wins. Contours are
    joined to slices by ReferencedSOPInstanceUID, else by slice position; nested contours of one
    ROI make holes (even-odd rule). Contours off every slice, open contours and ROIs that match no
    rule are counted in the label census. A series no RTSTRUCT references is unlabelled.
    """

    kind: Literal["rtstruct"]
    path: Path
    rois: dict[str, Annotated[int, Field(ge=1, le=255)]] = Field(min_length=1)
    synonyms: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _synonyms_name_rules(self) -> RtstructLabels:
        unknown = sorted(set(self.synonyms) - set(self.rois))
        if unknown:
            raise ValueError(
                f"synonyms for {unknown} name no rule of rois ({sorted(self.rois)}); key them by a rois glob"
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

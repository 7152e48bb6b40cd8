"""Which files of a folder a source reads (``include`` / ``exclude`` globs), and which DICOM image
objects among them are the archive's images: its cross-sections.

A hospital or TCIA export holds more than the slices a model is for: localizers (scout views
the scanner takes to plan the scan), secondary captures (dose-report screenshots, scanned
forms), other modalities of the same study (the PET of a PET/CT, LIDC's chest X-rays beside
its CTs). segops skips localizers by default (as ``dcm2niix -i y`` ignores them), and lists
every object it skips with the reason, as it does objects without pixels.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from segops.config.source_help import EXCLUDE_HELP, INCLUDE_HELP
from segops.config.spec import Spec


def check_globs(include: tuple[str, ...], exclude: tuple[str, ...], name_of_include: str = "include") -> None:
    """Raise a ValueError naming the first pattern that is not a relative POSIX glob."""
    for name, patterns in ((name_of_include, include), ("exclude", exclude)):
        for pattern in patterns:
            if not pattern or pattern.startswith("/") or "\\" in pattern:
                raise ValueError(
                    f"{name} pattern {pattern!r} is not a relative POSIX glob; patterns match paths relative to the "
                    "source folder with '/' between folders, e.g. 'good/**' or '**/README*'"
                )


class FileSelection(Spec):
    """``include`` / ``exclude`` globs of a folder source (see :mod:`segops.data.globs`)."""

    include: tuple[str, ...] = Field(default=(), description=INCLUDE_HELP)
    exclude: tuple[str, ...] = Field(default=(), description=EXCLUDE_HELP)

    @model_validator(mode="after")
    def _globs_relative(self) -> FileSelection:
        check_globs(self.include, self.exclude)
        return self


SKIP_HELP = (
    "DICOM images that are not the archive's cross-sections, skipped and listed with the reason (status "
    "skipped): 'localizer' (scout views: ImageType LOCALIZER; they cut a series into two orientations and sizes "
    "and are no slice of it) and 'secondary' (Secondary Capture objects: dose-report screenshots, scanned pages; "
    "leave it out where the images themselves are secondary captures). [] reads every image."
)
MODALITIES_HELP = (
    "Only images of these Modality values are read (e.g. ['CT'] leaves out the PET of a PET/CT or the chest "
    "X-rays beside CT series); the others are skipped and listed. Empty: every modality."
)


class DicomSelection(Spec):
    """The fields of a DICOM source that choose its image objects (see the module docstring)."""

    skip: tuple[Literal["localizer", "secondary"], ...] = Field(default=("localizer",), description=SKIP_HELP)
    modalities: tuple[Annotated[str, Field(pattern=r"^[A-Z0-9]{1,16}$")], ...] = Field(
        default=(), description=MODALITIES_HELP
    )

    @field_validator("modalities", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(v.strip().upper() if isinstance(v, str) else v for v in value)
        return value

"""Exception classes users see. Each message says what was given and what was expected."""

from __future__ import annotations


class SegopsError(Exception):
    """Base class for every error segops raises on purpose."""


class WorkflowSpecError(SegopsError):
    """A workflow file is malformed. ``problems`` lists every issue as ``dotted.path: message``."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in workflow file:\n{lines}")


class DecodeError(SegopsError):
    """An input file could not be read or decoded into pixels.

    ``transfer_syntax`` is set when the header was readable, so quarantine rows can say which
    codec failed.
    """

    def __init__(self, message: str, transfer_syntax: str = ""):
        super().__init__(message)
        self.transfer_syntax = transfer_syntax


class SkippedError(DecodeError):
    """A whole DICOM object that is not one of the source's images: listed with status ``skipped``."""


class NoPixelDataError(SkippedError):
    """A DICOM object carries no image (SR, KOS, RT plan, presentation state...)."""


class LeftOutError(SkippedError):
    """A DICOM image the source's ``skip`` or ``modalities`` leaves out (a localizer, another modality)."""


class LabelError(SegopsError):
    """A label file is missing, unreadable, or does not fit its image.

    ``label_uri``: the label being read, where the reader knew it (the record keeps it, so the
    label is not reported as matching no image)."""

    label_uri: str | None = None


class LabelValueError(LabelError):
    """Label values are not classes of the model that is to train on them or be scored against them."""


class ShapeError(SegopsError):
    """An array has a shape other than the one expected."""


class CheckpointError(SegopsError):
    """A model checkpoint is missing or does not match the model it should rebuild."""


class StepError(SegopsError):
    """A workflow step cannot run with what earlier steps produced."""


class AuditLookupError(SegopsError):
    """A tracking store, run, model version or alias named for an audit does not exist."""


class AuditError(SegopsError):
    """A per-case table an audit needs lacks required columns, or cannot be read."""


class PlanError(SegopsError):
    """``segops plan`` cannot tell the images, their masks or the task from the files; an option can."""


class RunInProgressError(SegopsError):
    """Another process is running the same workflow run (the same run folder) right now."""

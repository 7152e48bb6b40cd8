"""Step specs: the segment step's review section."""

import pytest
import yaml

from segops.config import validate_workflow_text
from segops.config.schema import SegmentStep
from segops.errors import WorkflowSpecError


def _segment_workflow(**segment) -> str:
    step = {"step": "segment", "model": "models/m", "source": {"kind": "images", "path": "data/img"}} | segment
    return yaml.safe_dump({"name": "wf", "steps": [step]})


def test_review_can_be_switched_off_and_an_unknown_key_is_named_by_its_dotted_path() -> None:
    (on,) = validate_workflow_text(_segment_workflow(), check_paths=False).steps
    (off,) = validate_workflow_text(_segment_workflow(review={"enabled": False}), check_paths=False).steps
    assert isinstance(off, SegmentStep) and on.review.enabled and not off.review.enabled
    assert (off.review.top, off.review.flag_risk) == (on.review.top, on.review.flag_risk)
    with pytest.raises(WorkflowSpecError) as info:
        validate_workflow_text(_segment_workflow(review={"enabled": False, "enable": True}), check_paths=False)
    (problem,) = info.value.problems
    assert problem.startswith("steps[0].review.enable: unknown field"), problem

"""Workflow specs and their loader."""

from segops.config.load import load_workflow, spec_hash, validate_workflow_text
from segops.config.schema import WorkflowSpec

__all__ = ["WorkflowSpec", "load_workflow", "spec_hash", "validate_workflow_text"]

"""Workflow steps: each is ``run(step_spec, ctx) -> outputs`` over typed specs."""

"""Workflow steps: each is ``run(step_spec, ctx) -> result`` over typed specs (see :mod:`segops.steps.results`)."""

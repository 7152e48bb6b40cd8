"""Model builders, looked up by the ``arch`` name of a model spec."""

from segops.models.registry import build_model, known_archs

__all__ = ["build_model", "known_archs"]

"""Model builders, looked up by the ``arch`` name of a model spec, and their starting weights."""

from segops.models.registry import backbone_of, build_model, known_archs
from segops.models.weights import LoadReport, load_weights, weights_sources

__all__ = ["LoadReport", "backbone_of", "build_model", "known_archs", "load_weights", "weights_sources"]

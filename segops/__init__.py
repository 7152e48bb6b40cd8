"""segops: segment large medical and industrial image archives as distributed batch workflows."""

__version__ = "0.1.0"

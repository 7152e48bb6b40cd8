"""The only package that imports Ray: sources, training and inference at scale.

Everything here wraps the pure core (``segops.data``, ``segops.engine``) so the same code
runs in a test process, on a laptop's local Ray, or on a cluster reached via ``RAY_ADDRESS``.
"""

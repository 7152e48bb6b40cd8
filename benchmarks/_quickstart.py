"""The quickstart workflow's train step, the recipe that benchmarks adapt (``workflows/quickstart.yaml``).

Shared by ``plan.py`` (the fixed recipe for the defect archive) and ``scaling.py``: both train the
quickstart's U-Net with its preprocessing and optimiser settings, so they read them from the file
users start from instead of keeping copies of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

QUICKSTART = Path(__file__).resolve().parents[1] / "workflows" / "quickstart.yaml"


def quickstart_train(**changes: Any) -> dict[str, Any]:
    """The quickstart's ``train`` step as a dict (keys in the file's order), each of ``changes``
    replacing or adding that key, e.g. ``quickstart_train(epochs=3, register_model=False)``."""
    doc = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    train = next(step for step in doc["steps"] if step["step"] == "train")
    return train | changes

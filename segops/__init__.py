"""segops: segment large medical and industrial image archives as distributed batch workflows."""

import os

__version__ = "0.1.0"

#: Usage reporting of the libraries segops drives, off unless the user's environment turns it on:
#: hospital and factory archives run on networks where a process must not call out on its own.
#: MLflow starts its telemetry client when it is first imported (MONAI imports it too), so this is
#: set on importing segops, before anything else of it runs; Ray workers inherit the environment.
NO_USAGE_REPORTING = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}

for _key, _value in NO_USAGE_REPORTING.items():
    os.environ.setdefault(_key, _value)

"""MLflow: the only package that imports it.

- :mod:`~segops.tracking.store`: point MLflow at a store (URIs, artifact location, quiet logs);
- :mod:`~segops.tracking.pyfunc`: a segops checkpoint as an MLflow pyfunc model;
- :mod:`~segops.tracking.registry`: model URIs and fetching the checkpoint inside a logged model;
- :mod:`~segops.tracking.run`: the driver's run (one per workflow run; Ray workers never create runs);
- :mod:`~segops.tracking.reader`: the read side for audits.

Each module imports only those above it in this list.
"""

from segops.tracking.pyfunc import CHECKPOINT_ARTIFACT, SegmentationPyfunc
from segops.tracking.reader import (
    AUDIT_EXPERIMENT,
    EVALUATE_CHALLENGER,
    EVALUATE_CHAMPION,
    RUN_DOCUMENTS,
    SEGMENT_REPORT,
    AuditReader,
    AuditRef,
    CaseTable,
    RunDetails,
    VersionInfo,
)
from segops.tracking.registry import RegisteredModel, download_checkpoint, is_model_uri
from segops.tracking.run import RunTracker, lineage_tags
from segops.tracking.store import default_artifact_location, use_tracking_uri

__all__ = [
    "AUDIT_EXPERIMENT",
    "CHECKPOINT_ARTIFACT",
    "EVALUATE_CHALLENGER",
    "EVALUATE_CHAMPION",
    "RUN_DOCUMENTS",
    "SEGMENT_REPORT",
    "AuditReader",
    "AuditRef",
    "CaseTable",
    "RegisteredModel",
    "RunDetails",
    "RunTracker",
    "SegmentationPyfunc",  # models logged before the package split pickled this path
    "VersionInfo",
    "default_artifact_location",
    "download_checkpoint",
    "is_model_uri",
    "lineage_tags",
    "use_tracking_uri",
]

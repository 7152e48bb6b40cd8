"""What Ray Train's controller unpickles (the progress callback), in a module of its own.

Ray Train's controller unpickles its callbacks, so it imports the module that defines them.
Defined in :mod:`segops.cluster.train` (torch, MONAI, the models), the callback cost
the controller a ~10 s import on 2 cores before any worker could start; here it costs Ray's own
imports only.

Ray Train records which checkpoints a run has (its "checkpoint manager snapshot", a JSON file
in the run's storage) by writing the file in place after every report, so a run killed during
that write (``kill -9``, a lost node) leaves it empty or cut short and Ray refuses to resume
(``CheckpointManagerInitializationError``). :class:`EpochFeed` therefore keeps an atomic copy of
the snapshot as it stood after each completed report, and :func:`repair_snapshot` puts that copy
back before a resume.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow.fs as pafs
import ray.train

log = logging.getLogger(__name__)

#: Ray Train's record of a run's checkpoints, in ``<storage>/<run name>/``.
SNAPSHOT_NAME = "checkpoint_manager_snapshot.json"
#: segops' copy of it after the last completed report, beside it.
SNAPSHOT_COPY_SUFFIX = ".last-good"


def _read_snapshot(filesystem: pafs.FileSystem, path: str) -> bytes | None:
    """The file's bytes when it holds a whole JSON object, else None (missing, empty, cut short)."""
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as f:
        data = f.read()
    try:
        return data if isinstance(json.loads(data), dict) else None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None


def _write_atomic(filesystem: pafs.FileSystem, path: str, data: bytes) -> None:
    """A whole file or none: written beside ``path`` then moved (a rename locally; an object store
    gets one complete upload either way)."""
    partial = path + ".partial"
    with filesystem.open_output_stream(partial) as f:
        f.write(data)
    filesystem.move(partial, path)


def keep_snapshot_copy(filesystem: pafs.FileSystem, snapshot: str) -> None:
    """Copy Ray Train's snapshot to ``snapshot + SNAPSHOT_COPY_SUFFIX`` if it is whole."""
    data = _read_snapshot(filesystem, snapshot)
    if data is not None:
        _write_atomic(filesystem, snapshot + SNAPSHOT_COPY_SUFFIX, data)


def repair_snapshot(filesystem: pafs.FileSystem, snapshot: str) -> bool:
    """Before ``fit()``: make Ray Train's snapshot readable again; True when there is one to resume.

    A whole snapshot is left alone. One cut short by an interruption is replaced by the copy
    from the last completed report (whose checkpoints still exist: Ray deletes old checkpoints
    only after writing the snapshot that drops them); with no copy (the run died writing its
    first report) it is moved aside to ``<name>.broken`` and training starts over.
    """
    if filesystem.get_file_info(snapshot).type == pafs.FileType.NotFound:
        return False
    if _read_snapshot(filesystem, snapshot) is not None:
        return True
    copy = _read_snapshot(filesystem, snapshot + SNAPSHOT_COPY_SUFFIX)
    if copy is not None:
        log.warning(
            "Ray Train's checkpoint record %s was cut short when the run was interrupted; "
            "resuming from the copy taken after the last completed epoch",
            snapshot,
        )
        _write_atomic(filesystem, snapshot, copy)
        return True
    log.warning(
        "Ray Train's checkpoint record %s was cut short when the run was interrupted during its "
        "first epoch, and no earlier copy exists; moved it to %s.broken and training starts over",
        snapshot,
        snapshot,
    )
    filesystem.move(snapshot, snapshot + ".broken")
    return False


class EpochFeed(ray.train.UserCallback):
    """Runs in Ray Train's controller: appends each epoch's metrics (rank 0's, already reduced
    over all ranks) to a JSON-lines file, which the driver tails for its progress bar, and keeps
    the copy of Ray Train's checkpoint snapshot that :func:`repair_snapshot` restores.

    Ray calls its own checkpoint manager first, so when this runs the snapshot of this report is
    written and the checkpoints it dropped are deleted.
    """

    def __init__(self, path: str, filesystem: pafs.FileSystem | None = None, snapshot: str | None = None):
        self.path = path
        self.filesystem = filesystem
        self.snapshot = snapshot

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if self.filesystem is not None and self.snapshot is not None:
            keep_snapshot_copy(self.filesystem, self.snapshot)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics[0]) + "\n")

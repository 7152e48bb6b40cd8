"""A training worker's rows of a materialised dataset, read from Ray's object store directly.

The train step's datasets are materialised before training (read by the driver, or by Ray Data
and materialised: :func:`segops.cluster.datasets.load_dataset`), so their Arrow blocks already sit
in the object store. Handing Ray Train the datasets (``TorchTrainer(datasets=...)``) makes each
worker pull its rows through a Ray Data execution every epoch: Ray Train's ``DatasetManager``
actor, a ``SplitCoordinator`` actor for ``streaming_split``, split tasks, and a new streaming
execution per epoch for the training rows and per worker for the validation rows, each a process
or a scheduling round on a machine where the whole epoch can take a fraction of a second. Here
the driver passes the blocks' object references instead (:class:`Blocks`) and each worker reads
the blocks it needs when it needs them: zero-copy from its node's store, pulled from another node
as Ray pulls any object, and not held between epochs, so the store may evict or spill them.

What each rank reads follows Ray's ``streaming_split(equal=True)``: ``rows // world`` training rows
each, so every rank runs the same number of DDP steps; the rows left over (fewer than ``world``)
rotate from epoch to epoch, so every row trains. Validation rows are not split: each rank keeps
the cases whose case-id hash falls to it (:func:`owns`), so every case is scored exactly once.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray.data.block import BlockAccessor

#: The pixel columns a training worker reads.
PIXEL_COLUMNS = ("image", "label")


@dataclass(frozen=True)
class Blocks:
    """A materialised dataset's rows as references to its Arrow blocks: block ``b`` holds the
    dataset's rows ``starts[b]`` to ``starts[b + 1]``, from row ``offsets[b]`` of the block on.

    Made on the driver (:meth:`of`) and sent to the workers inside Ray Train's loop config (the
    driver owns the blocks; the workers borrow them).
    """

    refs: tuple[ray.ObjectRef, ...]
    offsets: tuple[int, ...]
    starts: tuple[int, ...]  # len(refs) + 1: the last is the row count

    @classmethod
    def of(cls, ds: ray.data.Dataset) -> Blocks:
        """The blocks of ``ds`` (executed first unless it is materialised, as the train step's are)."""
        refs, offsets, starts = [], [], [0]
        for bundle in ds.iter_internal_ref_bundles():
            for entry, part in zip(bundle.blocks, bundle.slices):
                rows = part.num_rows if part is not None else entry.metadata.num_rows
                if rows is None:  # a block written without its row count
                    rows = ray.get(entry.ref).num_rows
                if rows:
                    refs.append(entry.ref)
                    offsets.append(part.start_offset if part is not None else 0)
                    starts.append(starts[-1] + rows)
        return cls(tuple(refs), tuple(offsets), tuple(starts))

    @property
    def num_rows(self) -> int:
        return self.starts[-1]

    def rows(self, indices: np.ndarray, columns: tuple[str, ...]) -> Iterator[tuple]:
        """The values of ``columns`` of each row in ``indices``, in that order, one tuple per row;
        tensors as NumPy arrays, as Ray Data's ``batch_format="numpy"`` gives them. Each run of
        consecutive rows of one block is one read and one conversion."""
        indices = np.asarray(indices, dtype=np.int64)
        blocks = np.searchsorted(self.starts, indices, side="right") - 1
        run = 0
        for i in range(1, len(indices) + 1):
            if i < len(indices) and blocks[i] == blocks[run] and indices[i] == indices[i - 1] + 1:
                continue
            b = int(blocks[run])
            first = self.offsets[b] + int(indices[run]) - self.starts[b]
            yield from _rows(ray.get(self.refs[b]), columns, first, i - run)
            run = i

    def indices_where(self, column: str, keep: Callable[[Any], bool]) -> np.ndarray:
        """Indices of the rows whose ``column`` value ``keep`` accepts (only that column is read)."""
        values = (
            v
            for ref, offset, start, end in zip(self.refs, self.offsets, self.starts, self.starts[1:])
            for v in ray.get(ref).column(column).slice(offset, end - start).to_pylist()
        )
        return np.array([i for i, value in enumerate(values) if keep(value)], dtype=np.int64)


def _rows(table: pa.Table, columns: tuple[str, ...], first: int, count: int) -> Iterator[tuple]:
    batch = BlockAccessor.for_block(table.select(list(columns)).slice(first, count)).to_batch_format("numpy")
    return zip(*(batch[c] for c in columns))


def train_rows(n: int, world: int, rank: int, epoch: int) -> np.ndarray:
    """Row indices rank ``rank`` of ``world`` trains on in ``epoch``: ``n // world`` consecutive rows
    (cyclically) of the dataset, the ``n % world`` left over starting ``epoch * (n % world)`` rows
    further on each epoch, so no row is left out every epoch."""
    share = n // max(world, 1)
    if share == 0:
        return np.zeros(0, dtype=np.int64)
    start = (epoch * (n - share * world)) % n
    return (start + rank * share + np.arange(share, dtype=np.int64)) % n


def owns(case_id: object, rank: int, world: int) -> bool:
    """Whether rank ``rank`` of ``world`` scores this validation case: each case goes to exactly one
    rank, chosen by a hash of its id, so the shares do not depend on block order."""
    return zlib.crc32(str(case_id).encode()) % max(world, 1) == rank

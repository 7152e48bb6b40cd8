"""Batch inference on a Ray Data actor pool: the model is loaded once per actor.

Each actor segments a batch, writes each case's outputs atomically, then records the batch's
result rows in a "part" file named after the batch's case ids. A case counts as done only
once its part is written, so a crash (of an actor, or of the whole driver) loses at most the
batches in flight; a rerun skips every case found in the parts and rewrites the rest, never
duplicating an output (same case → same path, written by rename).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import ray
import torch
from ray.data.expressions import col
from tqdm.auto import tqdm

from segops.cluster.runtime import INFER_MIN_RESERVE, cpu_reserve
from segops.config.schema import ActorPoolSpec
from segops.data.records import (
    DICOM_ID_COLUMNS,
    SPACING_COLUMNS,
    STATUS_FAILED,
    STATUS_OK,
    failure_fields,
    known_spacing,
)
from segops.engine.cases import CaseFailure, CaseResult, InferenceSettings, segment_cases
from segops.engine.checkpoint import load_checkpoint
from segops.outputs.atomic import atomic_write
from segops.outputs.case_outputs import OutputConfig, write_case_result
from segops.outputs.reports import RESULT_COLUMNS, RESULT_RECORD_COLUMNS, RESULT_SCHEMA, result_defaults
from segops.outputs.storage import is_uri, join, list_files, open_storage

log = logging.getLogger(__name__)

#: Decoded bytes a segment pipeline keeps in the object store per inference actor (at least
#: :data:`MIN_IN_FLIGHT`) unless ``cluster.data_memory_gb`` sets a budget: a few batches
#: each, so actors never wait on decode. Ray Data's own default is a share of the whole object
#: store (0.87 GiB on the 2-CPU, 24 GiB machine; more on bigger nodes): decode, ten times
#: faster than inference, runs ahead until that share is full, so a run's peak memory grew
#: with the archive's length (``benchmarks/segment.py``: 1.2× from 600 to 6,000 slices with
#: this bound's absence, 1.07× with it, at the same images/s).
IN_FLIGHT_PER_ACTOR = 2**28  # 256 MiB
MIN_IN_FLIGHT = 2**29  # 512 MiB
#: Rows of the largest size the budget holds per actor and batch: the batch an actor works on, the
#: next one waiting, and one more being decoded. 256 MiB holds a batch of 8 CT slices many times
#: over, but not two 12-megapixel photos (156 MB decoded each): with the fixed budget the read
#: task waited on backpressure between photos and the actors idled (``segment_actor_utilisation``
#: 0.21; 10 photos of 3000x4000 px took 100 s to segment, 34 s with room for the batches).
ROWS_AHEAD_PER_BATCH = 2


@dataclass(frozen=True)
class PoolSize:
    """Resolved actor-pool shape."""

    min_actors: int
    max_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    torch_threads: int
    memory_per_actor: int | None = None  # bytes asked of Ray (see segops.engine.memory); None: Ray's default
    row_bytes: int = 0  # the largest decoded row (image + label); 0: not known

    @property
    def read_cpus(self) -> float:
        """CPUs each read / decode task of the pipeline asks for.

        Ray Data spreads actors over nodes. On small nodes, where actors take a fraction of a
        CPU, what an actor leaves free on its node may be less than a whole CPU (two 0.5-CPU
        actors on two 1-CPU nodes leave 0.5 on each; 0.75-CPU actors leave 0.25), and read
        tasks asking Ray's default 1 CPU could never be placed: the actors waited for ever for
        their first batch. There, read tasks ask 0.25 CPU, which fits beside any such actor;
        decoding is a small share of the work (about 1 ms of a U-Net's 20 ms per slice).
        Whole-CPU actors (the default from 5 CPUs in all) leave whole CPUs, and reads ask 1.
        """
        return 1.0 if self.cpus_per_actor >= 1 else 0.25


def size_actor_pool(spec: ActorPoolSpec, resources: dict[str, float]) -> PoolSize:
    """Size the pool from the cluster, leaving CPU for the read and decode tasks.

    Two 1-CPU actors on a 2-CPU node hold every CPU and the read stage is never scheduled
    (a deadlock). So by default actors get fractional CPUs on small nodes and the pool keeps
    :func:`segops.cluster.runtime.cpu_reserve` of the CPUs free for reading (at least
    :data:`~segops.cluster.runtime.INFER_MIN_RESERVE`).
    """
    cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    reserve = cpu_reserve(cpus, INFER_MIN_RESERVE)
    if gpus >= 1:
        per_cpu = spec.cpus_per_actor or 1.0
        n = int(gpus)
        return PoolSize(spec.min_actors or 1, spec.max_actors or n, per_cpu, 1.0, max(1, int(per_cpu)))
    per_cpu = spec.cpus_per_actor or (1.0 if cpus - reserve >= 4 else 0.5)
    fit = max(1, math.floor((cpus - reserve) / per_cpu))
    max_actors = spec.max_actors or min(fit, max(1, int(cpus)))
    min_actors = min(spec.min_actors or 1, max_actors)
    return PoolSize(min_actors, max_actors, per_cpu, 0.0, max(1, int(per_cpu)))


class _Segmenter:
    """Actor: holds one model; called once per batch of records.

    It only batches: each case's prediction, class map and scores come from :mod:`segops.engine.cases`,
    its files from the :mod:`segops.outputs` writers; the actor records the batch's part (for resume).
    """

    def __init__(
        self,
        checkpoint_dir: str,
        outputs: OutputConfig,
        parts_dir: str,
        settings: InferenceSettings,
        torch_threads: int = 1,
    ):
        torch.set_num_threads(torch_threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.loaded = load_checkpoint(checkpoint_dir, self.device)
        self.outputs, self.parts_dir, self.settings = outputs, parts_dir, settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        n = len(batch["case_id"])
        # volume records carry their slices; DICOM identifiers name outputs (older datasets lack them)
        extra = [k for k in ("affine", "source_uris", *DICOM_ID_COLUMNS) if k in batch]
        defaults = result_defaults(self.outputs.model_digest)
        rows = [{k: batch[k][i] for k in (*RESULT_RECORD_COLUMNS, *extra)} | defaults for i in range(n)]
        ok = [i for i in range(n) if rows[i]["status"] == STATUS_OK]
        labels = [batch["label"][i] if bool(rows[i]["has_label"]) else None for i in ok]
        images, spacings = [batch["image"][i] for i in ok], [case_spacing(batch, i) for i in ok]
        results = segment_cases(self.loaded, images, labels, self.settings, self.device, spacings)
        for i, result in zip(ok, results):
            self._write_case(rows[i], result)
        table = pd.DataFrame([{k: row[k] for k in RESULT_COLUMNS} for row in rows], columns=list(RESULT_COLUMNS))
        write_part(self.parts_dir, table, RESULT_SCHEMA)
        # the driver counts cases and actor time; the rows themselves are read back from the parts
        # (a case's object rows alone are tens of kB of JSON: no need to carry them through Ray)
        seconds = (time.perf_counter() - start) / max(n, 1)
        return {"case_id": table["case_id"].to_numpy(), "infer_seconds": np.full(n, seconds)}

    def _write_case(self, row: dict[str, Any], result: CaseResult | CaseFailure) -> None:
        """Write a case's outputs and fill its row; a failure fails the case, not the batch."""
        if isinstance(result, CaseFailure):
            row |= failure_fields(STATUS_FAILED, result.stage, result.error)
            return
        try:
            row |= write_case_result(self.outputs, row, result)
        except Exception as exc:  # e.g. a SEG highdicom refuses: the case is failed, the batch goes on
            row |= failure_fields(STATUS_FAILED, "write", exc)
            return
        row |= result.row_fields()


def case_spacing(batch: dict[str, np.ndarray], i: int) -> tuple[float, ...] | None:
    """Row ``i``'s spacing in mm in its image's axis order ((Z, H, W) of a volume record, (H, W)
    else); None when the source gave none (photos; datasets of an older segops: unknown)."""
    rows_cols = known_spacing({name: batch[name][i] for name in SPACING_COLUMNS if name in batch})
    if rows_cols is None:
        return None
    if np.ndim(batch["image"][i]) == 4:  # (C, Z, H, W)
        return (float(batch["spacing_z"][i]) if "spacing_z" in batch else float("nan"), *rows_cols)
    return rows_cols


def in_flight_budget(pool: PoolSize, batch_size: int, store_bytes: float | None = None) -> int:
    """Decoded bytes a segment pipeline keeps in the object store: :data:`IN_FLIGHT_PER_ACTOR` per
    actor (at least :data:`MIN_IN_FLIGHT`), or, where the rows are large, room for each actor's
    batch, the next one and a row being decoded (:data:`ROWS_AHEAD_PER_BATCH`) at the largest row
    size, capped at half the object store (``store_bytes``) so large rows spill rather than fill it.
    Memory stays bounded by the batches, not by the archive's length."""
    fixed = max(MIN_IN_FLIGHT, IN_FLIGHT_PER_ACTOR * pool.max_actors)
    rows = (ROWS_AHEAD_PER_BATCH * batch_size + 1) * pool.max_actors * pool.row_bytes
    if store_bytes:
        rows = min(rows, int(store_bytes // 2))
    return max(fixed, rows)


def bound_in_flight(ds: ray.data.Dataset, pool: PoolSize, batch_size: int = 1) -> None:
    """Give ``ds`` (its own copy of the DataContext) the :func:`in_flight_budget`, unless the driver
    set one (``cluster.data_memory_gb``)."""
    options = ds.context.execution_options
    if math.isinf(options.resource_limits.object_store_memory):
        budget = in_flight_budget(pool, batch_size, ray.cluster_resources().get("object_store_memory"))
        options.resource_limits = options.resource_limits.copy(object_store_memory=budget)
        log.debug("segment pipeline: at most %.2f GiB of decoded blocks in flight", budget / 2**30)


def write_part(parts_dir: str | Path, table: pd.DataFrame, schema: pa.Schema | None = None) -> Path | str:
    """Atomically write a batch's result rows, as ``schema`` when given (the actor gives
    :data:`~segops.outputs.reports.RESULT_SCHEMA`); the name depends only on the batch's cases."""
    digest = hashlib.sha1("\n".join(sorted(map(str, table["case_id"]))).encode()).hexdigest()[:20]
    return atomic_write(
        join(parts_dir, f"part-{digest}.parquet"), lambda tmp: table.to_parquet(tmp, index=False, schema=schema)
    )


#: Result columns too large to hold for a whole archive at once: each case's measured objects as
#: JSON (tens of kB per case for an untrained model's specks; 0.7 GB for 6,000 slices). Read part by
#: part with :func:`iter_parts` instead.
HEAVY_COLUMNS = ("components",)


def read_parts(
    parts_dir: str | Path, columns: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> pd.DataFrame:
    """Every result row recorded so far, one per case (a case re-done after a crash counts once):
    its ``columns`` (default: all) but those in ``exclude``.

    ``parts_dir``: a folder or a URI (:mod:`segops.outputs.storage`).
    """
    files = list_files(parts_dir, prefix="part-", suffix=".parquet")
    if not files:
        return pd.DataFrame(columns=[c for c in (columns or RESULT_COLUMNS) if c not in exclude])
    dataset = _parts_dataset(parts_dir, files)
    columns = [c for c in (columns or dataset.schema.names) if c not in exclude and c in dataset.schema.names]
    return dataset.to_table(columns=columns).to_pandas().drop_duplicates("case_id", keep="last").reset_index(drop=True)


def iter_parts(parts_dir: str | Path, columns: Sequence[str], case_ids: Iterable[str]) -> Iterator[pd.DataFrame]:
    """``columns`` of the result rows of ``case_ids``, one part file at a time, each case once (from
    the part :func:`read_parts` keeps it from), in part order: what a large run's heavy columns
    (:data:`HEAVY_COLUMNS`) are read with, so that only one part's rows are in memory."""
    files = list_files(parts_dir, prefix="part-", suffix=".parquet")
    if not files:
        return
    dataset = _parts_dataset(parts_dir, files)
    wanted, owner = set(map(str, case_ids)), {}
    for index, fragment in enumerate(dataset.get_fragments()):
        for case_id in fragment.to_table(columns=["case_id"]).column("case_id").to_pylist():
            owner[case_id] = index  # the last part holding a case, as read_parts' keep="last"
    names = [c for c in columns if c in dataset.schema.names]
    for index, fragment in enumerate(dataset.get_fragments()):
        part = fragment.to_table(columns=names).to_pandas().drop_duplicates("case_id", keep="last")
        keep = [c in wanted and owner.get(c) == index for c in part["case_id"]]
        if any(keep):
            yield part[keep].reset_index(drop=True)


def _parts_dataset(parts_dir: str | Path, files: list[str]) -> pads.Dataset:
    if is_uri(parts_dir):
        fs, _ = open_storage(str(parts_dir))
        return pads.dataset([open_storage(f)[1] for f in files], format="parquet", filesystem=fs)
    return pads.dataset(files, format="parquet")


@dataclass(frozen=True)
class SegmentRun:
    """What one call of :func:`segment_dataset` did."""

    results: pd.DataFrame  # all rows, this call's and earlier attempts'
    processed: int  # rows processed by this call
    skipped: int  # rows already done before this call
    seconds: float
    actor_seconds: float  # summed time actors spent on batches


def segment_dataset(
    ds: ray.data.Dataset,
    checkpoint_dir: Path,
    outputs: OutputConfig,
    parts_dir: str | Path,
    pool: PoolSize,
    batch_size: int,
    settings: InferenceSettings,
    total: int | None = None,
) -> SegmentRun:
    """Segment every row of ``ds`` not already recorded in ``parts_dir``.

    ``settings`` cross to the actors as they are (frozen, picklable).
    """
    done = read_parts(parts_dir, columns=["case_id"])
    if len(done):
        log.info("resuming: %d case(s) already segmented, skipping them", len(done))
        ds = ds.filter(expr=~col("case_id").is_in(done["case_id"].tolist()), num_cpus=pool.read_cpus)
    results = ds.map_batches(
        _Segmenter,
        fn_constructor_args=(str(checkpoint_dir), outputs, str(parts_dir), settings, pool.torch_threads),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.gpus_per_actor or None,
        memory=pool.memory_per_actor,
    )  # Ray Data's actor pools restart dead actors and retry their batches (max_restarts=-1)
    bound_in_flight(results, pool, batch_size)
    processed, actor_seconds = 0, 0.0
    start = time.perf_counter()
    remaining = None if total is None else max(total - len(done), 0)
    with tqdm(total=remaining, desc="segment", unit="img", dynamic_ncols=True, mininterval=1.0) as bar:
        for batch in results.iter_batches(batch_format="pandas", batch_size=None):
            processed += len(batch)
            actor_seconds += float(batch["infer_seconds"].sum())
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    return SegmentRun(read_parts(parts_dir, exclude=HEAVY_COLUMNS), processed, len(done), seconds, actor_seconds)

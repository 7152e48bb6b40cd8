"""Resource sizing is pure arithmetic; the 2-CPU cases are the ones that deadlock if wrong."""

import pytest

from segops.cluster.infer import size_actor_pool
from segops.cluster.scaling import resolve_use_gpu, worker_cpus
from segops.config.schema import ActorPoolSpec
from segops.errors import StepError


def test_two_cpu_node_leaves_a_cpu_for_reading() -> None:
    pool = size_actor_pool(ActorPoolSpec(), {"CPU": 2.0})
    assert pool.cpus_per_actor * pool.max_actors <= 1.0
    assert pool.max_actors == 2 and pool.gpus_per_actor == 0
    assert pool.read_cpus == 0.25  # fits beside a fractional actor on any node
    assert worker_cpus(2, None, {"CPU": 2.0}) * 2 <= 1.0


def test_big_node_and_gpus() -> None:
    pool = size_actor_pool(ActorPoolSpec(), {"CPU": 32.0})
    assert pool.cpus_per_actor == 1.0 and pool.max_actors == 28 and pool.read_cpus == 1.0
    gpu = size_actor_pool(ActorPoolSpec(), {"CPU": 16.0, "GPU": 4.0})
    assert gpu.gpus_per_actor == 1.0 and gpu.max_actors == 4
    assert worker_cpus(2, None, {"CPU": 16.0}) == 7.0
    assert worker_cpus(2, 3.0, {"CPU": 16.0}) == 3.0


def test_explicit_pool_settings_win() -> None:
    pool = size_actor_pool(ActorPoolSpec(min_actors=2, max_actors=3, cpus_per_actor=0.25), {"CPU": 2.0})
    assert (pool.min_actors, pool.max_actors, pool.cpus_per_actor) == (2, 3, 0.25)


@pytest.mark.parametrize(
    ("flag", "resources", "expected"),
    [
        ("auto", {"CPU": 2.0}, False),
        ("auto", {"GPU": 1.0}, True),
        (False, {"GPU": 8.0}, False),
        (True, {}, True),
    ],
)
def test_use_gpu_resolution(flag, resources, expected) -> None:
    assert resolve_use_gpu(flag, resources) is expected


@pytest.mark.parametrize(
    ("scaling", "resources", "expected"),
    [
        ({}, {"CPU": 2.0}, (False, 2)),  # CPUs: the default two workers
        ({}, {"CPU": 16.0, "GPU": 1.0}, (True, 1)),  # one GPU: one worker, not two waiting for a second GPU
        ({}, {"CPU": 64.0, "GPU": 4.0}, (True, 4)),  # one worker per GPU
        ({"workers": 2}, {"CPU": 64.0, "GPU": 4.0}, (True, 2)),
        ({"workers": 2}, {"CPU": 16.0, "GPU": 1.0}, (True, 1)),  # auto: the quickstarts' two CPU workers, lowered
        ({"use_gpu": False}, {"CPU": 16.0, "GPU": 1.0}, (False, 2)),  # CPU training on a GPU machine
    ],
)
def test_gpu_training_runs_one_worker_per_gpu(scaling, resources, expected) -> None:
    from segops.cluster.scaling import resolve_scaling
    from segops.config.schema import ScalingSpec

    resolved = resolve_scaling(ScalingSpec(**scaling), resources)
    assert (resolved.use_gpu, resolved.workers) == expected
    assert resolve_scaling(resolved, resources) == resolved  # the driver and train_model both resolve it


@pytest.mark.parametrize(
    ("scaling", "resources", "message"),
    [
        (
            {"workers": 2, "use_gpu": True},
            {"CPU": 16.0, "GPU": 1.0},
            r"2 training worker\(s\) with a GPU each.*has 1 GPU.*at most 1",
        ),
        ({"use_gpu": True}, {"CPU": 16.0}, r"1 training worker\(s\) with a GPU each.*has 0 GPU.*use_gpu: auto"),
    ],
)
def test_workers_the_gpus_cannot_hold_are_refused_before_any_starts(scaling, resources, message) -> None:
    from segops.cluster.scaling import resolve_scaling
    from segops.config.schema import ScalingSpec

    with pytest.raises(StepError, match=message):
        resolve_scaling(ScalingSpec(**scaling), resources)


def test_gpu_workers_reduce_cpu_tensors_through_gloo_and_gradients_through_nccl() -> None:
    """The loop all-reduces CPU tensors (loss and Dice sums) and gathers objects: a group of NCCL
    alone has no CPU backend. torch parses the backend string as Ray Train passes it on."""
    import torch.distributed as dist

    from segops.cluster.scaling import GPU_BACKEND, torch_config

    assert torch_config(False).backend is None  # Ray's default on CPUs: gloo
    assert torch_config(True).backend == GPU_BACKEND
    parsed = dist.distributed_c10d.BackendConfig(dist.Backend(GPU_BACKEND)).get_device_backend_map()
    assert parsed == {"cpu": "gloo", "cuda": "nccl"}


def test_one_cpu_reserve_rule_with_each_callers_minimum() -> None:
    from segops.cluster.runtime import INFER_MIN_RESERVE, TRAIN_MIN_RESERVE, cpu_reserve

    assert (TRAIN_MIN_RESERVE, INFER_MIN_RESERVE) == (1.0, 0.5)
    assert [cpu_reserve(c, TRAIN_MIN_RESERVE) for c in (2.0, 10.0, 32.0)] == [1.0, 1.0, 3.2]
    assert [cpu_reserve(c, INFER_MIN_RESERVE) for c in (2.0, 5.0, 32.0)] == [0.5, 0.5, 3.2]
    assert worker_cpus(1, None, {"CPU": 32.0}) == 28.0  # floor(32 - 3.2)
    assert worker_cpus(2, None, {"CPU": 2.0}) == 0.5  # (2 - 1) / 2


def test_training_workers_ask_for_measured_memory_and_refuse_what_the_cluster_lacks() -> None:
    from segops.cluster.scaling import worker_memory
    from segops.config.schema import TrainStep
    from segops.engine.memory import ACTOR_BASE_BYTES

    model = {"arch": "unet", "channels": [8, 16], "strides": [2], "num_res_units": 0}
    step = TrainStep.model_validate(
        {"step": "train", "model": model, "preprocess": {"patch_size": [64, 64]}, "batch_size": 2}
    )
    need = worker_memory(step, {"CPU": 2.0, "memory": 64 * 2**30})
    assert need > ACTOR_BASE_BYTES
    with pytest.raises(StepError, match=r"2 training worker\(s\) would need .* GiB each .*lower train.batch_size"):
        worker_memory(step, {"CPU": 2.0, "memory": 1.5 * need})  # one fits, both do not


def test_the_in_flight_budget_holds_the_actors_batches_of_large_rows() -> None:
    from segops.cluster.infer import IN_FLIGHT_PER_ACTOR, MIN_IN_FLIGHT, PoolSize, in_flight_budget

    slices = PoolSize(1, 2, 0.5, 0.0, 1, row_bytes=4 * 4 * 512 * 512)  # 4 MB CT slices: the fixed budget holds plenty
    assert in_flight_budget(slices, batch_size=8) == max(MIN_IN_FLIGHT, 2 * IN_FLIGHT_PER_ACTOR)
    photos = PoolSize(1, 2, 0.5, 0.0, 1, row_bytes=192_000_000)  # 12-megapixel photos
    # per actor: the batch in hand, the next one and one being decoded
    assert in_flight_budget(photos, batch_size=2) == (2 * 2 + 1) * 2 * 192_000_000
    assert in_flight_budget(photos, batch_size=2, store_bytes=0.8e9) == max(MIN_IN_FLIGHT, 2 * IN_FLIGHT_PER_ACTOR)
    assert in_flight_budget(photos, batch_size=2, store_bytes=3e9) == 1_500_000_000  # half the object store
    assert in_flight_budget(PoolSize(1, 2, 0.5, 0.0, 1), batch_size=8) == max(MIN_IN_FLIGHT, 2 * IN_FLIGHT_PER_ACTOR)


@pytest.mark.parametrize("name", ["quickstart", "quickstart-3d", "instances-quickstart", "isbi2012"])
def test_the_shipped_workflows_train_on_a_one_gpu_machine(name: str) -> None:
    from pathlib import Path

    import yaml

    from segops.cluster.scaling import resolve_scaling
    from segops.config.schema import TrainStep

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "workflows" / f"{name}.yaml").read_text())
    (train,) = [TrainStep.model_validate(s) for s in spec["steps"] if s["step"] == "train"]  # its data need not exist
    assert train.scaling.workers == 2  # the CPU setting the file names
    assert resolve_scaling(train.scaling, {"CPU": 16.0, "GPU": 1.0}).workers == 1

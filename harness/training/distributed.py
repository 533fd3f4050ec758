"""Data-parallel work under `accelerate launch`: which process this is, and where the processes meet.

`accelerate launch` starts one process per device (torchrun underneath) with RANK / WORLD_SIZE in the
environment (MPI launchers use their own names). Every process trains each run (the Trainer joins them into
one process group: NCCL on GPUs, gloo on CPUs), then every process evaluates its share of each task's items:
`harness.evaluation.cache.CachedLM` gives lm-eval this process's rank and the world size, lm-eval splits the
requests by rank and gathers the per-item results into the main process. Only the main process writes the
run store.

The hand-over from training to evaluation keeps the process group: the main process writes the trained
model (`run_trainer` and the pipeline's `barrier()` hold the others until it is on disk), then every process
loads it. Evaluation meets through `barrier`, `broadcast`, `gather_object` and `all_gather` here, on a gloo
group without a practical timeout (lm-eval's choice for its own group): a process done with its share waits
for the others as long as theirs takes, where the Trainer's group would time out after 30 minutes.
`evaluating()` hides a DeepSpeed / FSDP launch from the evaluator, so that every process loads the whole
model.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

# The launchers' names for the global rank and world size (torchrun first, then MPI implementations).
_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

# The environment of a DeepSpeed / FSDP launch, with which the evaluator's `Accelerator` (and, through the
# DeepSpeed config it registers, `from_pretrained`) would shard the model it loads.
_SHARDING_VARS = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")
_SHARDING_PREFIXES = ("ACCELERATE_DEEPSPEED_", "FSDP_")

# How long a process waits for the others at an evaluation meeting: no practical limit, as lm-eval's HFLM.
_TIMEOUT = timedelta(weeks=52)
_group: Any = None


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def world_size() -> int:
    """How many processes work together (1 outside `accelerate launch` / torchrun / mpirun)."""
    return _env_int(_SIZE_VARS, 1)


def rank() -> int:
    """This process's global rank (0 outside a launcher)."""
    return _env_int(_RANK_VARS, 0)


def is_main() -> bool:
    """The process that writes the run store."""
    return rank() == 0


def _meeting_group():
    """The gloo group of every process of the launch, for evaluation's meetings; the launch's process group
    is joined first where nothing has joined it (an evaluation without training)."""
    global _group
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState(timeout=_TIMEOUT)  # accelerate's reading of the launcher's environment
    if _group is None:
        _group = dist.new_group(backend="gloo", timeout=_TIMEOUT)
    return _group


def barrier() -> None:
    """Wait until every process of the launch is here (returns at once outside a launch)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier(group=_meeting_group())


def broadcast(value: Any) -> Any:
    """The main process's `value` (any picklable object), in every process."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=_meeting_group())
    return box[0]


def gather_object(value: Any, dst: int = 0) -> list[Any] | None:
    """Every process's `value`, in rank order, in process `dst`; None in the others."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    out = [None] * world_size() if rank() == dst else None
    dist.gather_object(value, out, dst=dst, group=_meeting_group())
    return out


def all_gather(tensor):
    """Every process's tensor (of one shape), concatenated in rank order, on the CPU, in every process; a
    scalar counts as a tensor of one element (as accelerate's `gather`)."""
    if world_size() == 1:
        return tensor
    import torch
    import torch.distributed as dist

    mine = tensor.detach().cpu().reshape(-1) if tensor.dim() == 0 else tensor.detach().cpu()
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(parts, mine, group=_meeting_group())
    return torch.cat(parts)


def _reset_accelerate() -> None:
    """Forget accelerate's state of the last `Accelerator` (its DeepSpeed / FSDP plugin, mixed precision),
    keeping the process group, so that the next one (the evaluator's, the next run's Trainer's) starts
    afresh."""
    if "accelerate.state" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    if "transformers.integrations.deepspeed" in sys.modules:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


@contextmanager
def evaluating() -> Iterator[None]:
    """Evaluation's surroundings in every process: the memory of training released first; under a launch,
    accelerate's training state forgotten and a DeepSpeed / FSDP launch's environment hidden (each process
    evaluates with the whole model), both restored afterwards for the next run's training."""
    import torch

    launched = world_size() > 1
    hidden = {k: v for k, v in os.environ.items() if k in _SHARDING_VARS or k.startswith(_SHARDING_PREFIXES)}
    for name in hidden:
        del os.environ[name]
    if launched or hidden:
        _reset_accelerate()
    gc.collect()  # the trainers' device memory (optimizer states, shards) before a model loads
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        yield
    finally:
        os.environ.update(hidden)
        if launched or hidden:
            _reset_accelerate()

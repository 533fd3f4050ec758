"""Data-parallel training under `accelerate launch`: which process this is, and the hand-over from training
(every process) to evaluation (the main process alone).

`accelerate launch` starts one process per device (torchrun underneath) with RANK / WORLD_SIZE in the
environment (MPI launchers use their own names); the Trainer joins them into one process group (NCCL on
GPUs, gloo on CPUs). Every process trains; only the main process writes the run store. After training the
other processes exit and the main process leaves the group, so that evaluation (lm-eval's HFLM would
otherwise shard its requests over processes that are gone) and the run's SQLite cache see one process.
"""

from __future__ import annotations

import gc
import logging
import os

log = logging.getLogger(__name__)

# The launchers' names for the global rank and world size (torchrun first, then MPI implementations).
_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

# What tells a process it is one of several: once the main process is alone, these must go, or the next
# `Accelerator()` (lm-eval creates one) would wait for the others to join a new group.
_LAUNCH_VARS = (
    *_RANK_VARS, *_SIZE_VARS, "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP",
)  # fmt: skip


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def world_size() -> int:
    """How many processes train together (1 outside `accelerate launch` / torchrun / mpirun)."""
    return _env_int(_SIZE_VARS, 1)


def rank() -> int:
    """This process's global rank (0 outside a launcher)."""
    return _env_int(_RANK_VARS, 0)


def is_main() -> bool:
    """The process that writes the run store and evaluates."""
    return rank() == 0


def _group_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def leave_group() -> bool:
    """End data-parallel work: every process waits for the others, the process group is destroyed and
    this process forgets it was launched as one of several. True in the main process (it goes on alone),
    False in the others (they should exit)."""
    main = is_main()
    if _group_initialized():
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    for name in _LAUNCH_VARS:
        os.environ.pop(name, None)
    for name in [n for n in os.environ if n.startswith(("ACCELERATE_DEEPSPEED_", "FSDP_"))]:
        os.environ.pop(name)
    if main:
        import torch

        gc.collect()  # the trainers' device memory (optimizer states, shards) before evaluation loads a model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("training done on every process; evaluating in the main process alone")
    return main

"""Where the loggers of the `report_to` training setting (TensorBoard, wandb) write, and how a method sends
them its own per-step numbers. train_log.jsonl is written regardless (`harness.training.trainer`)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from harness.plumbing.errors import HarnessError
from harness.training.settings import TrainContext

TENSORBOARD_DIR = "tensorboard"  # <run>/tensorboard/: `tensorboard --logdir runs/` shows every run


@contextmanager
def wandb_run(ctx: TrainContext, main: bool = True):
    """While training with `report_to=wandb`, one wandb run per training run: started here (on the main
    process) with its files under the run folder (`<run>/wandb/`, unless WANDB_DIR names another), named by
    the run id, in the project `cc-harness` (unless WANDB_PROJECT names another), and finished afterwards.
    The Trainer's WandbCallback then logs into it. Started here because wandb keeps the folder of its first
    run in a process; WANDB_MODE=offline and wandb's other variables are its own."""
    wandb = sys.modules.get("wandb")  # imported by the Trainer's WandbCallback
    if "wandb" not in ctx.settings.integrations or wandb is None or not main:
        yield
        return
    try:
        wandb.init(dir=None if os.environ.get("WANDB_DIR") else str(ctx.run_dir), name=ctx.run_dir.name,
                   project=os.environ.get("WANDB_PROJECT") or "cc-harness")  # fmt: skip
    except Exception as e:  # wandb raises its own kinds (no login, no network, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"--set report_to={ctx.settings.report_to}: wandb could not start a run ({first}); "
                           "log in with `wandb login`, or set WANDB_MODE=offline") from None  # fmt: skip
    try:
        yield
    finally:
        wandb.finish()


def place_loggers(trainer, run_dir: Path, resumed_step: int) -> None:
    """TensorBoard writes into `<run>/tensorboard/` (the Trainer's default folder is under the checkpoints,
    which are deleted after training) unless TENSORBOARD_LOGGING_DIR names another. Like train_log.jsonl, the
    steps logged after the checkpoint a run resumes from (all, when training starts over) are hidden: they
    are logged again."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.tb_writer is None:
            if not os.environ.get("TENSORBOARD_LOGGING_DIR"):  # transformers' variable, when set, wins
                callback.logging_dir = str(run_dir / TENSORBOARD_DIR)
            if resumed_step or Path(callback.logging_dir).is_dir():
                from torch.utils.tensorboard import SummaryWriter

                callback.tb_writer = SummaryWriter(log_dir=callback.logging_dir, purge_step=resumed_step + 1)


def report_scalars(trainer, args, state, control, scalars: dict[str, float]) -> None:
    """Send a method's own per-step numbers to the loggers of `report_to` (TensorBoard, wandb) at the
    current step, as the Trainer's `log` would, but not to train_log.jsonl (the method writes its own
    record there) nor to the progress bar. Call it on every process; the loggers write from the main one."""
    from transformers.integrations import get_reporting_integration_callbacks

    kinds = tuple(get_reporting_integration_callbacks(args.report_to))
    for callback in trainer.callback_handler.callbacks:
        if kinds and isinstance(callback, kinds):
            callback.on_log(args, state, control, model=trainer.model, logs=dict(scalars))

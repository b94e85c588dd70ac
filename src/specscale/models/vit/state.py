"""What a ViT training run carries between steps and across a preemption: the learning-rate
schedule, ``TrainState`` (everything a checkpoint must hold to resume exactly), the counters of
one process's run, and the exception a stopped run raises."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch

from specscale.core.preemption import Preempted


def lr_factor(step: int, total: int, warmup: int, lr: float, lr_min: float) -> float:
    """Multiplier of the peak lr at ``step``: linear warmup over ``warmup`` steps, then cosine to
    lr_min at ``total`` (the run's real number of steps)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return (lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * progress))) / lr


class TrainingInterrupted(Preempted):
    """Training stopped early on request (signal or stop hook) after saving a checkpoint."""


@dataclass
class TrainState:
    """Where a training run stands: what a checkpoint carries besides the weights, optimiser,
    scheduler and RNG states (one checkpoint key per field)."""

    step: int = 0  # optimiser steps taken, over all epochs
    epoch: int = 0  # epochs completed (the index of the current one)
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    seen: int = 0  # spectra trained on, over all epochs
    best_r2: float = -math.inf  # best validation R^2 so far
    best_epoch: int = -1  # epoch of best_r2; -1 before the first validation
    best_state: dict[str, torch.Tensor] | None = None  # CPU copy of the weights at best_epoch
    bad_epochs: int = 0  # epochs since best_r2 last improved (early stopping)
    history: list[dict] = field(default_factory=list)  # one record per finished epoch
    epoch_loss: float = 0.0  # sum of the current epoch's step losses collected so far
    epoch_batches: int = 0  # number of step losses in epoch_loss
    train_seconds: float = 0.0  # wall-clock time in the training loop (s), over all runs
    done: bool = False  # training finished; info holds its summary
    info: dict | None = None  # the finished run's summary (what fit returns)

    def to_checkpoint(self) -> dict:
        """The fields as checkpoint keys (values shared, not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_checkpoint(cls, ck: dict) -> TrainState:
        """The state saved in checkpoint ``ck`` (a field missing there is None)."""
        return cls(**{f.name: ck.get(f.name) for f in fields(cls)})

    def add_losses(self, losses: list[torch.Tensor]) -> float:
        """Add step losses (device scalars) to the epoch's sum; returns their mean. Synchronises
        with the device. The sum adds one step at a time in float64, so it does not depend on how
        the steps were grouped into calls (a run resumed mid-window sums exactly as the original)."""
        window = torch.stack(losses).float().cpu().numpy()
        for loss in window.tolist():
            self.epoch_loss += loss
        self.epoch_batches += window.size
        return float(window.mean())


@dataclass
class RunCounters:
    """This process's share of the run, for the throughput summary (not checkpointed)."""

    steps: int = 0  # optimiser steps taken by this process
    epochs: int = 0  # epochs finished by this process
    wait_seconds: float = 0.0  # time waiting for the loader's next batch (s)
    loop_seconds: float = 0.0  # time in the training loop (s)

"""The resumable training loop of the ViT: epochs of steps with fresh noise, validation after
each epoch, an atomic checkpoint after each, early stopping, and a stop signal honoured at the end
of a step (see :mod:`specscale.core.preemption`). ``ViTModel`` (``models.vit.trainer``) supplies the
setup, the step, prediction and checkpoints the loop calls; the pre-training trainer reuses it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from specscale.core.preemption import deferred_stops, stop_requested
from specscale.core.vocab import LOGG, Cell
from specscale.data.sources import Source
from specscale.models.metrics import r2_score
from specscale.models.vit.state import RunCounters, TrainingInterrupted, TrainState

log = logging.getLogger(__name__)


class TrainingLoop:
    """The loop over epochs of a ViT model (a base class of ``ViTModel``): it calls the model's
    ``build``, ``load_checkpoint``/``save_checkpoint``, ``train_step``, ``observed_inputs``,
    ``predict_inputs`` and ``close``."""

    def fit(self, source: Source, cell: Cell, workdir: Path) -> dict:
        """Train on ``cell``, resuming from ``workdir/checkpoint.pt`` when there is one; returns the
        run's summary (epochs, steps, best validation R^2, throughput, history, resumed_from_step).
        Raises TrainingInterrupted, after checkpointing, when stopped by a signal or a stop hook.

        Phases and what a SIGTERM/SIGUSR1 in each leaves (``core.preemption``): setup (build,
        resume, validation inputs) raises Preempted at once, the last checkpoint stands; the
        training loop and ``_finish`` defer it to the end of the step, checkpoint, close the
        loader's workers and raise TrainingInterrupted; after the last epoch the finished state is
        checkpointed first, so the rerun goes straight to prediction."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        ckpt = workdir / "checkpoint.pt"
        self.build(source, cell)
        try:
            state, resumed_from = TrainState(), None
            if ckpt.exists():
                state = self.load_checkpoint(ckpt)
                resumed_from = state.step
                log.info("resuming %s from %s: epoch %d, step %d", self.name, ckpt, state.epoch, state.step)
            if state.done:
                self.net.load_state_dict(state.best_state)
                return {**state.info, "resumed_from_step": resumed_from}
            val_x = torch.cat(
                [self.observed_inputs(o) for o in source.iter_observed("val", self.mag, cell.noise, None)]
            )
            val_y = source.labels("val")[:, LOGG].astype(np.float64)
            if self.dev.type == "cuda":
                val_x = val_x.pin_memory()
            run = RunCounters()
            with deferred_stops():
                try:
                    while self._keep_training(state):
                        self._train_epoch(state, run, ckpt)
                        self._end_epoch(state, run, val_x, val_y, ckpt)
                finally:
                    self.close()  # the workers exit (they ignore the stop signals; see data.loader)
                info = self._finish(state, run, ckpt)
                if stop_requested():
                    raise TrainingInterrupted(
                        f"stopped after training finished at step {state.step}; the final weights are in "
                        f"checkpoint {ckpt}; rerun the same command to predict"
                    )
        finally:
            self.close()
        return {**info, "resumed_from_step": resumed_from}

    def _keep_training(self, state: TrainState) -> bool:
        p = self.params
        return (
            state.epoch < p.max_epochs
            and state.step < self.total_steps
            and not (p.patience and state.bad_epochs >= p.patience)
        )

    def _stop_hook(self, run_steps: int, run_epochs: int) -> bool:
        return (
            stop_requested() is not None
            or (self.stop_after_steps is not None and run_steps >= self.stop_after_steps)
            or (self.stop_after_epochs is not None and run_epochs >= self.stop_after_epochs)
        )

    def _train_epoch(self, state: TrainState, run: RunCounters, ckpt: Path) -> None:
        """Train from the state's position to the end of its epoch (or of the schedule). Stopped
        inside the epoch, it checkpoints the exact position and raises TrainingInterrupted; the
        rerun skips the batches already done."""
        p = self.params
        self.sampler.set_epoch(state.epoch, skip=state.batch_in_epoch)
        self.net.train()
        t_epoch = t_log = time.perf_counter()
        seen_log, losses = 0, []
        batches = iter(self.loader)
        try:
            while state.step < self.total_steps:
                batch = self._next_batch(batches, run)
                if batch is None:
                    break
                losses.append(self.train_step(batch, state.step))
                n = batch["flux"].shape[0]
                state.step += 1
                state.batch_in_epoch += 1
                state.seen += n
                seen_log += n
                run.steps += 1
                if p.log_every and state.step % p.log_every == 0:
                    loss = state.add_losses(losses)
                    now = time.perf_counter()
                    self._log_train(state, loss, seen_log / (now - t_log))
                    t_log, seen_log, losses = now, 0, []
                if self._stop_hook(run.steps, -1):
                    break
            if losses:
                state.add_losses(losses)
            dt = time.perf_counter() - t_epoch
            state.train_seconds += dt
            run.loop_seconds += dt
            if state.batch_in_epoch < self.steps_per_epoch and state.step < self.total_steps:
                self.save_checkpoint(state, ckpt)
                raise TrainingInterrupted(
                    f"stopped at step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch}); "
                    f"checkpoint {ckpt}; rerun the same command to resume"
                )
        finally:
            del batches  # a traceback holding this frame must not keep the workers alive past close()

    def _next_batch(self, batches: Iterator[dict], run: RunCounters) -> dict | None:
        """The loader's next batch, timing the wait; None at the end of the epoch, or when the
        loader fails after a stop was requested (a worker killed by something other than the stop
        signal, which workers ignore)."""
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return None
        except Exception:
            if stop_requested():  # workers killed by the same preemption signal
                return None
            raise
        run.wait_seconds += time.perf_counter() - t0
        return batch

    def _log_train(self, state: TrainState, loss: float, spectra_per_s: float) -> None:
        self._log(
            {
                "train/loss": loss,
                "train/lr": self.sched.get_last_lr()[0],
                "perf/spectra_per_s": spectra_per_s,
                "epoch": state.epoch,
            },
            state.step,
        )

    def _end_epoch(
        self, state: TrainState, run: RunCounters, val_x: torch.Tensor, val_y: np.ndarray, ckpt: Path
    ) -> None:
        """Validate, move the state to the next epoch and checkpoint; raises TrainingInterrupted
        when a stop was requested and training would otherwise go on."""
        epoch = state.epoch
        self._validate(state, val_x, val_y)
        state.epoch, state.batch_in_epoch, state.epoch_loss, state.epoch_batches = epoch + 1, 0, 0.0, 0
        run.epochs += 1
        self.save_checkpoint(state, ckpt)
        if self._stop_hook(run.steps, run.epochs) and self._keep_training(state):
            raise TrainingInterrupted(
                f"stopped after epoch {epoch} at step {state.step}; checkpoint {ckpt}; rerun to resume"
            )

    def _validate(self, state: TrainState, val_x: torch.Tensor, val_y: np.ndarray) -> None:
        """Score the epoch on the validation split (log g, dex), keep the best weights, count the
        epochs without improvement, and log the epoch's record."""
        epoch = state.epoch
        pred = self.predict_inputs(val_x)
        r2, mae = r2_score(val_y, pred), float(np.mean(np.abs(pred - val_y)))
        improved = r2 > state.best_r2
        if improved:
            state.best_r2, state.best_epoch, state.bad_epochs = r2, epoch, 0
            state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
        else:
            state.bad_epochs += 1
        rec = {
            "epoch": epoch,
            "step": state.step,
            "train_loss": state.epoch_loss / max(1, state.epoch_batches),
            "val_r2": r2,
            "val_mae": mae,
            "lr": self.sched.get_last_lr()[0],
            "seconds": state.train_seconds,
        }
        state.history.append(rec)
        self._log(
            {
                "val/r2": r2,
                "val/mae": mae,
                "val/best_r2": state.best_r2,
                "train/epoch_loss": rec["train_loss"],
                "epoch": epoch,
            },
            state.step,
        )
        log.info(
            "%s epoch %d step %d: train loss %.4f  val R2 %.4f  MAE %.4f%s",
            self.name,
            epoch,
            state.step,
            rec["train_loss"],
            r2,
            mae,
            "  *" if improved else "",
        )

    def _finish(self, state: TrainState, run: RunCounters, ckpt: Path) -> dict:
        """Load the best epoch's weights, record the run's summary in the state as done and
        checkpoint it (a rerun then reuses it); returns the summary."""
        p = self.params
        if state.epoch >= p.max_epochs:
            stop = "max_epochs"
        elif state.step >= self.total_steps:
            stop = "max_steps"
        else:
            stop = "early_stopping"
        self.net.load_state_dict(state.best_state)
        info = {
            "epochs": state.epoch,
            "steps": state.step,
            "best_epoch": state.best_epoch,
            "best_val_r2": state.best_r2,
            "stopped_by": stop,
            "schedule_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "n_params": self.net.n_params(),
            "train_flops_per_spectrum": self.net.train_flops_per_spectrum(),
            "loop_seconds": state.train_seconds,
            "spectra_per_s": state.seen / state.train_seconds if state.train_seconds else None,
            "data_wait_frac": run.wait_seconds / run.loop_seconds if run.loop_seconds else None,
            "workers": self.workers(),
            "amp_bf16": self.use_amp,
            "compiled": p.compile,
            "history": state.history,
        }
        state.done, state.info = True, info
        self.save_checkpoint(state, ckpt)
        return info

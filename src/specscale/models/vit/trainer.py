"""Training the ViT as a sweep model: ``ViTModel.fit`` builds the network, optimiser, schedule and
loader for a cell, then trains epoch by epoch with fresh noise every step, validates after each
epoch and checkpoints, so a preempted run resumes exactly (see the package docstring).

Reading order: the lr schedule, ``TrainState`` (everything a checkpoint must carry), then
``ViTModel``: setup (``build``), one step (``train_step``), prediction, checkpoints, and the loop
(``fit`` -> ``_train_epoch`` -> ``_end_epoch`` -> ``_finish``).
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from specscale.core.config import ConfigError, config_hash
from specscale.core.files import atomic_write
from specscale.core.preemption import Preempted, deferred_stops, stop_requested
from specscale.core.vocab import LABELS, LOGG, Cell, MagRange
from specscale.data.loader import MemoryBatches, SlabBatchSampler, batch_variances, close_loader, train_loader
from specscale.data.sources import Observed, Source
from specscale.data.streams import seed_key
from specscale.models.base import Model
from specscale.models.metrics import r2_score
from specscale.models.vit.channels import model_input
from specscale.models.vit.encoder_file import load_encoder
from specscale.models.vit.network import SpectrumViT, weight_decayed
from specscale.models.vit.params import ViTParams, ViTTinyParams
from specscale.models.vit.targets import make_target, output_width
from specscale.sim.observe import observe
from specscale.sim.windows import window_pixels

log = logging.getLogger(__name__)


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


class ViTModel(Model):
    """The 1D ViT as a sweep model (see the package docstring)."""

    name = "vit"
    Params = ViTParams
    feature_options = ("window", "input")  # of a variant's features; input becomes params.inputs (models.registry)
    tracked = True  # its runs log to Weights & Biases
    pixels = None  # indices of the window's pixels the network sees (set by check); None: every pixel

    def __init__(self, params, *, seed: int, device: str = "cpu", n_threads: int = 1):
        super().__init__(params, seed=seed, device=device, n_threads=n_threads)
        self.dev = torch.device(device)
        self.stop_after_epochs: int | None = None  # stop hooks (tests; a preemption does the same)
        self.stop_after_steps: int | None = None
        p = params
        self.target_idx = [LABELS.index(t) for t in p.targets]
        self.n_out = output_width(p)
        self.use_amp = p.amp == "bf16" or (p.amp == "auto" and self.dev.type == "cuda")

    # -- setup

    def check(self, source: Source, cell: Cell) -> None:
        """Fail before training on what the data cannot support."""
        p = self.params
        if self.features is not None:  # the window, trimmed to whole patches (ConfigError when under one)
            self.pixels = window_pixels(
                source.wave, self.features.window, "features.window", multiple=p.pixel_multiple()
            )
        if self.pixels is None and source.wave.size % p.pixel_multiple():
            key = "patches" if p.patches else "patch"
            raise ConfigError(
                f"models.{self.name}.{key}={getattr(p, key)} does not tile the spectrum's {source.wave.size} pixels"
            )
        if p.inputs == "flux/error" and cell.noise == 0:
            raise ConfigError(f"models.{self.name}.inputs='flux/error' needs noise > 0 (the error is zero at noise 0)")
        if p.loader == "device":
            need = cell.n_train * (3 * source.wave.size + 5) * 4
            if self.dev.type == "cuda":
                free = torch.cuda.mem_get_info(self.dev)[0]
                if need > 0.7 * free:
                    raise ConfigError(
                        f"models.{self.name}.loader='device' needs {need / 2**30:.1f} GiB for "
                        f"{cell.n_train} spectra; {free / 2**30:.1f} GiB free on {self.dev}: use 'stream'"
                    )

    def workers(self) -> int:
        """DataLoader worker processes: ``params.workers``, or with -1 the automatic number."""
        w = self.params.workers
        if w >= 0:
            return w
        return min(16, self.n_threads) if self.dev.type == "cuda" else min(4, max(0, self.n_threads - 1))

    def build(self, source: Source, cell: Cell) -> None:
        """Network, label scalers, optimizer, schedule and loader for this cell (fresh state)."""
        p = self.params
        self.check(source, cell)
        self.cell, self.mag = cell, MagRange.parse(cell.mag)
        self.dataset_id = source.dataset_id
        y = source.labels("train", np.arange(cell.n_train))[:, self.target_idx].astype(np.float64)
        std = y.std(axis=0)
        self.y_mean, self.y_std = y.mean(axis=0), np.where(std > 0, std, 1.0)
        k = p.targets.index("logg")
        self.target = make_target(p, (y[:, k] - self.y_mean[k]) / self.y_std[k])
        # on the device once: a host-to-device copy inside the step would synchronise every step
        self._target_idx = torch.as_tensor(self.target_idx, device=self.dev)
        basis = source.variance_basis()
        self._var_basis = None if basis is None else torch.as_tensor(basis, device=self.dev)
        self._y_mean = torch.as_tensor(self.y_mean, dtype=torch.float32, device=self.dev)
        self._y_std = torch.as_tensor(self.y_std, dtype=torch.float32, device=self.dev)
        torch.manual_seed(self.seed)
        wave = source.wave if self.pixels is None else source.wave[self.pixels]
        self._pixels = None if self.pixels is None else torch.as_tensor(self.pixels, device=self.dev)
        self.net = self.make_network(wave).to(self.dev)
        self.fwd = torch.compile(self.net, dynamic=False, mode=p.compile_mode) if p.compile else self.net
        trained = [(n, q) for n, q in self.net.named_parameters() if q.requires_grad]  # freeze: the head only
        decay = [q for n, q in trained if weight_decayed(n, q)]
        no_decay = [q for n, q in trained if not weight_decayed(n, q)]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=p.lr,
            betas=(0.9, 0.999),
            fused=self.dev.type == "cuda",
        )
        # loader "device": same batches in the same order, without I/O (device memory: n_train x
        # 16 KB for the synthetic source, x 48 KB for files with error arrays)
        if p.loader == "device":
            self.sampler = SlabBatchSampler(cell.n_train, p.batch, p.slab, self.seed)
            self.loader = MemoryBatches(source, cell.n_train, self.mag, self.sampler, device=self.dev)
        else:
            self.loader, self.sampler = train_loader(
                source,
                cell.n_train,
                self.mag,
                batch=p.batch,
                slab=p.slab,
                seed=self.seed,
                workers=self.workers(),
                prefetch_factor=p.prefetch,
                pin_memory=self.dev.type == "cuda",
            )
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        total = p.max_epochs * self.steps_per_epoch
        self.total_steps = min(total, p.max_steps) if p.max_steps else total
        warmup = int(p.warmup_frac * self.total_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, self.total_steps, warmup, p.lr, p.lr_min)
        )
        self.noise_key = seed_key("vit-train-noise", self.dataset_id, self.seed) & (2**62 - 1)
        self.fingerprint = config_hash(
            {
                "model": self.name,
                "params": asdict(p),
                "dataset_id": self.dataset_id,
                "cell": [cell.noise, self.mag.label(), cell.n_train, cell.seed],
                **({} if self.features is None else {"window": self.features.to_dict()["window"]}),
                **({} if self.init_id is None else {"init": self.init_id}),
            }
        )

    def make_network(self, wave: np.ndarray) -> nn.Module:
        """The network for ``wave`` (Angstrom): fresh, or with ``pretrain`` the pre-trained encoder's
        weights and a fresh head; with ``freeze`` only the head trains. Sets ``init_id`` (the
        pre-training run's fingerprint, part of this run's, or None)."""
        p = self.params
        net = SpectrumViT(p, wave, self.n_out)
        self.init_id = None
        if p.pretrain:
            state, self.init_id = load_encoder(p.pretrain, p, len(wave), f"models.{self.name}.pretrain")
            missing, unexpected = net.load_state_dict(state, strict=False)
            assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
        if p.freeze:
            net.freeze_encoder()
        return net

    def observed_inputs(self, observed: Observed) -> torch.Tensor:
        """Model input (CPU tensor) of fixed-noise observed spectra."""
        flux, error = observed.flux, observed.error
        if self.pixels is not None:  # a variant's window
            flux, error = flux[:, self.pixels], error[:, self.pixels]
        return model_input(
            self.params,
            torch.from_numpy(np.ascontiguousarray(flux)),
            torch.from_numpy(np.ascontiguousarray(error)),
        )

    def autocast(self):
        """bf16 autocast on the model's device when AMP is on, else a no-op context."""
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.use_amp)

    # -- one step

    def step_normals(self, shape, step: int) -> torch.Tensor:
        """Standard normals for training step ``step``, drawn on the device: fresh every step,
        the same for the same (dataset, seed, step), so a resumed run draws what the original would."""
        gen = torch.Generator(device=self.dev)
        gen.manual_seed(self.noise_key + step)
        return torch.randn(shape, generator=gen, device=self.dev, dtype=torch.float32)

    def train_step(self, batch: dict, step: int) -> torch.Tensor:
        """One optimiser step on a noiseless batch; noise drawn on the device for this step.
        Returns the loss (a device tensor, not synchronised)."""
        p, dev = self.params, self.dev
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        flux = batch["flux"]
        var_a, var_b = batch_variances(batch, self._var_basis)
        y = (batch["labels"].index_select(1, self._target_idx) - self._y_mean) / self._y_std
        obs, err, _ = observe(flux, var_a, var_b, self.cell.noise, self.step_normals(flux.shape, step))
        if self._pixels is not None:  # a variant's window: the same noise, on its pixels only
            obs, err = obs.index_select(1, self._pixels), err.index_select(1, self._pixels)
        x = model_input(p, obs, err)
        with self.autocast():
            out = self.fwd(x)
        loss = self.target.loss(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if p.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.parameters(), p.grad_clip)
        self.opt.step()
        self.sched.step()
        return loss.detach()

    # -- prediction

    @torch.no_grad()
    def predict_inputs(self, x: torch.Tensor, with_sigma: bool = False):
        """log g (dex) from model inputs (CPU tensor), in eval batches; with ``with_sigma`` (loss
        gaussian_nll or target binned) the pair (log g, its predicted 1-sigma in dex), decoded by
        the target (``targets``: the log-variance column, or the bin probabilities' 16-84%
        interval) and scaled from z-scored units by the label std."""
        if with_sigma and not self.predicts_sigma:
            raise ValueError(
                f"{self.name}: loss={self.params.loss!r} predicts no uncertainty (use gaussian_nll or target binned)"
            )
        self.net.eval()
        out, sigma = [], []
        k = self.params.targets.index("logg")  # the head's log g column (multi-task: any position)
        for i in range(0, x.shape[0], self.params.eval_batch):
            with self.autocast():  # eager: a compiled graph would recompile for eval mode and shapes
                o = self.net(x[i : i + self.params.eval_batch].to(self.dev, non_blocking=True))
            z, sd = self.target.decode(o, with_sigma)
            out.append(z.cpu().numpy())
            if with_sigma:
                sigma.append(sd.cpu().numpy())
        self.net.train()
        z = np.concatenate(out).astype(np.float64) if out else np.empty(0)
        mean = z * self.y_std[k] + self.y_mean[k]
        if not with_sigma:
            return mean
        sd = np.concatenate(sigma).astype(np.float64) if sigma else np.empty(0)
        return mean, sd * self.y_std[k]

    def predict(self, observed: Observed) -> np.ndarray:
        """log g (dex) for each observed spectrum, shape (n,)."""
        return self.predict_inputs(self.observed_inputs(observed))

    @property
    def predicts_sigma(self) -> bool:
        """Whether the head predicts an uncertainty (loss gaussian_nll or target binned):
        ``predict_with_sigma`` works."""
        return self.params.loss == "gaussian_nll" or self.params.target == "binned"

    def predict_with_sigma(self, observed: Observed) -> tuple[np.ndarray, np.ndarray]:
        """(log g, predicted 1-sigma of log g), both dex, shape (n,) each; see ``predicts_sigma``."""
        return self.predict_inputs(self.observed_inputs(observed), with_sigma=True)

    # -- checkpoints

    def save_checkpoint(self, state: TrainState, path: Path) -> None:
        """Write ``state`` with the weights, optimiser, scheduler, RNG states and label scalers to
        ``path``, atomically. Everything in it is a tensor or plain data (dict, list, str, int,
        float, bool, None), so it loads with ``torch.load(weights_only=True)``: no pickled objects."""
        ck = {
            **state.to_checkpoint(),
            "fingerprint": self.fingerprint,
            "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.dev.type == "cuda" else None,
            },
            "y_mean": torch.from_numpy(np.asarray(self.y_mean, np.float64)),
            "y_std": torch.from_numpy(np.asarray(self.y_std, np.float64)),
        }
        # serialised in memory, written by Python: a full disk is an OSError with its errno
        # (torch's own file writer reports it as a RuntimeError without one)
        buf = io.BytesIO()
        torch.save(ck, buf)
        with atomic_write(path) as tmp:
            tmp.write_bytes(buf.getbuffer())

    def load_checkpoint(self, path: Path) -> TrainState:
        """Restore the weights, optimiser, scheduler and RNG states from ``path``; returns the
        saved TrainState. Nothing in the file is unpickled (``weights_only=True``): a file holding
        anything but tensors and plain data is refused unread. ConfigError if it is such a file, is
        unreadable, or was written for another configuration, dataset or cell."""
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch's reason, e.g. "Unsupported global: GLOBAL os.system ...", without its advice to allowlist it
            why = str(exc).partition("WeightsUnpickler error:")[2].split(". Please")[0].strip().splitlines()
            why = why[0] if why else ""
            raise ConfigError(
                f"checkpoint {path} cannot be loaded safely: it holds objects other than tensors and plain "
                f"data, so it was not written by this version of specscale (or was altered), and it was not "
                f"loaded{f' ({why})' if why else ''}; remove it (training restarts) or use another --out"
            ) from None
        except (RuntimeError, EOFError, OSError) as exc:
            raise ConfigError(
                f"checkpoint {path} is not a readable checkpoint ({exc}); remove it (training restarts) "
                "or use another --out"
            ) from exc
        if not isinstance(ck, dict):
            raise ConfigError(f"checkpoint {path} is not a specscale checkpoint (a {type(ck).__name__}, not a dict)")
        if ck.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"checkpoint {path} was written for a different configuration, dataset or cell "
                f"(fingerprint {ck.get('fingerprint')} != {self.fingerprint}); remove it or use another --out"
            )
        self.net.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"]["torch"])
        if ck["rng"]["cuda"] is not None and self.dev.type == "cuda":
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        return TrainState.from_checkpoint(ck)

    # -- the loop

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

    def close(self) -> None:
        """Stop the loader's worker processes (they exit only when told to)."""
        loader, self.loader = getattr(self, "loader", None), None
        if loader is not None:
            close_loader(loader)

    def _log(self, values: dict, step: int) -> None:
        if self.tracker is not None:
            self.tracker.log(values, step=step)


class ViTTinyModel(ViTModel):
    """The CPU-sized preset (``vit-tiny``), configured under ``models.vit-tiny``."""

    name = "vit-tiny"
    Params = ViTTinyParams

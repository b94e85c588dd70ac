"""A 1D Vision Transformer for log g (the study's best model), trained with fresh noise every step
and resumed exactly after preemption.

Architecture (top-down): the spectrum (channels x 4096 pixels) is cut into patches by a Conv1d
tokenizer (patch 16 -> 256 tokens), a CLS token is prepended, a positional embedding added
(learned, or sinusoidal in log wavelength), pre-LN encoder blocks (attention via
F.scaled_dot_product_attention, flash kernels on CUDA; GELU MLP) transform the tokens, and a linear
head on the final-LN CLS token predicts z-scored labels. Defaults are the study's best run:
6 layers, width 256, 8 heads, MLP 1024, dropout 0.1, AdamW 3e-4 with warmup and cosine decay to
1e-5 over the run's real number of steps, batch 256, gradient clip 0.5, MSE.

Training: the loader streams NOISELESS flux with its variance coefficients; every step draws new
noise on the device from a generator seeded by (dataset, seed, step) and applies the observation
model there, so no two epochs see the same noise and a resumed run draws exactly what the
uninterrupted one would. Validation and test use the dataset's fixed noise (Source.observed).
Early stopping on validation R^2; the best epoch's weights are kept.

Resume: ``WORKDIR/checkpoint.pt`` is written atomically after every epoch (and on SIGTERM/SIGUSR1,
at the current step) with the model, optimizer, scheduler, step, epoch, position in the epoch,
best-validation state, early-stopping counter and RNG states. A rerun of the same cell finds it
and continues; the batch order depends only on (seed, epoch), so the continuation is the same
run. A checkpoint from a different configuration or dataset is refused, not silently reused.

Options for the study's open hypotheses (default = the study's recipe):
``inputs`` flux | flux+error | flux/error (error = the pipeline error from observed counts, the
only error a model may see); ``pos_encoding`` learned | sinusoidal (in log lambda); ``targets``
(logg plus any of teff, mh, am: multi-task heads, one loss over z-scored labels);
``loss`` mse | mae | gaussian_nll (the head then predicts a mean and a log variance per target).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atmosphere import LABELS
from ..cells import MagCell, seed_key
from ..config import ConfigError, config_hash
from ..loader import MemoryBatches, SlabBatchSampler, batch_variances, train_loader
from ..metrics import r2_score
from ..observe import observe
from ..sources import Observed, Source
from . import check_fields
from .base import Model, TrainCell

log = logging.getLogger(__name__)

INPUTS = {"flux": 1, "flux+error": 2, "flux/error": 1}  # name -> channels
POS_ENCODINGS = ("learned", "sinusoidal")
LOSSES = ("mse", "mae", "gaussian_nll")
AMP_MODES = ("auto", "bf16", "off")
LOADERS = ("stream", "device")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class ViTParams:
    """Hyper-parameters; defaults are the study's best run (4.9M parameters)."""

    # architecture
    patch: int = 16  # pixels per token (4096 / 16 = 256 tokens + CLS)
    width: int = 256
    depth: int = 6
    heads: int = 8
    mlp: int = 1024
    dropout: float = 0.1
    inputs: str = "flux"  # flux | flux+error | flux/error
    pos_encoding: str = "learned"  # learned | sinusoidal (in log lambda)
    targets: tuple[str, ...] = ("logg",)  # multi-task: add teff, mh, am
    loss: str = "mse"  # mse | mae | gaussian_nll
    # optimisation
    lr: float = 3e-4
    lr_min: float = 1e-5
    weight_decay: float = 1e-2
    warmup_frac: float = 0.02  # of the schedule's steps
    batch: int = 256
    max_epochs: int = 200
    max_steps: int = 0  # 0: no cap; else training (and the cosine) ends after this many steps
    patience: int = 20  # epochs without a better validation R^2
    grad_clip: float = 0.5
    # hardware and data path (do not change the estimator's definition)
    amp: str = "auto"  # auto: bf16 autocast on CUDA, off on CPU | bf16 | off
    compile: bool = False  # torch.compile the network
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    loader: str = "stream"  # stream: HDF5 -> DataLoader workers | device: the noiseless train split held in device memory
    workers: int = -1  # DataLoader processes; -1: min(16, CPUs) on CUDA, min(4, CPUs - 1) on CPU
    prefetch: int = 4  # batches each worker keeps ready
    slab: int = 32  # consecutive rows read together inside a batch
    eval_batch: int = 1024
    log_every: int = 50  # steps between training-loss logs

    def __post_init__(self):
        check_fields(self)
        choices = {"inputs": tuple(INPUTS), "pos_encoding": POS_ENCODINGS, "loss": LOSSES, "amp": AMP_MODES,
                   "loader": LOADERS, "compile_mode": COMPILE_MODES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        bad = [t for t in self.targets if t not in LABELS]
        if bad or "logg" not in self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets={list(self.targets)} must be distinct labels from {list(LABELS)} including 'logg'")
        positive = ("patch", "width", "depth", "heads", "mlp", "batch", "max_epochs", "slab", "eval_batch", "prefetch")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.width % self.heads:
            raise ValueError(f"width={self.width} must be divisible by heads={self.heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if not 0 < self.lr_min <= self.lr:
            raise ValueError(f"need 0 < lr_min <= lr, got lr_min={self.lr_min}, lr={self.lr}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac={self.warmup_frac} must be in [0, 1)")
        for name in ("max_steps", "patience", "weight_decay", "grad_clip", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.workers < -1:
            raise ValueError(f"workers={self.workers} must be >= 0, or -1 for automatic")


@dataclass(frozen=True)
class ViTTinyParams(ViTParams):
    """A small preset that trains in minutes on a CPU (same recipe, smaller and shorter).
    Patch 32 (128 tokens): on a CPU attention over 256 tokens costs ~4x the throughput."""

    patch: int = 32
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp: int = 128
    batch: int = 128
    lr: float = 1e-3
    max_epochs: int = 5
    patience: int = 2
    warmup_frac: float = 0.05


# ---------------------------------------------------------------- the network


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # flash / memory-efficient kernels on CUDA
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.out = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.out(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN encoder block."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, hidden, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def sinusoidal_log_lambda(wave: np.ndarray, patch: int, width: int) -> torch.Tensor:
    """(1, 1 + n_tokens, width) fixed encoding of each patch's mean ln(lambda), measured in units
    of the median ln(lambda) step per pixel (so positions follow wavelength, not pixel index);
    the CLS slot gets zeros."""
    lnw = np.log(np.asarray(wave, np.float64))
    pos = lnw[: lnw.size // patch * patch].reshape(-1, patch).mean(1)
    pos = (pos - lnw[0]) / np.median(np.diff(lnw))
    freq = 1.0 / 10000.0 ** (np.arange(0, width, 2) / width)
    angle = pos[:, None] * freq[None, :]
    pe = np.zeros((pos.size + 1, width))
    pe[1:, 0::2] = np.sin(angle)
    pe[1:, 1::2] = np.cos(angle[:, : width // 2])
    return torch.tensor(pe[None], dtype=torch.float32)


class SpectrumViT(nn.Module):
    """(B, channels, n_pix) spectra -> (B, n_out) z-scored predictions."""

    def __init__(self, p: ViTParams, wave: np.ndarray, n_out: int):
        super().__init__()
        n_pix = len(wave)
        if n_pix % p.patch:
            raise ConfigError(f"patch={p.patch} does not divide the spectrum's {n_pix} pixels")
        self.n_tokens = n_pix // p.patch + 1
        self.tokenizer = nn.Conv1d(INPUTS[p.inputs], p.width, kernel_size=p.patch, stride=p.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, p.width))
        if p.pos_encoding == "learned":
            self.pos = nn.Parameter(torch.zeros(1, self.n_tokens, p.width))
        else:
            self.register_buffer("pos", sinusoidal_log_lambda(wave, p.patch, p.width), persistent=False)
        self.drop = nn.Dropout(p.dropout)
        self.blocks = nn.ModuleList(Block(p.width, p.heads, p.mlp, p.dropout) for _ in range(p.depth))
        self.norm = nn.LayerNorm(p.width)
        self.head = nn.Linear(p.width, n_out)
        self.apply(self._init)
        nn.init.normal_(self.cls, std=0.02)
        if isinstance(self.pos, nn.Parameter):
            nn.init.normal_(self.pos, std=0.02)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        t = self.tokenizer(x).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        t = self.drop(t)
        for block in self.blocks:
            t = block(t)
        return self.head(self.norm(t[:, 0]))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def train_flops_per_spectrum(self) -> float:
        """Model FLOPs of one training step per spectrum: 6 x (matmul parameters) x tokens plus
        attention's QK^T and AV (2 x 2 T^2 d forward per layer, x3 with the backward pass)."""
        n_matmul = sum(p.numel() for name, p in self.named_parameters() if p.dim() >= 2 and name not in ("cls", "pos"))
        T, d = self.n_tokens, self.norm.normalized_shape[0]
        return 6.0 * n_matmul * T + 12.0 * len(self.blocks) * T**2 * d


# ---------------------------------------------------------------- training pieces


def input_channels(kind: str, flux: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """(B, channels, n_pix) model input from observed flux and pipeline error (B, n_pix).

    Median-normalised flux enters as flux - 1: the same function class (the tokenizer's bias
    absorbs the shift), but tokens then carry the line depths instead of a constant that the
    LayerNorms wash out, and training leaves the predict-the-mean plateau far sooner."""
    if kind == "flux":
        return (flux - 1.0)[:, None]
    if kind == "flux+error":
        return torch.stack([flux - 1.0, error], dim=1)
    if kind == "flux/error":
        return (flux / error)[:, None]
    raise ConfigError(f"inputs={kind!r} is not one of {list(INPUTS)}")


def loss_function(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Training loss on z-scored labels y (B, n_targets); ``out`` has one column per target, or
    (mean, log variance) column blocks for gaussian_nll."""
    out = out.float()
    if kind == "mse":
        return F.mse_loss(out, y)
    if kind == "mae":
        return F.l1_loss(out, y)
    if kind == "gaussian_nll":
        mu, log_var = out.chunk(2, dim=1)
        return 0.5 * (log_var + (y - mu) ** 2 * torch.exp(-log_var)).mean()
    raise ConfigError(f"loss={kind!r} is not one of {list(LOSSES)}")


def lr_factor(step: int, total: int, warmup: int, lr: float, lr_min: float) -> float:
    """Multiplier of the peak lr at ``step``: linear warmup over ``warmup`` steps, then cosine to
    lr_min at ``total`` (the run's real number of steps)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return (lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * progress))) / lr


class TrainingInterrupted(RuntimeError):
    """Training stopped early on request (signal or stop hook) after saving a checkpoint."""


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- the model


class ViTModel(Model):
    """The 1D ViT as a sweep model (see the module docstring)."""

    name = "vit"
    Params = ViTParams

    def __init__(self, params, *, seed: int, device: str = "cpu", n_threads: int = 1):
        super().__init__(params, seed=seed, device=device, n_threads=n_threads)
        self.dev = torch.device(device)
        self.tracker = None  # set by the runner: an object with log(dict, step)
        self.stop_after_epochs: int | None = None  # stop hooks (tests; a preemption does the same)
        self.stop_after_steps: int | None = None
        self._stop_requested = False
        p = params
        self.target_idx = [LABELS.index(t) for t in p.targets]
        self.n_out = len(p.targets) * (2 if p.loss == "gaussian_nll" else 1)
        self.use_amp = p.amp == "bf16" or (p.amp == "auto" and self.dev.type == "cuda")

    # -- setup

    def check(self, source: Source, cell: TrainCell) -> None:
        """Fail before training on what the data cannot support."""
        p = self.params
        if source.wave.size % p.patch:
            raise ConfigError(f"models.{self.name}.patch={p.patch} does not divide the spectrum's {source.wave.size} pixels")
        if p.inputs == "flux/error" and cell.noise == 0:
            raise ConfigError(f"models.{self.name}.inputs='flux/error' needs noise > 0 (the error is zero at noise 0)")
        if p.loader == "device":
            need = cell.n_train * (3 * source.wave.size + 5) * 4
            if self.dev.type == "cuda":
                free = torch.cuda.mem_get_info(self.dev)[0]
                if need > 0.7 * free:
                    raise ConfigError(f"models.{self.name}.loader='device' needs {need / 2**30:.1f} GiB for "
                                      f"{cell.n_train} spectra; {free / 2**30:.1f} GiB free on {self.dev}: use 'stream'")

    def workers(self) -> int:
        w = self.params.workers
        if w >= 0:
            return w
        return min(16, self.n_threads) if self.dev.type == "cuda" else min(4, max(0, self.n_threads - 1))

    def build(self, source: Source, cell: TrainCell) -> None:
        """Network, label scalers, optimizer, schedule and loader for this cell (fresh state)."""
        p = self.params
        self.check(source, cell)
        self.cell, self.mag = cell, MagCell.parse(cell.mag)
        self.dataset_id = source.dataset_id
        y = source.labels("train", np.arange(cell.n_train))[:, self.target_idx].astype(np.float64)
        std = y.std(axis=0)
        self.y_mean, self.y_std = y.mean(axis=0), np.where(std > 0, std, 1.0)
        # on the device once: a host-to-device copy inside the step would synchronise every step
        self._target_idx = torch.as_tensor(self.target_idx, device=self.dev)
        basis = source.variance_basis()
        self._var_basis = None if basis is None else torch.as_tensor(basis, device=self.dev)
        self._y_mean = torch.as_tensor(self.y_mean, dtype=torch.float32, device=self.dev)
        self._y_std = torch.as_tensor(self.y_std, dtype=torch.float32, device=self.dev)
        torch.manual_seed(self.seed)
        self.net = SpectrumViT(p, source.wave, self.n_out).to(self.dev)
        self.fwd = torch.compile(self.net, dynamic=False, mode=p.compile_mode) if p.compile else self.net
        decay = [q for n, q in self.net.named_parameters() if q.dim() >= 2 and n not in ("cls", "pos")]
        no_decay = [q for n, q in self.net.named_parameters() if not (q.dim() >= 2 and n not in ("cls", "pos"))]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=p.lr, betas=(0.9, 0.999), fused=self.dev.type == "cuda",
        )
        # loader "device": same batches in the same order, without I/O (device memory: n_train x
        # 16 KB for the synthetic source, x 48 KB for files with error arrays)
        if p.loader == "device":
            self.sampler = SlabBatchSampler(cell.n_train, p.batch, p.slab, self.seed)
            self.loader = MemoryBatches(source, cell.n_train, self.mag, self.sampler, device=self.dev)
        else:
            self.loader, self.sampler = train_loader(
                source, cell.n_train, self.mag, batch=p.batch, slab=p.slab, seed=self.seed, workers=self.workers(),
                prefetch_factor=p.prefetch, pin_memory=self.dev.type == "cuda",
            )
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        total = p.max_epochs * self.steps_per_epoch
        self.total_steps = min(total, p.max_steps) if p.max_steps else total
        warmup = int(p.warmup_frac * self.total_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, self.total_steps, warmup, p.lr, p.lr_min))
        self.noise_key = seed_key("vit-train-noise", self.dataset_id, self.seed) & (2**62 - 1)
        self.fingerprint = config_hash({"model": self.name, "params": asdict(p), "dataset_id": self.dataset_id,
                                        "cell": [cell.noise, self.mag.label(), cell.n_train, cell.seed]})

    def observed_inputs(self, observed: Observed) -> torch.Tensor:
        """Model input (CPU tensor) of fixed-noise observed spectra."""
        return input_channels(self.params.inputs, torch.from_numpy(np.ascontiguousarray(observed.flux)),
                              torch.from_numpy(np.ascontiguousarray(observed.error)))

    def autocast(self):
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.use_amp)

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
        x = input_channels(p.inputs, obs, err)
        with self.autocast():
            out = self.fwd(x)
        loss = loss_function(p.loss, out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if p.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.parameters(), p.grad_clip)
        self.opt.step()
        self.sched.step()
        return loss.detach()

    @torch.no_grad()
    def predict_inputs(self, x: torch.Tensor) -> np.ndarray:
        """log g (dex) from model inputs (CPU tensor), in eval batches."""
        self.net.eval()
        out = []
        for i in range(0, x.shape[0], self.params.eval_batch):
            with self.autocast():  # eager: a compiled graph would recompile for eval mode and shapes
                o = self.net(x[i : i + self.params.eval_batch].to(self.dev, non_blocking=True))
            out.append(o.float()[:, 0].cpu().numpy())
        self.net.train()
        k = self.params.targets.index("logg")
        z = np.concatenate(out).astype(np.float64) if out else np.empty(0)
        return z * self.y_std[k] + self.y_mean[k]

    def predict(self, observed: Observed) -> np.ndarray:
        return self.predict_inputs(self.observed_inputs(observed))

    # -- checkpoints

    def _state(self, st: dict) -> dict:
        return {
            **st,
            "fingerprint": self.fingerprint,
            "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.dev.type == "cuda" else None},
            "y_mean": self.y_mean, "y_std": self.y_std,
        }

    def _restore(self, path: Path) -> dict:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if ck.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"checkpoint {path} was written for a different configuration, dataset or cell "
                f"(fingerprint {ck.get('fingerprint')} != {self.fingerprint}); remove it or use another --out")
        self.net.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"]["torch"])
        if ck["rng"]["cuda"] is not None and self.dev.type == "cuda":
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        keys = ("step", "epoch", "batch_in_epoch", "seen", "best_r2", "best_epoch", "best_state", "bad_epochs",
                "history", "epoch_loss", "epoch_batches", "train_seconds", "done", "info")
        return {k: ck.get(k) for k in keys}

    # -- the loop

    def _on_signal(self, signum, frame):
        log.warning("signal %d: checkpointing at the end of this step", signum)
        self._stop_requested = True

    def _keep_training(self, st: dict) -> bool:
        p = self.params
        return (st["epoch"] < p.max_epochs and st["step"] < self.total_steps
                and not (p.patience and st["bad_epochs"] >= p.patience))

    def _stop_hook(self, run_steps: int, run_epochs: int) -> bool:
        return (self._stop_requested
                or (self.stop_after_steps is not None and run_steps >= self.stop_after_steps)
                or (self.stop_after_epochs is not None and run_epochs >= self.stop_after_epochs))

    def fit(self, source: Source, cell: TrainCell, workdir: Path) -> dict:
        p = self.params
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        ckpt = workdir / "checkpoint.pt"
        self.build(source, cell)
        st = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "seen": 0, "best_r2": -math.inf, "best_epoch": -1,
              "best_state": None, "bad_epochs": 0, "history": [], "epoch_loss": 0.0, "epoch_batches": 0,
              "train_seconds": 0.0, "done": False, "info": None}
        resumed_from = None
        if ckpt.exists():
            st = self._restore(ckpt)
            resumed_from = st["step"]
            log.info("resuming %s from %s: epoch %d, step %d", self.name, ckpt, st["epoch"], st["step"])
        if st["done"]:
            self.net.load_state_dict(st["best_state"])
            return {**st["info"], "resumed_from_step": resumed_from}
        val_x = torch.cat([self.observed_inputs(o) for o in source.iter_observed("val", self.mag, cell.noise, None)])
        val_y = source.labels("val")[:, 1].astype(np.float64)
        if self.dev.type == "cuda":
            val_x = val_x.pin_memory()

        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                handlers[sig] = signal.signal(sig, self._on_signal)
        run_steps = run_epochs = 0
        run_wait = run_loop = 0.0
        try:
            while self._keep_training(st):
                epoch = st["epoch"]
                self.sampler.set_epoch(epoch, skip=st["batch_in_epoch"])
                self.net.train()
                t_epoch = t_log = time.perf_counter()
                seen_log, losses = 0, []
                batches = iter(self.loader)
                while st["step"] < self.total_steps:
                    t0 = time.perf_counter()
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except Exception:
                        if self._stop_requested:  # workers killed by the same preemption signal
                            break
                        raise
                    run_wait += time.perf_counter() - t0
                    losses.append(self.train_step(batch, st["step"]))
                    n = batch["flux"].shape[0]
                    st["step"] += 1
                    st["batch_in_epoch"] += 1
                    st["seen"] += n
                    seen_log += n
                    run_steps += 1
                    if p.log_every and st["step"] % p.log_every == 0:
                        window = torch.stack(losses).float().cpu().numpy()
                        st["epoch_loss"] += float(window.sum())
                        st["epoch_batches"] += window.size
                        now = time.perf_counter()
                        self._log({"train/loss": float(window.mean()), "train/lr": self.sched.get_last_lr()[0],
                                   "perf/spectra_per_s": seen_log / (now - t_log), "epoch": epoch}, st["step"])
                        t_log, seen_log, losses = now, 0, []
                    if self._stop_hook(run_steps, -1):
                        break
                if losses:
                    window = torch.stack(losses).float().cpu().numpy()
                    st["epoch_loss"] += float(window.sum())
                    st["epoch_batches"] += window.size
                dt = time.perf_counter() - t_epoch
                st["train_seconds"] += dt
                run_loop += dt
                if st["batch_in_epoch"] < self.steps_per_epoch and st["step"] < self.total_steps:
                    # stopped inside the epoch: save the exact position, resume skips the done batches
                    _atomic_save(self._state(st), ckpt)
                    raise TrainingInterrupted(
                        f"stopped at step {st['step']} (epoch {epoch}, batch {st['batch_in_epoch']}); "
                        f"checkpoint {ckpt}; rerun the same command to resume")
                # end of epoch: validate, early-stopping bookkeeping, checkpoint
                pred = self.predict_inputs(val_x)
                r2, mae = r2_score(val_y, pred), float(np.mean(np.abs(pred - val_y)))
                improved = r2 > st["best_r2"]
                if improved:
                    st["best_r2"], st["best_epoch"], st["bad_epochs"] = r2, epoch, 0
                    st["best_state"] = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
                else:
                    st["bad_epochs"] += 1
                rec = {"epoch": epoch, "step": st["step"], "train_loss": st["epoch_loss"] / max(1, st["epoch_batches"]),
                       "val_r2": r2, "val_mae": mae, "lr": self.sched.get_last_lr()[0], "seconds": st["train_seconds"]}
                st["history"].append(rec)
                self._log({"val/r2": r2, "val/mae": mae, "val/best_r2": st["best_r2"],
                           "train/epoch_loss": rec["train_loss"], "epoch": epoch}, st["step"])
                log.info("%s epoch %d step %d: train loss %.4f  val R2 %.4f  MAE %.4f%s", self.name, epoch,
                         st["step"], rec["train_loss"], r2, mae, "  *" if improved else "")
                st.update(epoch=epoch + 1, batch_in_epoch=0, epoch_loss=0.0, epoch_batches=0)
                run_epochs += 1
                _atomic_save(self._state(st), ckpt)
                if self._stop_hook(run_steps, run_epochs) and self._keep_training(st):
                    raise TrainingInterrupted(f"stopped after epoch {epoch}; checkpoint {ckpt}; rerun to resume")
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            self._stop_requested = False
            batches = None
            self.close()
        stop = ("max_epochs" if st["epoch"] >= p.max_epochs else "max_steps" if st["step"] >= self.total_steps
                else "early_stopping")
        self.net.load_state_dict(st["best_state"])
        info = {
            "epochs": st["epoch"], "steps": st["step"], "best_epoch": st["best_epoch"], "best_val_r2": st["best_r2"],
            "stopped_by": stop, "schedule_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
            "n_params": self.net.n_params(), "train_flops_per_spectrum": self.net.train_flops_per_spectrum(),
            "loop_seconds": st["train_seconds"],
            "spectra_per_s": st["seen"] / st["train_seconds"] if st["train_seconds"] else None,
            "data_wait_frac": run_wait / run_loop if run_loop else None,
            "workers": self.workers(), "amp_bf16": self.use_amp, "compiled": p.compile, "history": st["history"],
        }
        st.update(done=True, info=info)
        _atomic_save(self._state(st), ckpt)
        return {**info, "resumed_from_step": resumed_from}

    def close(self) -> None:
        """Stop the loader's worker processes."""
        self.loader = None

    def _log(self, values: dict, step: int) -> None:
        if self.tracker is not None:
            self.tracker.log(values, step=step)


class ViTTinyModel(ViTModel):
    """The CPU-sized preset (``vit-tiny``), configured under ``models.vit-tiny``."""

    name = "vit-tiny"
    Params = ViTTinyParams

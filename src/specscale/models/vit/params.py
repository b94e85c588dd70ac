"""The ViT's hyper-parameters (config ``models.vit`` / ``models.vit-tiny``) and the choices its
string options accept; values are checked when the dataclass is built, so a bad config fails
before training, naming the key."""

from __future__ import annotations

from dataclasses import dataclass

from specscale.core.config import check_fields
from specscale.core.vocab import LABELS

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
    width: int = 256  # token width (channels per token)
    depth: int = 6  # encoder blocks
    heads: int = 8  # attention heads (divide width)
    mlp: int = 1024  # hidden units of each block's MLP
    dropout: float = 0.1  # probability, on tokens, attention output and MLP output
    inputs: str = "flux"  # flux | flux+error | flux/error
    pos_encoding: str = "learned"  # learned | sinusoidal (in log lambda)
    targets: tuple[str, ...] = ("logg",)  # multi-task: add teff, mh, am
    loss: str = "mse"  # mse | mae | gaussian_nll
    # optimisation
    lr: float = 3e-4  # peak AdamW learning rate
    lr_min: float = 1e-5  # learning rate at the end of the cosine
    weight_decay: float = 1e-2  # AdamW, on matmul weights only
    warmup_frac: float = 0.02  # of the schedule's steps
    batch: int = 256  # spectra per training step
    max_epochs: int = 200
    max_steps: int = 0  # 0: no cap; else training (and the cosine) ends after this many steps
    patience: int = 20  # epochs without a better validation R^2
    grad_clip: float = 0.5  # max global gradient norm; 0: no clipping
    # hardware and data path (do not change the estimator's definition)
    amp: str = "auto"  # auto: bf16 autocast on CUDA, off on CPU | bf16 | off
    compile: bool = False  # torch.compile the network
    # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    compile_mode: str = "default"
    # stream: HDF5 -> DataLoader workers | device: the noiseless train split held in device memory
    loader: str = "stream"
    workers: int = -1  # DataLoader processes; -1: min(16, CPUs) on CUDA, min(4, CPUs - 1) on CPU
    prefetch: int = 4  # batches each worker keeps ready
    slab: int = 32  # consecutive rows read together inside a batch
    eval_batch: int = 1024  # spectra per inference batch
    log_every: int = 50  # steps between training-loss logs

    def __post_init__(self):
        check_fields(self)
        choices = {
            "inputs": tuple(INPUTS),
            "pos_encoding": POS_ENCODINGS,
            "loss": LOSSES,
            "amp": AMP_MODES,
            "loader": LOADERS,
            "compile_mode": COMPILE_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        bad = [t for t in self.targets if t not in LABELS]
        if bad or "logg" not in self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(
                f"targets={list(self.targets)} must be distinct labels from {list(LABELS)} including 'logg'"
            )
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

"""The ViT's hyper-parameters (config ``models.vit`` / ``models.vit-tiny``) and the choices its
string options accept; values are checked when the dataclass is built, so a bad config fails
before training, naming the key."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

from specscale.core.config import check_fields
from specscale.core.vocab import LABELS

INPUTS = {"flux": 1, "flux+error": 2, "flux/error": 1}  # name -> channels
POS_ENCODINGS = ("learned", "sinusoidal", "rope")
EXTRA_CHANNELS = ("d_flux", "highpass")  # derived from the observed flux, appended to the inputs
TARGETS = ("value", "binned")  # regression on z-scored labels | classification over log g bins
POOLS = ("cls", "mean")  # what the head reads: the CLS token | the mean of the patch tokens
LOSSES = ("mse", "mae", "gaussian_nll")
AMP_MODES = ("auto", "bf16", "off")
LOADERS = ("stream", "device")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class ViTParams:
    """Hyper-parameters; defaults are the study's best run (4.9M parameters)."""

    # options that enter a cell's config hash only when set away from their default, so that
    # adding them did not change the hash (and rerun) of every finished ViT cell
    hashed_if_set: ClassVar[tuple[str, ...]] = (
        "patches",
        "extra_channels",
        "highpass_pixels",
        "error_mask",
        "pool",
        "target",
        "n_bins",
        "bin_smoothing",
        "pretrain",
        "freeze",
    )

    # architecture
    patch: int = 16  # pixels per token (4096 / 16 = 256 tokens + CLS)
    width: int = 256  # token width (channels per token)
    depth: int = 6  # encoder blocks
    heads: int = 8  # attention heads (divide width)
    mlp: int = 1024  # hidden units of each block's MLP
    dropout: float = 0.1  # probability, on tokens, attention output and MLP output
    inputs: str = "flux"  # flux | flux+error | flux/error
    pos_encoding: str = "learned"  # learned | sinusoidal (in log lambda) | rope (rotary, in log lambda)
    patches: tuple[int, ...] = ()  # multi-scale tokens: () one scale (patch); else sizes, patch among them
    extra_channels: tuple[str, ...] = ()  # d_flux (d flux / d pixel) and/or highpass (flux - running mean)
    highpass_pixels: int = 65  # width of the running mean the highpass channel subtracts (odd, pixels)
    error_mask: float = 0.0  # k > 0: pixels with error > k x the spectrum's median error -> flux 0, + mask channel
    pool: str = "cls"  # cls | mean (of the patch tokens): the head's input
    targets: tuple[str, ...] = ("logg",)  # multi-task: add teff, mh, am
    loss: str = "mse"  # mse | mae | gaussian_nll
    target: str = "value"  # value | binned (log g only: cross-entropy over n_bins, predicts the expectation)
    n_bins: int = 40  # log g bins over the training labels' range (target binned)
    bin_smoothing: float = 1.0  # std of the Gaussian soft label, in bins (ordinal neighbours); 0: one-hot
    # initialisation
    pretrain: str = ""  # encoder file written by pre-training (specscale.models.vit.pretrain); "": random
    freeze: bool = False  # train only the head (a linear probe of the encoder, pre-trained or random)
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
            "target": TARGETS,
            "pool": POOLS,
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
        self._check_switches()

    def scales(self) -> tuple[int, ...]:
        """Patch sizes of the token sequence, ``patch`` first (the scale pre-training masks)."""
        return (self.patch, *(s for s in self.patches if s != self.patch))

    def pixel_multiple(self) -> int:
        """Pixels the spectrum's length must be a multiple of: every scale tiles it."""
        return math.lcm(*self.scales())

    def n_channels(self) -> int:
        """Input channels: the ``inputs``, the extra channels, and the mask channel of error_mask."""
        return INPUTS[self.inputs] + len(self.extra_channels) + (1 if self.error_mask else 0)

    def _check_switches(self):
        """The input, token, target and initialisation switches (one error per key)."""
        bad = [c for c in self.extra_channels if c not in EXTRA_CHANNELS]
        if bad or len(set(self.extra_channels)) != len(self.extra_channels):
            raise ValueError(
                f"extra_channels={list(self.extra_channels)} must be distinct names from {list(EXTRA_CHANNELS)}"
            )
        if self.pos_encoding == "rope" and (self.width // self.heads) % 2:
            raise ValueError(
                f"pos_encoding='rope' rotates channel pairs: width/heads={self.width // self.heads} must be even"
            )
        if self.highpass_pixels < 3 or self.highpass_pixels % 2 == 0:
            raise ValueError(f"highpass_pixels={self.highpass_pixels} must be an odd number >= 3")
        if self.error_mask < 0 or 0 < self.error_mask <= 1:
            raise ValueError(f"error_mask={self.error_mask} must be 0 (off) or a ratio > 1 to the median error")
        if self.patches:
            if not all(isinstance(s, int) and s >= 1 for s in self.patches) or len(set(self.patches)) != len(
                self.patches
            ):
                raise ValueError(f"patches={list(self.patches)} must be distinct integers >= 1")
            if len(self.patches) < 2 or self.patch not in self.patches:
                raise ValueError(
                    f"patches={list(self.patches)} must hold at least two sizes, patch={self.patch} among them "
                    "(patch is the scale masked and reconstructed in pre-training)"
                )
        if self.target == "binned":
            if self.targets != ("logg",) or self.loss != "mse":
                raise ValueError(
                    f"target='binned' is log g alone under cross-entropy: needs targets=['logg'] and the default "
                    f"loss, got targets={list(self.targets)}, loss={self.loss!r}"
                )
            if self.n_bins < 2:
                raise ValueError(f"n_bins={self.n_bins} must be >= 2")
            if self.bin_smoothing < 0:
                raise ValueError(f"bin_smoothing={self.bin_smoothing} must be >= 0")


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


# ---------------------------------------------------------------------------------------- pre-training
# the ViTParams the encoder's weights depend on: a fine-tune must use the same
ARCH_FIELDS = (
    "patch",
    "patches",
    "width",
    "depth",
    "heads",
    "mlp",
    "inputs",
    "extra_channels",
    "highpass_pixels",
    "error_mask",
    "pos_encoding",
)


def architecture(p: ViTParams) -> dict:
    """The architecture fields of ``p`` as plain data (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(p, k)) for k in ARCH_FIELDS)}


TASKS = ("msm", "denoise")
ENCODER_NAME = "encoder.pt"
# supervised-only switches, refused when set: pre-training has no labels and no head
SUPERVISED_ONLY = ("targets", "loss", "target", "n_bins", "bin_smoothing", "pool", "pretrain", "freeze")


@dataclass(frozen=True)
class PretrainParams(ViTParams):
    """A ViT's architecture and optimisation (``ViTParams``) plus the pre-training tasks."""

    tasks: tuple[str, ...] = ("msm",)  # msm (masked-spectrum modelling) and/or denoise
    mask_frac: float = 0.3  # fraction of the patch tokens hidden per spectrum (msm)
    val_spectra: int = 1000  # validation spectra scored each epoch (fixed noise and mask)
    patience: int = 0  # 0: the whole schedule (a falling validation loss is not a stopping rule here)

    def __post_init__(self):
        super().__post_init__()
        bad = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or bad or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks={list(self.tasks)} must be distinct names from {list(TASKS)}")
        if "msm" in self.tasks and not 0 < self.mask_frac < 1:
            raise ValueError(f"mask_frac={self.mask_frac} must be in (0, 1)")
        if self.val_spectra < 1:
            raise ValueError(f"val_spectra={self.val_spectra} must be >= 1")
        default = ViTParams()
        for name in SUPERVISED_ONLY:
            if getattr(self, name) != getattr(default, name):
                raise ValueError(f"{name}={getattr(self, name)!r} is a supervised setting: pre-training has none")

    @classmethod
    def like(cls, vit: ViTParams, **overrides) -> PretrainParams:
        """Pre-training params for the architecture of ``vit`` (the model to fine-tune), its
        supervised-only settings reset, ``overrides`` (pre-training's own settings) on top."""
        base = {f.name: getattr(vit, f.name) for f in fields(ViTParams) if f.name not in SUPERVISED_ONLY}
        return cls(**{**base, **overrides})

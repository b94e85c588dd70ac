"""Self-supervised pre-training of the ViT encoder on a source's training spectra, without labels
(the study's Route C, questions Q4.1 and Q4.2), and the encoder file it hands to fine-tuning.

Tasks (``PretrainParams.tasks``, one or both, summed):
- ``msm``, masked-spectrum modelling: a fraction ``mask_frac`` of the ``patch`` patches is hidden
  (their pixels zeroed for every tokenizer, their tokens replaced by a learned mask token) and the
  encoder's tokens there reconstruct the OBSERVED flux of the hidden pixels (what a real survey has;
  the best guess of a noisy pixel is its noiseless flux, so the target's noise only adds a constant).
- ``denoise``: noisy flux in, the NOISELESS flux out, on the visible pixels (every pixel without msm).
Both losses weight each pixel by its inverse variance 1 / (sigma^2 + 1e-6) (normalised over the
pixels counted), so the sky lines, where the noise is huge, do not dominate.

The loop is the supervised trainer's (``ViTModel``): noise drawn per step on the device from (dataset,
seed, step), the mask likewise, the same loader, W&B through ``tracker``, atomic checkpoints every
epoch, exact resume, TrainingInterrupted after a checkpoint on SIGTERM/SIGUSR1 (the command maps it
to exit 75), ``weights_only`` loading. The best validation epoch's encoder (lowest validation loss;
with ``patience: 0`` the run's whole schedule) is written to ``WORKDIR/encoder.pt``
(``encoder_file``); a supervised ViT starts from it with ``pretrain: PATH`` (its head fresh) and
``freeze: true`` makes it a linear probe.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from specscale.core.config import ConfigError
from specscale.core.vocab import Cell
from specscale.data.loader import batch_variances
from specscale.data.sources import Source
from specscale.data.streams import seed_key
from specscale.models.vit.channels import model_input
from specscale.models.vit.encoder_file import save_encoder
from specscale.models.vit.network import SpectrumViT
from specscale.models.vit.params import ENCODER_NAME, PretrainParams
from specscale.models.vit.state import RunCounters, TrainState
from specscale.models.vit.trainer import ViTModel
from specscale.sim.observe import observe

VAR_FLOOR = 1e-6  # added to sigma^2 in the weights: finite at noise level 0


class PretrainNet(nn.Module):
    """An encoder (``SpectrumViT`` without head), a learned mask token and a linear reconstruction
    head: (B, channels, n_pix) spectra and a (B, n_pix / patch) patch mask -> (B, n_pix) predicted
    flux - 1 (from the ``patch`` tokens)."""

    def __init__(self, p: PretrainParams, wave: np.ndarray):
        super().__init__()
        self.vit = SpectrumViT(p, wave, n_out=0)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, p.width))
        self.recon = nn.Linear(p.width, p.patch)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.recon.weight, std=0.02)
        nn.init.zeros_(self.recon.bias)

    def forward(self, x, mask=None):
        t = self.vit.encode(x, mask, self.mask_token)[:, 1 : 1 + self.vit.scale_tokens[0]]
        return self.recon(t).flatten(1)

    def n_params(self) -> int:
        return sum(q.numel() for q in self.parameters())

    def train_flops_per_spectrum(self) -> float:
        return self.vit.train_flops_per_spectrum() + 6.0 * self.recon.weight.numel() * self.vit.scale_tokens[0]


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(w (pred - target)^2) / sum(w) over all pixels (w = 0 leaves a pixel out)."""
    return (weight * (pred - target) ** 2).sum() / weight.sum().clamp_min(1e-12)


class Pretrainer(ViTModel):
    """Trains ``PretrainNet`` with the supervised loop (see the module docstring)."""

    name = "vit-pretrain"
    Params = PretrainParams

    def __init__(self, params, *, seed: int, device: str = "cpu", n_threads: int = 1):
        super().__init__(params, seed=seed, device=device, n_threads=n_threads)
        self.n_out = 0

    def make_network(self, wave: np.ndarray) -> nn.Module:
        self.init_id = None
        return PretrainNet(self.params, wave)

    def build(self, source: Source, cell: Cell) -> None:
        """The trainer's setup, plus the mask stream and the fixed validation set."""
        super().build(source, cell)
        p = self.params
        self.n_patches = self.net.vit.scale_tokens[0]
        self.mask_key = seed_key("vit-pretrain-mask", self.dataset_id, self.seed) & (2**62 - 1)
        n_val = min(p.val_spectra, source.n("val"))
        rows = np.arange(n_val)
        obs = source.observed("val", rows, self.mag, cell.noise)
        clean = source.noiseless("val", rows, self.mag, variances=False).flux
        cols = slice(None) if self.pixels is None else self.pixels
        self.val = {
            "x": self.observed_inputs(obs),
            "obs": torch.from_numpy(np.ascontiguousarray(obs.flux[:, cols])),
            "clean": torch.from_numpy(np.ascontiguousarray(clean[:, cols])),
            "sigma": torch.from_numpy(np.ascontiguousarray(obs.sigma[:, cols])),
            "mask": self.patch_mask(n_val, seed_key("vit-pretrain-val-mask", self.dataset_id) & (2**62 - 1), "cpu"),
        }

    def patch_mask(self, n: int, key: int, device=None) -> torch.Tensor | None:
        """(n, n_patches) bool, exactly round(mask_frac x n_patches) patches hidden per spectrum,
        drawn from ``key``; None without the msm task."""
        if "msm" not in self.params.tasks:
            return None
        dev = self.dev if device is None else torch.device(device)
        gen = torch.Generator(device=dev)
        gen.manual_seed(key)
        score = torch.rand((n, self.n_patches), generator=gen, device=dev)
        k = max(1, round(self.params.mask_frac * self.n_patches))
        return torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(k, dim=1).indices, True)

    def objective(self, pred, obs, clean, sigma, mask) -> dict[str, torch.Tensor]:
        """The tasks' losses (and their sum, "loss") for predicted flux - 1 ``pred`` (B, n_pix)."""
        weight = 1.0 / (sigma.float() ** 2 + VAR_FLOOR)
        hidden = torch.zeros_like(weight) if mask is None else mask.repeat_interleave(self.params.patch, 1).float()
        parts = {}
        if "msm" in self.params.tasks:
            parts["msm"] = weighted_mse(pred, obs - 1.0, weight * hidden)
        if "denoise" in self.params.tasks:
            parts["denoise"] = weighted_mse(pred, clean - 1.0, weight * (1.0 - hidden))
        parts["loss"] = sum(parts.values())
        return parts

    def train_step(self, batch: dict, step: int) -> torch.Tensor:
        """One optimiser step: noise and patch mask drawn on the device for this step."""
        p, dev = self.params, self.dev
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        flux = batch["flux"]
        var_a, var_b = batch_variances(batch, self._var_basis)
        obs, err, sigma = observe(flux, var_a, var_b, self.cell.noise, self.step_normals(flux.shape, step))
        if self._pixels is not None:
            obs, err, sigma, flux = (a.index_select(1, self._pixels) for a in (obs, err, sigma, flux))
        mask = self.patch_mask(flux.shape[0], self.mask_key + step)
        with self.autocast():
            pred = self.fwd(model_input(p, obs, err), mask)
        loss = self.objective(pred.float(), obs, flux, sigma, mask)["loss"]
        return self.optimise(loss)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation scores at fixed noise and mask: the losses, and on the hidden pixels the RMS
        error against the noiseless flux (``msm_rmse``), the RMS noise there (``msm_sigma``) and
        their ratio per pixel (``msm_chi``: sqrt(mean((pred - noiseless)^2 / sigma^2)); below 1 the
        reconstruction beats the pixel's own noisy value; ``msm_chi_flat`` is that of the flat
        continuum, flux 1, the guess to beat); ``denoise_*`` likewise on the visible pixels."""
        self.net.eval()
        v, b = self.val, self.params.eval_batch
        sums: dict[str, float] = {}
        for i in range(0, v["x"].shape[0], b):
            part = {k: (None if t is None else t[i : i + b].to(self.dev)) for k, t in v.items()}
            with self.autocast():
                pred = self.net(part["x"], part["mask"]).float()
            losses = self.objective(pred, part["obs"], part["clean"], part["sigma"], part["mask"])
            n = part["x"].shape[0]
            hidden = (
                torch.zeros_like(pred, dtype=torch.bool)
                if part["mask"] is None
                else part["mask"].repeat_interleave(self.params.patch, 1)
            )
            err2, sig2 = (pred - (part["clean"] - 1.0)) ** 2, part["sigma"] ** 2
            chi2 = err2 / (sig2 + VAR_FLOOR)
            chi2_flat = (part["clean"] - 1.0) ** 2 / (sig2 + VAR_FLOOR)  # the flat-continuum guess
            for name, sel in (("msm", hidden), ("denoise", ~hidden)):
                for key, val in (("err2", err2), ("sig2", sig2), ("chi2", chi2), ("chi2flat", chi2_flat)):
                    sums[f"{name}_{key}"] = sums.get(f"{name}_{key}", 0.0) + float(val[sel].sum())
                sums[f"{name}_n"] = sums.get(f"{name}_n", 0.0) + float(sel.sum())
            for k, loss in losses.items():
                sums[f"loss_{k}"] = sums.get(f"loss_{k}", 0.0) + float(loss) * n
        self.net.train()
        n_val = v["x"].shape[0]
        out = {k[5:]: s / n_val for k, s in sums.items() if k.startswith("loss_")}
        for name in ("msm", "denoise"):
            n = sums[f"{name}_n"]
            if n:
                out |= {
                    f"{name}_rmse": (sums[f"{name}_err2"] / n) ** 0.5,
                    f"{name}_sigma": (sums[f"{name}_sig2"] / n) ** 0.5,
                    f"{name}_chi": (sums[f"{name}_chi2"] / n) ** 0.5,
                    f"{name}_chi_flat": (sums[f"{name}_chi2flat"] / n) ** 0.5,
                }
        return out

    def _validate(self, state: TrainState, val_x, val_y) -> None:
        """Score the epoch (``evaluate``), keep the weights of the lowest validation loss (the
        state's best_r2 holds minus that loss: higher is better), log the epoch's record."""
        scores = self.evaluate()
        if -scores["loss"] > state.best_r2:
            state.best_r2, state.best_epoch, state.bad_epochs = -scores["loss"], state.epoch, 0
            state.best_state = {k: t.detach().to("cpu", copy=True) for k, t in self.net.state_dict().items()}
        else:
            state.bad_epochs += 1
        rec = {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": state.epoch_loss / max(1, state.epoch_batches),
            **{f"val_{k}": s for k, s in scores.items()},
            "lr": self.sched.get_last_lr()[0],
            "seconds": state.train_seconds,
        }
        state.history.append(rec)
        self._log({**{f"val/{k}": s for k, s in scores.items()}, "train/epoch_loss": rec["train_loss"]}, state.step)

    def _finish(self, state: TrainState, run: RunCounters, ckpt: Path) -> dict:
        """Load the best epoch's weights, write the encoder file beside the checkpoint, then record
        the run as done in the checkpoint (a rerun then returns at once)."""
        self.net.load_state_dict(state.best_state)
        info = {
            "epochs": state.epoch,
            "steps": state.step,
            "best_epoch": state.best_epoch,
            "best_val_loss": -state.best_r2,
            "schedule_steps": self.total_steps,
            "n_spectra": self.cell.n_train,
            "tasks": list(self.params.tasks),
            "n_params": self.net.n_params(),
            "train_flops_per_spectrum": self.net.train_flops_per_spectrum(),
            "loop_seconds": state.train_seconds,
            "spectra_per_s": state.seen / state.train_seconds if state.train_seconds else None,
            "data_wait_frac": run.wait_seconds / run.loop_seconds if run.loop_seconds else None,
            "history": state.history,
        }
        n_pix = self.net.vit.scale_tokens[0] * self.params.patch
        save_encoder(ckpt.parent / ENCODER_NAME, self.net.vit, self.params, n_pix, self.fingerprint, info)
        state.done, state.info = True, info
        self.save_checkpoint(state, ckpt)
        return info

    def predict(self, observed):
        raise TypeError("a pre-training run predicts no labels: fine-tune a ViT from its encoder (pretrain: PATH)")


def pretrain(
    source: Source,
    params: PretrainParams,
    *,
    n_spectra: int,
    noise: float,
    mag: str,
    seed: int,
    workdir: Path,
    device: str = "cpu",
    n_threads: int = 1,
    tracker=None,
) -> dict:
    """Pre-train on the first ``n_spectra`` training spectra of ``source`` at ``noise`` (level)
    and magnitude cell ``mag`` (HSC-i AB); resumes from ``workdir/checkpoint.pt``; writes
    ``workdir/encoder.pt``. Returns the run's summary with ``encoder`` (its path). Raises
    TrainingInterrupted after checkpointing when stopped by a signal (exit 75 in a command)."""
    if not 1 <= n_spectra <= source.n("train"):
        raise ConfigError(f"n_spectra={n_spectra} must be in 1..{source.n('train')} (the source's training spectra)")
    model = Pretrainer(params, seed=seed, device=device, n_threads=n_threads)
    model.tracker = tracker
    workdir = Path(workdir)
    t0 = time.perf_counter()
    info = model.fit(source, Cell(noise, mag, "pretrain", n_spectra, seed), workdir)
    return {**info, "encoder": str(workdir / ENCODER_NAME), "wall_seconds": time.perf_counter() - t0}

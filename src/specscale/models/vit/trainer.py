"""Training the ViT as a sweep model: ``ViTModel.fit`` builds the network, optimiser, schedule and
loader for a cell, then trains epoch by epoch with fresh noise every step, validates after each
epoch and checkpoints, so a preempted run resumes exactly (see the package docstring).

Reading order: ``ViTModel``: setup (``build``), one step (``train_step``), prediction and
checkpoints; the training state is in :mod:`specscale.models.vit.state`, the loop (``fit`` ->
``_train_epoch`` -> ``_end_epoch`` -> ``_finish``) in :mod:`specscale.models.vit.loop`.
"""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from specscale.core.config import ConfigError, config_hash
from specscale.core.files import atomic_write
from specscale.core.vocab import LABELS, Cell, MagRange
from specscale.data.loader import MemoryBatches, SlabBatchSampler, batch_variances, close_loader, train_loader
from specscale.data.sources import Observed, Source
from specscale.data.streams import seed_key
from specscale.models.base import Model
from specscale.models.vit.channels import model_input
from specscale.models.vit.encoder_file import load_encoder
from specscale.models.vit.loop import TrainingLoop
from specscale.models.vit.network import SpectrumViT, weight_decayed
from specscale.models.vit.params import ViTParams, ViTTinyParams
from specscale.models.vit.state import TrainState, lr_factor
from specscale.models.vit.targets import make_target, output_width
from specscale.sim.observe import observe
from specscale.sim.windows import window_pixels

log = logging.getLogger(__name__)


class ViTModel(TrainingLoop, Model):
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
        return self.optimise(loss)

    def optimise(self, loss: torch.Tensor) -> torch.Tensor:
        """One optimiser step on ``loss``: gradients, the clip, AdamW and the schedule; the loss, detached."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.params.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.params.grad_clip)
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

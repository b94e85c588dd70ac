"""The emulator: The Payne's recipe (Ting et al. 2019), a small fully connected net from the four
labels to the 4096 normalised PFS pixels plus ln fmed0, fitted to the synthesised stars and
written as a plain ``.npz`` (never a pickle) that the runtime reader in
``specscale.sim.emulator`` evaluates.

Net: x = (theta - x_lo) / (x_hi - x_lo) - 0.5 over the prior box; h0 = SiLU(x @ w0.T + b0);
h1 = SiLU(h0 @ w1.T + b1); y = h1 @ w2.T + b2; output = y_mean + y_scale * y, where y_mean and
y_scale standardise each output over the training stars. Loss: mean squared standardised error;
Adam with a cosine learning-rate decay; the weights with the best validation loss are kept and
the fit stops after ``patience`` epochs without improvement. Deterministic for a seed.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np

from specscale.sim.emulator import EmulatorNet, EmulatorWeights
from specscale.sim.emulator import write_emulator as write_file
from specscale.synth.config import SynthesisConfig

log = logging.getLogger(__name__)

NPZ_KEYS = ("w0", "b0", "w1", "b1", "w2", "b2", "x_lo", "x_hi", "y_mean", "y_scale", "wave", "provenance")


def _net(n_in: int, hidden: int, n_out: int):
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden),
        torch.nn.SiLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.SiLU(),
        torch.nn.Linear(hidden, n_out),
    )


def as_weights(params: dict[str, np.ndarray], wave: np.ndarray) -> EmulatorWeights:
    """The fitted arrays as the runtime's :class:`EmulatorWeights` (pixel centres ``wave``, A)."""
    n = len([k for k in params if re.fullmatch(r"w\d+", k)])
    return EmulatorWeights(
        weights=tuple(params[f"w{k}"] for k in range(n)),
        biases=tuple(params[f"b{k}"] for k in range(n)),
        **{k: np.asarray(params[k]) for k in ("x_lo", "x_hi", "y_mean", "y_scale")},
        wave=np.asarray(wave, dtype=np.float64),
        provenance={},
    )


def predict(params: dict[str, np.ndarray], theta: np.ndarray) -> np.ndarray:
    """The emulator's outputs (n, n_out) float64 at labels ``theta`` (n, 4), through the runtime's
    own forward pass (:class:`specscale.sim.emulator.EmulatorNet`)."""
    import torch

    n_pix = np.asarray(params["y_mean"]).size - 1
    net = EmulatorNet(as_weights(params, np.zeros(n_pix)))
    with torch.no_grad():
        return net.outputs(torch.as_tensor(np.atleast_2d(theta), dtype=torch.float64)).numpy()


def targets(data: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 4097) float64: normalised flux then ln fmed0."""
    return np.concatenate([data["flux"].astype(np.float64), data["ln_fmed0"][:, None]], axis=1)


def fit(config: SynthesisConfig, labels: np.ndarray, y: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Fit the net to (labels (n, 4), y (n, 4097)); returns the npz arrays (no wave/provenance)
    and a summary of the fit (epochs, losses, seconds)."""
    import torch

    torch.manual_seed(config.seed_fit)
    rng = np.random.default_rng(config.seed_fit)
    box = np.asarray(config.box, dtype=np.float64)
    x_lo, x_hi = box[:, 0], box[:, 1]
    y_mean = y.mean(0)
    y_scale = y.std(0)
    y_scale = np.where(y_scale > 1e-8, y_scale, 1.0)
    x = (labels - x_lo) / (x_hi - x_lo) - 0.5
    z = (y - y_mean) / y_scale
    n_val = int(round(config.val_fraction * len(x))) if len(x) >= 10 else 0
    perm = rng.permutation(len(x))
    val, tr = perm[:n_val], perm[n_val:]
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)
    x_tr, z_tr, x_val, z_val = t(x[tr]), t(z[tr]), t(x[val]), t(z[val])
    net = _net(x.shape[1], config.hidden, y.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    best, best_epoch, best_state = np.inf, 0, None
    start = time.time()
    train_loss = np.nan
    for epoch in range(config.epochs):
        opt.zero_grad()
        loss = torch.mean((net(x_tr) - z_tr) ** 2)
        loss.backward()
        opt.step()
        sched.step()
        train_loss = float(loss.detach())
        if epoch % 20 == 0 or epoch == config.epochs - 1:
            with torch.no_grad():
                v = float(torch.mean((net(x_val) - z_val) ** 2)) if n_val else train_loss
            if v < best:
                best, best_epoch = v, epoch
                best_state = {k: p.detach().clone() for k, p in net.state_dict().items()}
            if epoch % 1000 == 0:
                log.info(
                    "epoch %d: train %.3g, validation %.3g (best %.3g at %d)", epoch, train_loss, v, best, best_epoch
                )
            if epoch - best_epoch > config.patience:
                log.info("no better validation loss for %d epochs: stopped at %d", config.patience, epoch)
                break
    net.load_state_dict(best_state)
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    params = {}
    for k, layer in enumerate(layers):
        params[f"w{k}"] = layer.weight.detach().numpy().astype(np.float32)
        params[f"b{k}"] = layer.bias.detach().numpy().astype(np.float32)
    params.update(
        x_lo=x_lo, x_hi=x_hi, y_mean=y_mean.astype(np.float32), y_scale=y_scale.astype(np.float32)
    )  # fmt: skip
    summary = {
        "epochs_run": epoch + 1,
        "best_epoch": best_epoch,
        "train_loss_last": train_loss,
        "val_loss_best": best,
        "n_fit": int(len(tr)),
        "n_validation": int(n_val),
        "seconds": round(time.time() - start, 1),
        "optimiser": f"Adam lr {config.learning_rate:g}, cosine over {config.epochs} epochs, full batch",
    }
    return params, summary


def residual_stats(params: dict[str, np.ndarray], labels: np.ndarray, y: np.ndarray) -> dict:
    """|emulated - synthesised| over the held-out stars and flux pixels (median, p99, max), the
    per-pixel median's worst pixel, and ln fmed0's (median, max)."""
    pred = predict(params, labels)
    err = np.abs(pred - y)
    flux_err = err[:, :-1]
    return {
        "n_test": int(len(labels)),
        "flux_abs_median": float(np.median(flux_err)),
        "flux_abs_p99": float(np.percentile(flux_err, 99)),
        "flux_abs_max": float(flux_err.max()),
        "flux_per_pixel_median_worst": float(np.median(flux_err, axis=0).max()),
        "ln_fmed0_abs_median": float(np.median(err[:, -1])),
        "ln_fmed0_abs_max": float(err[:, -1].max()),
    }


def write_emulator(params: dict[str, np.ndarray], wave: np.ndarray, provenance: dict, out: str | Path) -> Path:
    """Write the fitted arrays as an emulator file (:func:`specscale.sim.emulator.write_emulator`:
    atomic, checked on the way out, loads with ``allow_pickle=False``)."""
    e = as_weights(params, wave)
    out = Path(out)
    write_file(out, e.weights, e.biases, e.x_lo, e.x_hi, e.y_mean, e.y_scale, e.wave, provenance)
    return out

"""An emulator of synthesised spectra: a small MLP from the four labels to the PFS pixels (The
Payne's recipe, Ting et al. 2019), stored as ``.npz`` (read with ``allow_pickle=False``).

The file holds the layers ``w0, b0, w1, b1, ...`` (float32; layer k maps x -> x @ w_k.T + b_k,
SiLU between layers, none after the last), the label box ``x_lo, x_hi`` (float64, label order
Teff K, log g dex, [M/H] dex, [alpha/M] dex: the network sees (theta - x_lo) / (x_hi - x_lo) - 0.5),
the output scaling ``y_mean, y_scale`` (the output is y_mean + y_scale * net(x)), the pixel centres
``wave`` (vacuum A) and ``provenance`` (a JSON string: the codes, inputs and measured accuracy of
the spectra it was trained on). Outputs 0..n_pix-1 are the median-normalised PFS flux on ``wave``,
the last one ln(fmed0): fmed0 the arm's median f_lambda in erg s^-1 cm^-2 A^-1 for the star scaled
to HSC-i AB magnitude 0, as :class:`specscale.sim.atmosphere_base.PfsStages` defines it.

:func:`write_emulator` writes such a file (``specscale synth train`` trains one), :func:`read_emulator`
checks one (every key, shape and value finite, errors naming the file and the key) and
:class:`EmulatorNet` evaluates it in torch, batched and differentiable.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specscale.core.files import atomic_write

FIXED_KEYS = ("x_lo", "x_hi", "y_mean", "y_scale", "wave", "provenance")


class EmulatorFileError(ValueError):
    """An emulator file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class EmulatorWeights:
    """What an emulator file holds (module docstring); ``sha256`` of the file's bytes."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    x_lo: np.ndarray
    x_hi: np.ndarray
    y_mean: np.ndarray
    y_scale: np.ndarray
    wave: np.ndarray
    provenance: dict
    sha256: str = ""

    @property
    def n_out(self) -> int:
        return self.y_mean.size

    @property
    def n_pix(self) -> int:
        return self.wave.size


def write_emulator(path, weights, biases, x_lo, x_hi, y_mean, y_scale, wave, provenance: dict) -> str:
    """Write an emulator file atomically (temporary file, then rename); returns its sha256."""
    path = Path(path)
    arrays = {f"w{k}": np.asarray(w, np.float32) for k, w in enumerate(weights)}
    arrays |= {f"b{k}": np.asarray(b, np.float32) for k, b in enumerate(biases)}
    arrays |= {
        "x_lo": np.asarray(x_lo, np.float64),
        "x_hi": np.asarray(x_hi, np.float64),
        "y_mean": np.asarray(y_mean, np.float32),
        "y_scale": np.asarray(y_scale, np.float32),
        "wave": np.asarray(wave, np.float64),
        "provenance": np.array(json.dumps(provenance, sort_keys=True)),
    }
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        _check(_load(tmp, path), path)  # what is written must read back
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_emulator(path) -> EmulatorWeights:
    """The checked contents of an emulator file (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise EmulatorFileError(f"emulator file {path} does not exist")
    weights = _load(path, path)
    _check(weights, path)
    return weights


def _load(path: Path, name: Path) -> EmulatorWeights:
    raw = path.read_bytes()
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:  # not an npz, or an object array (a pickle): refused
        raise EmulatorFileError(f"emulator file {name}: not a readable .npz of plain arrays ({exc})") from exc
    missing = [k for k in FIXED_KEYS if k not in arrays]
    if missing:
        raise EmulatorFileError(f"emulator file {name}: missing key(s) {missing}")
    n_layers = len([k for k in arrays if re.fullmatch(r"w\d+", k)])
    layer_keys = [f"{p}{k}" for k in range(n_layers) for p in "wb"]
    if n_layers < 1 or any(k not in arrays for k in layer_keys):
        raise EmulatorFileError(f"emulator file {name}: layers must be w0, b0, w1, b1, ... (found {sorted(arrays)})")
    try:
        provenance = json.loads(str(arrays["provenance"]))
    except json.JSONDecodeError as exc:
        raise EmulatorFileError(f"emulator file {name}: key 'provenance' is not JSON ({exc})") from exc
    return EmulatorWeights(
        weights=tuple(arrays[f"w{k}"] for k in range(n_layers)),
        biases=tuple(arrays[f"b{k}"] for k in range(n_layers)),
        **{k: arrays[k] for k in ("x_lo", "x_hi", "y_mean", "y_scale", "wave")},
        provenance=provenance,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _check(e: EmulatorWeights, name: Path) -> None:
    """Shapes chain from 4 labels to n_out outputs; every value finite; the box not empty."""
    n_in = 4
    for k, (w, b) in enumerate(zip(e.weights, e.biases)):
        if w.ndim != 2 or w.shape[1] != n_in or b.shape != (w.shape[0],):
            raise EmulatorFileError(
                f"emulator file {name}: w{k} {w.shape} / b{k} {b.shape} do not take {n_in} inputs to one output per row"
            )
        n_in = w.shape[0]
    shapes = {"x_lo": (4,), "x_hi": (4,), "y_mean": (n_in,), "y_scale": (n_in,), "wave": (n_in - 1,)}
    for key, shape in shapes.items():
        if getattr(e, key).shape != shape:
            raise EmulatorFileError(f"emulator file {name}: key {key!r} has shape {getattr(e, key).shape}, not {shape}")
    named = {f"w{k}": w for k, w in enumerate(e.weights)} | {f"b{k}": b for k, b in enumerate(e.biases)}
    named |= {k: getattr(e, k) for k in shapes}
    for key, a in named.items():
        if a.dtype.kind != "f" or not np.isfinite(a).all():
            raise EmulatorFileError(f"emulator file {name}: key {key!r} must hold finite floats (NaN or inf found)")
    if not (e.x_hi > e.x_lo).all():
        raise EmulatorFileError(f"emulator file {name}: x_hi must exceed x_lo for every label")


class EmulatorNet:
    """The emulator in torch: ``outputs(theta)`` (B, n_out) for labels theta (B, 4), any float
    dtype and device, differentiable (forward and reverse mode)."""

    def __init__(self, weights: EmulatorWeights):
        self.weights = weights
        self._cache: dict = {}

    def _tensors(self, dtype, device) -> dict:
        key = (dtype, str(device))
        if key not in self._cache:
            e = self.weights
            t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
            self._cache[key] = {
                "layers": [(t(w).T.contiguous(), t(b)) for w, b in zip(e.weights, e.biases)],
                "x_lo": t(e.x_lo),
                "x_span": t(e.x_hi - e.x_lo),
                "y_mean": t(e.y_mean),
                "y_scale": t(e.y_scale),
            }
        return self._cache[key]

    def outputs(self, theta: torch.Tensor) -> torch.Tensor:
        T = self._tensors(theta.dtype, theta.device)
        x = (theta - T["x_lo"]) / T["x_span"] - 0.5
        layers = T["layers"]
        for w_t, b in layers[:-1]:
            x = torch.nn.functional.silu(torch.addmm(b, x, w_t))
        w_t, b = layers[-1]
        return torch.addcmul(T["y_mean"], T["y_scale"], torch.addmm(b, x, w_t))

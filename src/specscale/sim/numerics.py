"""Generic numerics of the synthetic atmospheres (both versions): a sparse matrix product with
reverse- and forward-mode derivatives, a smooth median for the flux normalisation, the
pseudo-Voigt line profile and the smooth taper of a line's window."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch


def csr_tensor(a, dtype, device) -> torch.Tensor:
    """A scipy sparse matrix as a torch CSR tensor of ``dtype`` on ``device``."""
    with warnings.catch_warnings():  # torch flags sparse CSR as beta
        warnings.simplefilter("ignore", UserWarning)
        a = a.tocoo()
        idx = torch.as_tensor(np.vstack([a.row, a.col]), device=device)
        coo = torch.sparse_coo_tensor(idx, torch.as_tensor(a.data, dtype=dtype, device=device), a.shape)
        return coo.coalesce().to_sparse_csr()


def sparse_operator(a, dtype, device):
    """A fixed sparse map for :class:`SparseMatmul`: scipy CSR on the CPU (its kernel is ~3x
    torch's there on version 2's per-line map, same results), a torch CSR tensor elsewhere."""
    if torch.device(device).type == "cpu":
        return a.astype(torch.empty(0, dtype=dtype).numpy().dtype).tocsr()
    return csr_tensor(a, dtype, device)


def _matmul(m, x: torch.Tensor) -> torch.Tensor:
    """m @ x for a torch CSR tensor or a scipy CSR matrix (CPU, x's dtype)."""
    if isinstance(m, torch.Tensor):
        return m @ x
    return torch.from_numpy(m @ x.detach().numpy())


class SparseMatmul(torch.autograd.Function):
    """y = M @ x for a fixed sparse CSR M and a dense x (n_in, R), with reverse- and forward-mode
    derivatives (torch's CSR matmul has no forward-mode AD). M (and its transpose) is a torch CSR
    tensor or, on the CPU, a scipy CSR matrix (:func:`sparse_operator`). The simulator keeps the
    fine-grid axis first so that x is contiguous in the layout the CSR kernels are fast on (a
    transposed operand costs ~4x)."""

    @staticmethod
    def forward(x, m, mt):
        return _matmul(m, x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.m, ctx.mt = inputs

    @staticmethod
    def backward(ctx, g):
        return _matmul(ctx.mt, g.contiguous()), None, None

    @staticmethod
    def jvp(ctx, x_t, m_t, mt_t):
        return _matmul(ctx.m, x_t.contiguous())


def _newton_median(m: torch.Tensor, x: torch.Tensor, width: float) -> torch.Tensor:
    """One Newton step towards the root m of mean(sigmoid((x - m) / width)) = 1/2; m (..., 1)."""
    z = torch.sigmoid((x - m) / width)
    g = z.mean(-1, keepdim=True) - 0.5
    dg = (z * (1 - z)).mean(-1, keepdim=True) / width
    return m + g / dg


def _converged_median(x: torch.Tensor, width: float, iterations: int) -> torch.Tensor:
    """The detached Newton iterate (..., 1) from the exact median."""
    n = x.shape[-1]
    xd = x.detach()
    m = torch.kthvalue(xd, (n + 1) // 2, dim=-1).values[..., None]
    for _ in range(iterations):
        m = _newton_median(m, xd, width)
    return m


def smoothed_median(x: torch.Tensor, width: float, iterations: int = 3) -> torch.Tensor:
    """A smooth median along the last axis: the root m of mean(sigmoid((x - m) / width)) = 1/2,
    found by Newton steps from the exact median.

    The value stays within ~width of the median, but it is a smooth function of x: its derivative
    is the sigmoid-weighted mean of the pixels near the median (implicit function theorem, given by
    the last, attached Newton step), so it has no jumps when the median pixel changes.
    """
    return _newton_median(_converged_median(x, width, iterations), x, width)[..., 0]


def smoothed_median_jvp(x: torch.Tensor, dx: torch.Tensor, width: float, iterations: int = 3):
    """``smoothed_median(x)`` (B,) and its directional derivatives (K, B) along tangents dx (K, B, n):
    the exact derivative of the attached last Newton step, written out (what forward-mode AD gives)."""
    m = _converged_median(x, width, iterations)
    z = torch.sigmoid((x - m) / width)
    zz = z * (1 - z)
    g = z.mean(-1) - 0.5
    dg = zz.mean(-1) / width
    d_g = (zz * dx).mean(-1) / width
    d_dg = ((1 - 2 * z) * zz * dx).mean(-1) / width**2
    return m[..., 0] + g / dg, d_g / dg - g * d_dg / dg**2


def pseudo_voigt_terms(area, f_g, f_l):
    """Thompson-Cox-Hastings pseudo-Voigt (~1% of a Voigt) of lines of ``area`` (A) with Gaussian
    and Lorentzian FWHMs ``f_g``, ``f_l`` (A): the coefficients (a_g, c_g, a_l, c_l) of the profile
    a_g exp(c_g x^2) + a_l / (c_l x^2 + 1/4) at offset x (A) from the line centre."""
    f5 = (
        f_g**5
        + 2.69269 * f_g**4 * f_l
        + 2.42843 * f_g**3 * f_l**2
        + 4.47163 * f_g**2 * f_l**3
        + 0.07842 * f_g * f_l**4
        + f_l**5
    )
    inv_w = f5**-0.2  # 1 / FWHM
    q = f_l * inv_w
    eta = q * (1.36603 - q * (0.47719 - 0.11116 * q))
    a_g = area * (1 - eta) * math.sqrt(4 * math.log(2) / math.pi) * inv_w
    a_l = area * eta * 0.5 / math.pi * inv_w
    return a_g, -4 * math.log(2) * inv_w**2, a_l, inv_w**2


def window_taper(r: np.ndarray) -> np.ndarray:
    """Smooth taper of a line window at r = |offset| / half-width: 1 inside r < 0.6, a raised
    cosine to 0 at r = 1 (so a windowed profile has no step at the window's edge)."""
    return np.where(r < 0.6, 1.0, 0.5 * (1 + np.cos(np.pi * np.clip((r - 0.6) / 0.4, 0, 1))))


def band_envelope(wave: np.ndarray, head_vac: float, amp: float, length: float) -> np.ndarray:
    """Smooth molecular band envelope (optical depth at unit strength) on ``wave`` (vacuum A):
    a tanh step of 1.2 A at the band head ``head_vac``, then an exponential fall of e-fold
    ``length`` A to the red."""
    x = wave - head_vac
    return amp * 0.5 * (1.0 + np.tanh(x / 1.2)) * np.exp(-np.clip(x, 0, None) / length)


def mean_over_bins(wave: np.ndarray, flux: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of the linear interpolant of samples (wave, flux) over each bin [edges[i], edges[i+1]],
    integrated exactly (the samples inside each bin and its two ends; local sums, so deep line
    cores keep their precision). ``wave`` ascending, covering the edges; ``flux`` (n_wave,) or
    (n_rows, n_wave) -> (n_bins,) or (n_rows, n_bins). Flux-conserving: what a model grid's or a
    synthesis code's spectra are binned onto the fine grid with."""
    inner = wave[(wave > edges[0]) & (wave < edges[-1])]
    points = np.union1d(inner, edges)
    starts = np.searchsorted(points, edges[:-1])  # first segment of each bin
    at = np.stack([np.interp(points, wave, row) for row in np.atleast_2d(flux)])
    seg = 0.5 * (at[:, 1:] + at[:, :-1]) * np.diff(points)
    out = np.add.reduceat(seg, starts, axis=1) / np.diff(edges)
    return out[0] if np.ndim(flux) == 1 else out

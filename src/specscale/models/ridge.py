"""Ridge regression of log g on standardised flux, streamed: memory O(pixels^2), never O(N x pixels).

One pass over the training stars accumulates, in float64,
    n,  s = sum_i (x_i - c),  G = sum_i (x_i - c)(x_i - c)^T,  r = sum_i (x_i - c) y_i,  sum_i y_i
where c is the first chunk's mean flux (a shift, so the analytic centring below does not cancel
catastrophically). G is accumulated chunk by chunk with numpy's X.T @ X (BLAS syrk), within ~10%
of numpy's one-shot product over all rows. Then, with m = s / n:
    C = G - n m m^T            (centred scatter),   sd = sqrt(diag(C) / n)  (per-pixel std, ddof 0)
    C_z = D^-1 C D^-1,  b = D^-1 (r - m sum y)    (the standardised problem, D = diag(sd))
and one eigendecomposition C_z = V diag(l) V^T gives the whole alpha path
    beta(alpha) = V diag(1 / (l + alpha)) V^T b,
which is exactly scikit-learn's StandardScaler + Ridge(alpha) (intercept fitted, not penalised).
With fewer stars than pixels (n < p) the same path comes from the n x n kernel instead: the
shifted rows are kept (n p < p^2 numbers, the gram's own bound), Z = (X - c - m) / sd, and
Z Z^T = U diag(l) U^T gives V = Z^T U diag(l)^-1/2 (p x rank) and V^T b = diag(l)^1/2 U^T y: the
p - rank directions of zero eigenvalue carry no b and drop out. An n^3 solve instead of a p^3 one
(400 stars x 4096 pixels: 0.07 s against ~8-12 s); from n >= p the gram path runs as before, the
kept rows folded in chunk by chunk in their order (bit for bit the streamed gram; a first chunk of
p rows or more, as the default batch of 4096 is, goes to the gram at once).
Alpha is chosen by R^2 on the validation split; the test split is never read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg

from specscale.core.config import check_fields
from specscale.core.vocab import LOGG, Cell
from specscale.data.loader import prefetch
from specscale.data.sources import Observed, Source
from specscale.models.base import Model


@dataclass(frozen=True)
class RidgeParams:
    """Alpha grid: ``n_alphas`` values log-spaced over [alpha_min, alpha_max] (the study's best
    alpha grows with N: ~2e2 at 32k, ~3e4 at 100k, ~1e5 at 1M)."""

    alpha_min: float = 1e-2
    alpha_max: float = 1e8
    n_alphas: int = 41
    batch: int = 4096  # rows per streamed chunk (memory ~ batch x pixels x 16 bytes)

    def __post_init__(self):
        check_fields(self)
        if not 0 < self.alpha_min <= self.alpha_max:
            raise ValueError(
                f"need 0 < alpha_min <= alpha_max, got alpha_min={self.alpha_min}, alpha_max={self.alpha_max}"
            )
        if self.n_alphas < 1 or (self.n_alphas == 1 and self.alpha_min != self.alpha_max):
            raise ValueError(f"n_alphas={self.n_alphas} must be >= 1 (1 only when alpha_min == alpha_max)")
        if self.batch < 1:
            raise ValueError(f"batch={self.batch} must be >= 1")

    def alphas(self) -> np.ndarray:
        return np.logspace(np.log10(self.alpha_min), np.log10(self.alpha_max), self.n_alphas)


class RidgeAccumulator:
    """Streaming sufficient statistics of a standardised ridge regression (see module docstring)."""

    def __init__(self, n_features: int):
        self.p = n_features
        self.n = 0
        self.shift = None
        self.sum_x = np.zeros(n_features)
        self.rows: list[np.ndarray] | None = []  # shifted chunks while n < p; None once folded
        self.gram = None
        self._tmp = None
        self.xty = np.zeros(n_features)
        self.sum_y = 0.0
        self.sum_y2 = 0.0
        self.y: list[np.ndarray] = []  # targets of the kept rows

    def add(self, X, y) -> None:
        """Add rows ``X`` (n, p) with targets ``y`` (n,)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.p or y.shape != (X.shape[0],):
            raise ValueError(f"expected X (n, {self.p}) and y (n,), got {X.shape} and {y.shape}")
        if X.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = X.mean(axis=0)
        Xs = np.ascontiguousarray(X - self.shift)
        self.sum_x += Xs.sum(axis=0)
        self.xty += Xs.T @ y
        self.sum_y += float(y.sum())
        self.sum_y2 += float(y @ y)
        self.n += X.shape[0]
        if self.rows is not None and self.n < self.p:
            self.rows.append(Xs)
            self.y.append(y)
            return
        if self.rows is not None:  # past p rows: the gram is the smaller statistic from here on
            self.gram, self._tmp = np.zeros((self.p, self.p)), np.empty((self.p, self.p))
            for kept in self.rows:
                self._add_gram(kept)
            self.rows, self.y = None, []
        self._add_gram(Xs)

    def _add_gram(self, Xs: np.ndarray) -> None:
        # numpy sees Xs.T @ Xs as one operand times its transpose and calls BLAS syrk; unlike
        # scipy's f2py BLAS wrappers it releases the GIL, so the next chunk's read overlaps
        np.matmul(Xs.T, Xs, out=self._tmp)
        self.gram += self._tmp

    def solve(self) -> RidgePath:
        """Centre, standardise and eigendecompose: the whole alpha path."""
        if self.n < 2:
            raise ValueError(f"ridge needs at least 2 training rows, got {self.n}")
        if self.rows is not None:
            return self._solve_kernel()
        n = self.n
        m = self.sum_x / n
        # in place on the accumulator (it is spent after solve): a few p x p arrays at the peak
        C, self._tmp = self.gram, None
        C -= np.multiply.outer(n * m, m)
        sd = _scale(np.diag(C) / n)
        C /= sd[:, None]
        C /= sd[None, :]
        b = (self.xty - m * self.sum_y) / sd
        eigval, eigvec = scipy.linalg.eigh(C, overwrite_a=True, check_finite=False, driver="evd")
        self.gram = None
        eigval = np.clip(eigval, 0.0, None)  # round-off below zero
        return RidgePath(
            mean=self.shift + m, scale=sd, eigval=eigval, eigvec=eigvec, proj=eigvec.T @ b, y_mean=self.sum_y / n, n=n
        )

    def _solve_kernel(self) -> RidgePath:
        """The same path from the n x n kernel of the kept rows (n < p)."""
        n = self.n
        m = self.sum_x / n
        Z = np.concatenate(self.rows) - m
        self.rows = None
        sd = _scale(np.einsum("ij,ij->j", Z, Z) / n)
        Z /= sd
        y = np.concatenate(self.y)
        eigval, U = scipy.linalg.eigh(Z @ Z.T, check_finite=False, driver="evd")
        # centring leaves at least one zero eigenvalue; those directions carry no b (b = Z^T y)
        keep = eigval > eigval[-1] * n * np.finfo(np.float64).eps
        eigval, U = eigval[keep], U[:, keep]
        root = np.sqrt(eigval)
        return RidgePath(
            mean=self.shift + m,
            scale=sd,
            eigval=eigval,
            eigvec=(Z.T @ U) / root,
            proj=root * (U.T @ y),
            y_mean=self.sum_y / n,
            n=n,
        )


def _scale(variance: np.ndarray) -> np.ndarray:
    """Per-pixel std (ddof 0) from its variance; constant pixels get 1, as scikit-learn's scaler."""
    sd = np.sqrt(np.clip(variance, 0.0, None))
    sd[sd < 10 * np.finfo(np.float64).eps] = 1.0
    return sd


@dataclass
class RidgePath:
    """A solved ridge problem for every alpha: raw-flux coefficients or predictions on demand."""

    mean: np.ndarray  # (p,) training mean flux
    scale: np.ndarray  # (p,) training std of flux (ddof 0)
    eigval: np.ndarray  # (k,) eigenvalues of the standardised scatter matrix (k = p, or its rank if n < p)
    eigvec: np.ndarray  # (p, k)
    proj: np.ndarray  # (k,) V^T b
    y_mean: float
    n: int

    def coef(self, alpha: float) -> tuple[np.ndarray, float]:
        """(w, intercept) so that y = x @ w + intercept on raw flux x."""
        beta = self.eigvec @ (self.proj / (self.eigval + alpha))
        w = beta / self.scale
        return w, float(self.y_mean - self.mean @ w)

    def predict_path(self, X, alphas) -> np.ndarray:
        """Predictions (n, n_alphas) for rows ``X`` at every alpha."""
        Z = (np.asarray(X, np.float64) - self.mean) / self.scale
        return Z @ self.betas(alphas) + self.y_mean

    def betas(self, alphas) -> np.ndarray:
        """Standardised coefficients (p, n_alphas) for every alpha."""
        return self.eigvec @ (self.proj[:, None] / (self.eigval[:, None] + np.asarray(alphas, np.float64)[None, :]))


def select_alpha(path: RidgePath, batches, alphas) -> tuple[int, np.ndarray]:
    """Index of the alpha with the best R^2 over ``batches`` of (X, y), and R^2 for every alpha."""
    betas = path.betas(alphas)
    sse = np.zeros(len(alphas))
    s1 = s2 = 0.0
    count = 0
    for X, y in batches:
        y = np.asarray(y, np.float64)
        pred = ((np.asarray(X, np.float64) - path.mean) / path.scale) @ betas + path.y_mean
        sse += ((pred - y[:, None]) ** 2).sum(axis=0)
        s1, s2, count = s1 + y.sum(), s2 + y @ y, count + y.size
    if count < 2:
        raise ValueError("alpha selection needs at least 2 validation stars")
    sst = s2 - s1**2 / count
    r2 = 1.0 - sse / sst
    return int(np.nanargmax(r2)), r2


class RidgeModel(Model):
    """Streaming standardised ridge; alpha by validation R^2."""

    name = "ridge"
    Params = RidgeParams
    cpu_only = True
    feature_options = ("window", "normalisation", "input")  # of a variant's features (models.registry)
    pipeline = None  # the features bound to the data's wavelength grid (by fit)

    def check(self, source: Source, cell: Cell) -> None:
        """Fail before training on what the data cannot support."""
        if cell.n_train < 2:
            raise ValueError(f"ridge needs at least 2 training stars, got --n-train {cell.n_train}")

    def fit(self, source: Source, cell: Cell, workdir: Path) -> dict:
        p = self.params
        self.pipeline = None if self.features is None else self.features.bind(source.wave)
        acc = RidgeAccumulator(source.wave.size if self.pipeline is None else self.pipeline.n_features)
        for obs in prefetch(
            source.iter_observed("train", cell.mag, cell.noise, cell.seed, n=cell.n_train, batch=p.batch)
        ):
            acc.add(self.inputs(obs), obs.labels[:, LOGG])
        path = acc.solve()
        alphas = p.alphas()
        val = (
            (self.inputs(o), o.labels[:, LOGG])
            for o in source.iter_observed("val", cell.mag, cell.noise, None, batch=p.batch)
        )
        best, r2 = select_alpha(path, prefetch(val), alphas)
        self.alpha = float(alphas[best])
        self.path = path  # the whole alpha path (p x k), for inspection
        self.coef_, self.intercept_ = path.coef(self.alpha)
        return {
            "alpha": self.alpha,
            "alpha_at_grid_edge": bool(len(alphas) > 1 and best in (0, len(alphas) - 1)),
            "val_r2": float(r2[best]),
            "alpha_grid": [float(a) for a in alphas],
            "val_r2_path": [float(v) for v in r2],
            "n_features": int(acc.p),
            "n_params": int(acc.p + 1),
        }

    def inputs(self, observed: Observed) -> np.ndarray:
        """The input matrix of a batch: its flux, or a variant's features (per batch, as streamed)."""
        return observed.flux if self.pipeline is None else self.pipeline(observed.flux, observed.error)

    def predict(self, observed: Observed) -> np.ndarray:
        return np.asarray(self.inputs(observed), np.float64) @ self.coef_ + self.intercept_

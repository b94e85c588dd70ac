"""The batched posterior sampler: posterior mean of a parameter for many spectra at once by
adaptive multiple importance sampling with the dataset's simulator (:func:`posterior_batched`).

Per star: a bank of ``bank_size`` scrambled-Sobol prior draws is simulated once for all stars and
scored against every spectrum by two matrix products (:class:`PriorBank`); its best members start
Levenberg-Marquardt fits (one, plus one per further bank member that is >= ``start_separation``
away and within ``start_window`` in chi^2: a second mode; :func:`find_modes`), whose Laplace
covariances give the round-1 proposal, a t mixture weighted by the Laplace evidence
(:func:`specscale.ceiling.importance.laplace_mixture`). Round r >= 2 draws twice as many from half
that mixture plus half a t moment-matched to the weighted draws so far (for banana-shaped or
truncated posteriors the Laplace misses). Every draw AND every bank member is weighted against the
deterministic mixture M u(z) + sum_r n_r q_r(z) (multiple importance sampling, balance heuristic;
u the uniform prior of the bank): the bank is the defensive component that keeps the weights
bounded where the t components miss posterior mass, at no simulation cost. Draws come in
antithetic pairs mu +- d (the pair cancels the linear part of the integrand); a star stops when
its MC standard error is <= ``mc_target`` x its posterior sd (after ``min_rounds`` rounds and with
ESS >= ``min_ess``) or after ``n_samples`` draws. Stars are batched through the simulator
(``sim_batch`` spectra per call, where its per-spectrum cost is lowest) and each star has its own
random stream (rows seed it), so results do not depend on batching or on the other stars.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from specscale.ceiling.configs import BayesConfig
from specscale.ceiling.importance import (
    TMixture,
    laplace_covariance,
    laplace_mixture,
    moment_matched,
    weighted_stats,
)
from specscale.core.vocab import LOGG
from specscale.data.streams import seed_key
from specscale.models.oracle import levenberg_marquardt


class PixelSubset:
    """A forward model seen through a pixel mask (a window): ``flux`` and ``jacobian`` of the
    masked pixels only, so every likelihood, Fisher matrix and bank built on it uses those pixels."""

    def __init__(self, model, mask: np.ndarray):
        self.model, self.mask = model, np.asarray(mask, dtype=bool)
        self._idx: dict = {}

    def _index(self, device) -> torch.Tensor:
        if device not in self._idx:
            self._idx[device] = torch.as_tensor(np.flatnonzero(self.mask), device=device)
        return self._idx[device]

    def flux(self, theta: torch.Tensor) -> torch.Tensor:
        f = self.model.flux(theta)
        return f.index_select(-1, self._index(f.device))

    def jacobian(self, theta: torch.Tensor):
        f, jac = self.model.jacobian(theta)
        idx = self._index(f.device)
        return f.index_select(-1, idx), jac.index_select(1, idx)


@dataclass
class PriorBank:
    """Noiseless spectra of prior draws: ``z`` (M, P) in box coordinates, ``flux`` (M, n_pix)
    float32 and its mean spectrum ``centre`` (chi^2 against the bank is computed on centred flux,
    which keeps float32 matrix products accurate to ~0.01 in chi^2 at S/N 70 per pixel)."""

    z: np.ndarray
    flux: torch.Tensor
    centre: torch.Tensor

    @classmethod
    def simulate(cls, model, box: np.ndarray, size: int, seed: int, device="cpu", chunk: int = 512) -> PriorBank:
        """``size`` scrambled-Sobol draws from the uniform prior on ``box``, simulated in float32."""
        sobol = torch.quasirandom.SobolEngine(box.shape[0], scramble=True, seed=seed)
        z = sobol.draw(size, dtype=torch.float64).numpy()
        lo, width = box[:, 0], box[:, 1] - box[:, 0]
        theta = torch.as_tensor(lo + z * width, dtype=torch.float32, device=device)
        with torch.no_grad():
            flux = torch.cat([model.flux(theta[i : i + chunk]) for i in range(0, size, chunk)])
        return cls(z, flux, flux.mean(0))

    def chi2(self, obs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Approximate chi^2 (n, M) of spectra ``obs`` with inverse variances ``w`` (n, n_pix)
        against every bank spectrum: two float32 matrix products on flux centred on the bank mean."""
        o = (obs - self.centre.to(obs.dtype)).float()
        wf = w.float()
        f = self.flux - self.centre
        return (wf * o * o).sum(1, keepdim=True) - 2 * (wf * o) @ f.T + wf @ (f * f).T


def _starts(chi2_bank: torch.Tensor, bank: PriorBank, config: BayesConfig) -> tuple[np.ndarray, np.ndarray]:
    """Start points of the mode fits: per spectrum the best bank member and up to ``n_starts - 1``
    further members at least ``start_separation`` from the chosen ones whose bank chi^2 is within
    ``start_window`` of the best. Returns the spectrum of each start (S,) and its z (S, P)."""
    k = min(32, chi2_bank.shape[1])
    best_chi2, cand = torch.topk(chi2_bank, k, dim=1, largest=False)
    cand = cand.cpu().numpy()
    best_chi2 = best_chi2.double().cpu().numpy()
    star, z0 = [], []
    for i in range(chi2_bank.shape[0]):
        chosen = [cand[i, 0]]
        for j in range(1, k):
            if len(chosen) >= config.n_starts or best_chi2[i, j] > best_chi2[i, 0] + config.start_window:
                break
            dist = np.abs(bank.z[cand[i, j]] - bank.z[chosen]).max(1).min()
            if dist > config.start_separation:
                chosen.append(cand[i, j])
        star += [i] * len(chosen)
        z0.append(bank.z[chosen])
    return np.asarray(star), np.concatenate(z0)


def find_modes(
    model, obs: torch.Tensor, sigma: torch.Tensor, box: torch.Tensor, bank: PriorBank, config: BayesConfig
) -> tuple[list, torch.Tensor]:
    """Local likelihood maxima of each spectrum, in box coordinates: LM fits
    (:func:`specscale.models.oracle.levenberg_marquardt`) from the starts of :func:`_starts`.
    Returns per spectrum (z (S, P), chi2 (S,), cov (S, P, P)): the converged starts and their
    Laplace covariances (:func:`specscale.ceiling.importance.laplace_covariance`). Also returns the
    bank chi^2 (n, M) (approximate)."""
    chi2_bank = bank.chi2(obs, sigma.pow(-2))
    star, z0 = _starts(chi2_bank, bank, config)
    st = torch.as_tensor(star, device=obs.device)
    z0 = torch.as_tensor(z0, dtype=torch.float64, device=obs.device)
    b = config.jac_batch
    fits = [
        levenberg_marquardt(
            model, obs[st[a : a + b]], sigma[st[a : a + b]], z0[a : a + b], box, config.iterations, 1e-3, config.lm_tol
        )
        for a in range(0, len(z0), b)
    ]
    z, chi2 = torch.cat([f[0] for f in fits]), torch.cat([f[1] for f in fits])
    cov = laplace_covariance(model, z, sigma[st], box, b).cpu().numpy()
    z, chi2 = z.cpu().numpy(), chi2.cpu().numpy()
    modes = [(z[star == i], chi2[star == i], cov[star == i]) for i in range(obs.shape[0])]
    return modes, chi2_bank


@dataclass
class _Star:
    """One star's sampling state: its draws and bank members (``z``, ``chi2``), the independent
    units of the MC error (``groups``: a bank member, an antithetic pair), the rounds' proposals
    with their draw counts, and the current weights and statistics (mean, sd, mc_se, ESS)."""

    rng: np.random.Generator
    laplace: TMixture
    z: np.ndarray
    chi2: np.ndarray
    groups: np.ndarray
    rounds: list = field(default_factory=list)
    drawn: int = 0
    n_sims: int = 0
    logw: np.ndarray | None = None
    stats: tuple[float, float, float, float] | None = None


def _bank_members(obs, w, chi2_bank, modes, bank: PriorBank, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Bank members of spectrum ``i`` that can carry weight (chi^2 within 80 of the best mode's:
    lighter ones weigh < e^-40 of it) and their chi^2; the 256 lowest recomputed exactly in float64
    (the centred float32 products are good to ~1e-6 of chi^2, i.e. ~0.01 at S/N 70 per pixel)."""
    best = float(modes[i][1].min())
    row = chi2_bank[i]
    idx = (row <= best + 80.0 + 2e-6 * row.min()).nonzero()[:, 0]
    chi_b = row[idx]
    top = torch.topk(chi_b, min(256, len(idx)), largest=False).indices
    chi_b[top] = ((obs[i] - bank.flux[idx[top]].double()) ** 2 * w[i]).sum(-1)
    return idx.cpu().numpy(), chi_b.cpu().numpy()


def _start_stars(obs, w, modes, chi2_bank, bank: PriorBank, rows: np.ndarray, config: BayesConfig) -> list[_Star]:
    """The sampling state of each spectrum of a batch: its Laplace mixture, its own random stream
    (seeded by its star id ``rows``) and the bank members that can carry weight."""
    stars = []
    chi2_bank = chi2_bank.double()
    for i, (z_m, c_m, cov_m) in enumerate(modes):
        with torch.no_grad():
            idx, chi_b = _bank_members(obs, w, chi2_bank, modes, bank, i)
        stars.append(
            _Star(
                rng=np.random.Generator(np.random.Philox(key=seed_key("bayes", config.seed, int(rows[i])))),
                laplace=laplace_mixture(z_m, c_m, cov_m, config.chi2_window, config.inflate, config.df),
                z=bank.z[idx],
                chi2=chi_b,
                groups=np.arange(len(idx)),
            )
        )
    return stars


def _draw_round(st: _Star, size: int, config: BayesConfig) -> np.ndarray:
    """One round of draws for a star (inside the box): from its Laplace mixture in round 1, from
    half that plus half a moment-matched t afterwards."""
    q = st.laplace
    if st.rounds:
        q = q.with_component(*moment_matched(st.z, st.logw, config.inflate))
    z, pair = q.sample_inside(st.rng, max(2, min(size, config.n_samples - st.drawn)))
    st.rounds.append((q, len(z)))
    st.drawn += len(z)
    top = int(st.groups.max()) + 1 if len(st.groups) else 0
    st.groups = np.concatenate([st.groups, top + pair])
    return z


def _simulate_chi2(model, draws, obs, w, lo, width, sim_batch: int) -> np.ndarray:
    """chi^2 of every star's draws ``draws`` [(star, z)], simulated together in float32 batches."""
    theta = np.concatenate([lo + z * width for _, z in draws])
    own = torch.as_tensor(np.concatenate([np.full(len(z), i) for i, z in draws]), device=obs.device)
    chi = np.empty(len(theta))
    with torch.no_grad():
        th = torch.as_tensor(theta, dtype=torch.float32, device=obs.device)
        for s in range(0, len(theta), sim_batch):
            f = model.flux(th[s : s + sim_batch]).double()
            o = own[s : s + sim_batch]
            chi[s : s + sim_batch] = (((obs[o] - f) ** 2) * w[o]).sum(-1).cpu().numpy()
    return chi


def _reweight(st: _Star, z: np.ndarray, chi: np.ndarray, m_bank: int, x_of) -> None:
    """Add a round's draws to a star and weight every sample against M u(z) + sum_r n_r q_r(z) / Z_r
    (all inside the box, u = 1); ``x_of`` maps z to the parameter's physical value."""
    st.n_sims += len(z)
    st.z = np.concatenate([st.z, z])
    st.chi2 = np.concatenate([st.chi2, chi])
    log_mix = np.full(len(st.z), math.log(m_bank))
    for q, cnt in st.rounds:
        log_mix = np.logaddexp(log_mix, math.log(cnt) + q.logpdf_inside(st.z))
    st.logw = -0.5 * (st.chi2 - st.chi2.min()) - log_mix
    st.stats = weighted_stats(x_of(st.z), st.logw, st.groups)


def _unfinished(st: _Star, config: BayesConfig) -> bool:
    """A star samples on until its MC error, ESS and round count are good enough, or its draws are spent."""
    _, sd, se, ess = st.stats
    short = se > config.mc_target * sd or ess < config.min_ess or len(st.rounds) < config.min_rounds
    return short and st.drawn < config.n_samples


def posterior_batched(
    model,
    obs: np.ndarray,
    sigma: np.ndarray,
    box: np.ndarray,
    rows: np.ndarray,
    config: BayesConfig | None = None,
    index: int = LOGG,
    device: str = "cpu",
    bank: PriorBank | None = None,
) -> dict[str, np.ndarray]:
    """Posterior mean and sd of parameter ``index`` (physical units), MC standard error, ESS,
    simulations used, the maximum-likelihood value and its chi^2, per spectrum (see the module's
    description). ``model`` has ``flux`` and ``jacobian``; obs, sigma (n, n_pix); box (P, 2);
    ``rows`` (n,) star ids seeding each star's own random stream; ``bank`` the prior bank (default:
    ``config.bank_size`` Sobol draws simulated here). Also returns ``cpu_seconds`` per step."""
    config = config or BayesConfig()
    dev = torch.device(device)
    box_t = torch.as_tensor(box, dtype=torch.float64, device=dev)
    lo, width = box[:, 0], box[:, 1] - box[:, 0]
    clock0 = time.process_time()
    if bank is None:
        bank = PriorBank.simulate(model, box, config.bank_size, config.seed, dev, config.sim_batch)
    clock = {"bank": time.process_time() - clock0, "modes": 0.0, "proposals": 0.0, "simulate": 0.0, "weights": 0.0}
    n = len(obs)
    out = {k: np.empty(n) for k in ("mean", "sd", "mc_se", "ess", "n_components", "n_sims", "mle", "chi2_min")}
    for a in range(0, n, config.batch):
        sl = slice(a, min(n, a + config.batch))
        obs_t = torch.as_tensor(np.ascontiguousarray(obs[sl]), dtype=torch.float64, device=dev)
        sig_t = torch.as_tensor(np.ascontiguousarray(sigma[sl]), dtype=torch.float64, device=dev)
        w_t = sig_t.pow(-2)
        t0 = time.process_time()
        with torch.no_grad():
            modes, chi2_bank = find_modes(model, obs_t, sig_t, box_t, bank, config)
        clock["modes"] += time.process_time() - t0
        stars = _start_stars(obs_t, w_t, modes, chi2_bank, bank, rows[sl], config)
        _sample(model, stars, obs_t, w_t, lo, width, len(bank.z), index, config, clock)
        for i, (st, (z_m, c_m, _)) in enumerate(zip(stars, modes), start=a):
            out["mean"][i], out["sd"][i], out["mc_se"][i], out["ess"][i] = st.stats
            out["n_components"][i] = len(st.laplace.mu)
            out["n_sims"][i] = st.n_sims
            j = int(np.argmin(c_m))
            out["mle"][i] = lo[index] + z_m[j, index] * width[index]
            out["chi2_min"][i] = c_m[j]
    out["cpu_seconds"] = clock
    return out


def _sample(model, stars, obs, w, lo, width, m_bank: int, index: int, config: BayesConfig, clock: dict) -> None:
    """The sampling rounds of a batch of stars: each round draws for every unfinished star, simulates
    all draws together and reweights; the round size doubles."""
    x_of = lambda z: lo[index] + z[:, index] * width[index]
    active = list(range(len(stars)))
    size = config.round_samples
    while active:
        t0 = time.process_time()
        draws = [(i, _draw_round(stars[i], size, config)) for i in active]
        clock["proposals"] += time.process_time() - t0
        t0 = time.process_time()
        chi = _simulate_chi2(model, draws, obs, w, lo, width, config.sim_batch)
        clock["simulate"] += time.process_time() - t0
        t0 = time.process_time()
        pos = 0
        for i, z in draws:
            _reweight(stars[i], z, chi[pos : pos + len(z)], m_bank, x_of)
            pos += len(z)
        clock["weights"] += time.process_time() - t0
        active = [i for i in active if _unfinished(stars[i], config)]
        size *= 2

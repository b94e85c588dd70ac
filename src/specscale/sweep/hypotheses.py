"""Decision hypotheses: "does the variant beat the base by at least X on metric M?", answered per
sweep cell with a paired bootstrap confidence interval.

A hypothesis (config section ``hypotheses:``, a list; schema ``workflow/schemas/config.schema.yaml``)
names two entries of the cube's model axis (``grid.model``: registered models or variant names), a
metric and a decision threshold::

    hypotheses:
      - name: error_input                 # id on the cube's hypothesis axis (default H1, H2, ...)
        question: Does the pipeline error as an input lower the ViT's MAE by 5% or more?
        base: vit
        variant: vit-flux-error
        metric: mae                       # r2 | mae | rmse | bias | r2_top20 | ... | bias_top20
        change: relative                  # relative: (variant - base) / |base|; absolute: variant - base
        op: "<="                          # <= | < | >= | >
        threshold: -0.05                  # supported when the whole interval satisfies `diff op threshold`
        confidence: 0.95                  # optional (default 0.95)
        n_boot: 1000                      # optional bootstrap replicates (default 1000)
        seed: 0                           # optional seed of the bootstrap (default 0)

At collect (:func:`fold_hypotheses`), every (noise, mag, n_train) where the sweep has cells of
both models is evaluated from the cells' ``predictions.h5``: all cells of one (noise, mag) are
scored on the same test stars with the same test noise, so the difference is paired star by star
(rows, true log g and S/N must agree, or collect refuses). The metric of a model is the mean over
its seeds of the metric on the test stars (``specscale.models.metrics`` definitions; ``_top20``
on the 20% of stars with the highest S/N). The interval is the percentile interval of a two-stage
bootstrap: test stars resampled with replacement (the same draw for base and variant and every
seed: paired), and seeds resampled with replacement within each model (jointly when both models
ran the same seeds). With few seeds (2-4) the seed part of the interval is too narrow (a bootstrap
of k values has variance (k - 1)/k of the truth, and only a handful of distinct resamples); the
report shows the seed counts.

Verdict: *supported* when the whole interval satisfies ``diff op threshold``, *rejected* when none
of it does, *inconclusive* when it straddles the threshold; *not evaluated* where either model has
no cell. The results are cube variables on (hypothesis, noise, mag, n_train) (:data:`VARIABLES`);
the definitions are the cube attribute ``hypotheses`` (JSON), so the report needs only the cube.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from specscale.core.vocab import Cell
from specscale.sweep.bootstrap import CHANGES, paired_bootstrap
from specscale.sweep.checks import config_error

if TYPE_CHECKING:  # the cube's type only: the workflow imports this module at parse time
    import xarray as xr

METRICS = ("r2", "mae", "rmse", "bias", "bias_cond", "r2_top20", "mae_top20", "rmse_top20", "bias_top20")
OPS = ("<=", "<", ">=", ">")
REQUIRED = ("question", "base", "variant", "metric", "op", "threshold")
OPTIONAL = {"name": None, "change": "absolute", "confidence": 0.95, "n_boot": 1000, "seed": 0}
# verdict codes of the cube variable hyp_verdict (CF flag_values / flag_meanings)
NOT_EVALUATED, SUPPORTED, REJECTED, INCONCLUSIVE = 0, 1, 2, 3
VERDICTS = {NOT_EVALUATED: "not evaluated", SUPPORTED: "supported", REJECTED: "rejected", INCONCLUSIVE: "inconclusive"}
DIMS = ("hypothesis", "noise", "mag", "n_train")
# cube variables on DIMS, with their meaning
VARIABLES = {
    "hyp_base": "metric of the base model: mean over its seeds (metric units: R^2 or dex)",
    "hyp_variant": "metric of the variant model: mean over its seeds (metric units: R^2 or dex)",
    "hyp_diff": "variant - base (change absolute, metric units) or (variant - base)/|base| (relative, fraction)",
    "hyp_ci_lo": "lower end of the paired bootstrap confidence interval of hyp_diff (hyp_diff units)",
    "hyp_ci_hi": "upper end of the paired bootstrap confidence interval of hyp_diff (hyp_diff units)",
    "hyp_verdict": "decision: " + ", ".join(f"{k} {v}" for k, v in VERDICTS.items()),
    "hyp_n_stars": "test stars the metric is computed on (the top-20% S/N subset for *_top20)",
    "hyp_n_seeds_base": "seeds of the base model in the cell",
    "hyp_n_seeds_variant": "seeds of the variant model in the cell",
}


class PredictionsError(ValueError):
    """predictions.h5 files that cannot be compared star by star (missing, malformed, or other test
    stars/noise than the cell they are paired with); the message names the files."""


@dataclass(frozen=True)
class Hypothesis:
    """One decision question (module docstring): ``diff(variant, base) op threshold`` on ``metric``
    with a ``confidence`` interval from ``n_boot`` paired bootstrap replicates."""

    name: str
    question: str
    base: str
    variant: str
    metric: str
    change: str
    op: str
    threshold: float
    confidence: float = 0.95
    n_boot: int = 1000
    seed: int = 0

    def decision(self) -> str:
        """The decision rule in words, e.g. ``relative MAE change <= -5%``."""
        metric = self.metric.replace("_top20", " (top 20% S/N)")
        metric = metric.upper() if metric.split()[0] in ("mae", "rmse") else metric.replace("r2", "R^2")
        thr = f"{self.threshold:+.3g}" if self.change == "absolute" else f"{100 * self.threshold:+.3g}%"
        return f"{self.change} {metric} change {self.op} {thr}"

    def verdict(self, lo: float, hi: float) -> int:
        """Verdict code of the interval [lo, hi] (``VERDICTS``)."""
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return NOT_EVALUATED
        t = self.threshold
        inside, outside = {
            "<=": (hi <= t, lo > t),
            "<": (hi < t, lo >= t),
            ">=": (lo >= t, hi < t),
            ">": (lo > t, hi <= t),
        }[self.op]
        return SUPPORTED if inside else REJECTED if outside else INCONCLUSIVE

    def as_dict(self) -> dict:
        return asdict(self) | {"decision": self.decision()}


def _number(key: str, value, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise config_error(key, f"{value!r} is not {'an integer' if integer else 'a number'}")
    if not math.isfinite(value):
        raise config_error(key, f"{value!r} is not finite")
    return value


def check_hypotheses(config: Mapping, cells: Iterable[Cell] | None = None) -> list[Hypothesis]:
    """The ``hypotheses`` section of a sweep config, checked and with defaults filled. Each entry
    must have the keys ``REQUIRED`` (and may have ``OPTIONAL``); base and variant must be entries
    of ``grid.model`` (and differ), metric one of ``METRICS``, op one of ``OPS``, change one of
    ``CHANGES``, 0 < confidence < 1, n_boot >= 100. Given the sweep's ``cells`` (dicts with
    noise, mag, model, n_train: ``specscale.sweep.grid.grid_cells``, exclusions applied), base and
    variant must share at least one (noise, mag, n_train), or the hypothesis could only ever come
    out "not evaluated". Raises ConfigError naming the key (``config error at hypotheses[1].metric: ...``)."""
    entries = config.get("hypotheses") or []
    if not isinstance(entries, list):
        raise config_error("hypotheses", f"must be a list of hypotheses, got {type(entries).__name__}")
    models = list(config.get("grid", {}).get("model", []))
    out, names = [], {}
    for i, entry in enumerate(entries):
        where = f"hypotheses[{i}]"
        if not isinstance(entry, Mapping):
            raise config_error(where, f"must be a mapping with keys {list(REQUIRED)}, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            raise config_error(f"{where}.{unknown[0]}", f"unknown key; known: {sorted(REQUIRED + tuple(OPTIONAL))}")
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise config_error(f"{where}.{missing[0]}", "required key missing")
        values = OPTIONAL | dict(entry)
        for key in ("name", "question", "base", "variant", "metric", "op", "change"):
            if values[key] is not None and not (isinstance(values[key], str) and values[key].strip()):
                raise config_error(f"{where}.{key}", f"{values[key]!r} is not a non-empty string")
        for key in ("base", "variant"):
            if values[key] not in models:
                raise config_error(
                    f"{where}.{key}", f"{values[key]!r} is not on the grid's model axis (grid.model {models})"
                )
        if values["base"] == values["variant"]:
            raise config_error(f"{where}.variant", f"the same model as base ({values['base']!r})")
        for key, allowed in (("metric", METRICS), ("op", OPS), ("change", CHANGES)):
            if values[key] not in allowed:
                raise config_error(f"{where}.{key}", f"unknown {key} {values[key]!r}; known: {list(allowed)}")
        threshold = float(_number(f"{where}.threshold", values["threshold"]))
        confidence = float(_number(f"{where}.confidence", values["confidence"]))
        if not 0 < confidence < 1:
            raise config_error(f"{where}.confidence", f"{confidence} is not in (0, 1)")
        n_boot = _number(f"{where}.n_boot", values["n_boot"], integer=True)
        if n_boot < 100:
            raise config_error(f"{where}.n_boot", f"{n_boot} replicates are too few for an interval (at least 100)")
        seed = _number(f"{where}.seed", values["seed"], integer=True)
        if seed < 0:
            raise config_error(f"{where}.seed", f"{seed} is negative")
        name = values["name"] or f"H{i + 1}"
        if name in names:
            raise config_error(f"{where}.name", f"{name!r} is already the name of hypotheses[{names[name]}]")
        names[name] = i
        if cells is not None:
            _check_common_cell(f"{where}.variant", name, values["base"], values["variant"], cells)
        out.append(
            Hypothesis(
                name=name,
                question=values["question"].strip(),
                base=values["base"],
                variant=values["variant"],
                metric=values["metric"],
                change=values["change"],
                op=values["op"],
                threshold=threshold,
                confidence=confidence,
                n_boot=int(n_boot),
                seed=int(seed),
            )
        )
    return out


def _check_common_cell(key: str, name: str, base: str, variant: str, cells: Iterable[Cell]) -> None:
    """ConfigError when no (noise, mag, n_train) of ``cells`` has both ``base`` and ``variant``."""
    where: dict[str, set] = {base: set(), variant: set()}
    for c in cells:
        if c.model in where:
            where[c.model].add((c.noise, c.mag, c.n_train))
    if not where[base] & where[variant]:
        raise config_error(
            key,
            f"hypothesis {name!r}: {variant!r} and its base {base!r} share no (noise, mag, n_train) cell "
            f"({len(where[variant])} and {len(where[base])} cells after exclusions), so it can never be "
            "evaluated; change grid.per_model, exclude or the hypothesis",
        )


# ---------------------------------------------------------------------------------------- files
def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """rows, logg_true, logg_pred (dex) and snr of a cell's predictions.h5 (``specscale train``),
    and its (n, 4) true labels where it has them (the bias_cond metric needs them)."""
    import h5py  # here: the workflow imports this module at parse time

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            out = {k: np.asarray(f[k]) for k in ("rows", "logg_true", "logg_pred", "snr")}
            labels = np.asarray(f["labels"]) if "labels" in f else None
    except FileNotFoundError:
        raise PredictionsError(f"{path}: predictions file not found (needed by the hypotheses)") from None
    except (OSError, KeyError) as exc:
        raise PredictionsError(f"{path}: not a readable predictions file ({exc})") from exc
    sizes = {k: v.shape for k, v in out.items()}
    if len(set(sizes.values())) != 1 or out["rows"].ndim != 1:
        raise PredictionsError(f"{path}: datasets of different shapes {sizes}")
    if labels is not None:
        out["labels"] = labels
    return out


def _label_bins(ref: dict, path: Path, keep) -> np.ndarray:
    """The Teff x [M/H] bins of a cell's stars (metric bias_cond)."""
    from specscale.models.metrics import label_bins  # here: it imports scipy

    if "labels" not in ref:
        raise PredictionsError(f"{path}: no labels dataset (metric bias_cond needs the true Teff and [M/H])")
    return label_bins(ref["labels"][keep])


def _same_stars(ref: dict, ref_path: Path, other: dict, path: Path) -> None:
    if not np.array_equal(ref["rows"], other["rows"]):
        raise PredictionsError(
            f"{path} and {ref_path}: different test stars (rows), so they cannot be compared star by star"
        )
    for key in ("logg_true", "snr"):
        if not np.allclose(ref[key], other[key], rtol=1e-9, atol=0):
            raise PredictionsError(
                f"{path} and {ref_path}: same rows but different {key} (another dataset or test noise?)"
            )


def _rng_seed(h: Hypothesis, noise: float, mag: str, n_train: int) -> list[int]:
    """Seed of one cell's bootstrap: from the hypothesis and the cell's values (not its place on
    the axes, so adding a cell to the sweep does not change the others' intervals)."""
    return [h.seed, zlib.crc32(h.name.encode()), round(noise * 1_000_000), zlib.crc32(mag.encode()), int(n_train)]


def fold_hypotheses(
    ds: xr.Dataset, cells: Iterable[tuple[object, str | Path]], hypotheses: Sequence[Hypothesis]
) -> tuple[xr.Dataset, list[dict]]:
    """Evaluate every hypothesis at every (noise, mag, n_train) of the cube where both its models
    have cells; add the :data:`VARIABLES` on (hypothesis, noise, mag, n_train) to ``ds``. ``cells``
    are (cell, metrics.json path) pairs (cell with noise, mag, model, n_train, seed); each cell's
    predictions.h5 sits next to its metrics.json. Returns the dataset and the definitions (the
    cube attribute ``hypotheses``). Raises PredictionsError for files that do not pair up."""
    from specscale.models.metrics import top_snr_mask  # here: it imports scipy, parsing needs none

    hypotheses = list(hypotheses)
    files: dict[tuple, Path] = {}
    for cell, path in cells:
        key = (cell.noise, cell.mag.label(), cell.model, cell.n_train, cell.seed)
        files[key] = Path(path).with_name("predictions.h5")
    noises, mags = ds.noise.values.tolist(), ds.mag.values.tolist()
    sizes, seeds = ds.n_train.values.tolist(), ds.seed.values.tolist()
    shape = (len(hypotheses), len(noises), len(mags), len(sizes))
    out = {name: np.full(shape, np.nan) for name in ("hyp_base", "hyp_variant", "hyp_diff", "hyp_ci_lo", "hyp_ci_hi")}
    counts = {name: np.zeros(shape, np.int64) for name in ("hyp_n_stars", "hyp_n_seeds_base", "hyp_n_seeds_variant")}
    verdict = np.full(shape, NOT_EVALUATED, np.int8)
    cache: dict[Path, dict] = {}

    def load(path: Path) -> dict:
        if path not in cache:
            cache[path] = read_predictions(path)
        return cache[path]

    for h_i, h in enumerate(hypotheses):
        for i, noise in enumerate(noises):
            for j, mag in enumerate(mags):
                for k, n_train in enumerate(sizes):
                    have = {m: [s for s in seeds if (noise, mag, m, n_train, s) in files] for m in (h.base, h.variant)}
                    if not have[h.base] or not have[h.variant]:
                        continue
                    paths = {m: [files[(noise, mag, m, n_train, s)] for s in have[m]] for m in have}
                    ref_path = paths[h.base][0]
                    ref = load(ref_path)
                    for path in paths[h.base][1:] + paths[h.variant]:
                        _same_stars(ref, ref_path, load(path), path)
                    keep = top_snr_mask(ref["snr"]) if h.metric.endswith("_top20") else slice(None)
                    preds = {m: np.stack([load(p)["logg_pred"][keep] for p in paths[m]], axis=1) for m in paths}
                    res = paired_bootstrap(
                        ref["logg_true"][keep],
                        preds[h.base],
                        preds[h.variant],
                        metric=h.metric.removesuffix("_top20"),
                        change=h.change,
                        confidence=h.confidence,
                        n_boot=h.n_boot,
                        seed=_rng_seed(h, noise, mag, n_train),
                        paired_seeds=have[h.base] == have[h.variant] and len(have[h.base]) > 1,
                        groups=_label_bins(ref, ref_path, keep) if h.metric == "bias_cond" else None,
                    )
                    at = (h_i, i, j, k)
                    for name, value in (
                        ("hyp_base", res.base),
                        ("hyp_variant", res.variant),
                        ("hyp_diff", res.diff),
                        ("hyp_ci_lo", res.ci_lo),
                        ("hyp_ci_hi", res.ci_hi),
                    ):
                        out[name][at] = value
                    counts["hyp_n_stars"][at] = res.n_stars
                    counts["hyp_n_seeds_base"][at] = res.n_seeds_base
                    counts["hyp_n_seeds_variant"][at] = res.n_seeds_variant
                    verdict[at] = h.verdict(res.ci_lo, res.ci_hi)
    ds = ds.assign_coords(hypothesis=("hypothesis", np.asarray([h.name for h in hypotheses], dtype=object)))
    for name, arr in {**out, **counts, "hyp_verdict": verdict}.items():
        ds[name] = (DIMS, arr)
        ds[name].attrs["long_name"] = VARIABLES[name]
    ds["hyp_verdict"].attrs.update(
        flag_values=np.asarray(list(VERDICTS), np.int8),
        flag_meanings=" ".join(v.replace(" ", "_") for v in VERDICTS.values()),
    )
    ds["hypothesis"].attrs["long_name"] = "decision hypothesis (definitions: the cube attribute 'hypotheses', JSON)"
    return ds, [h.as_dict() for h in hypotheses]


def hypotheses_of(ds: xr.Dataset) -> list[Hypothesis]:
    """The hypotheses a cube was collected with (its attribute ``hypotheses``), in axis order."""
    raw = ds.attrs.get("hypotheses")
    if not raw or "hypothesis" not in ds.dims:
        return []
    items = json.loads(raw) if isinstance(raw, str) else raw
    fields = set(Hypothesis.__dataclass_fields__)
    return [Hypothesis(**{k: v for k, v in item.items() if k in fields}) for item in items]

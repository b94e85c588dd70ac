"""The cube as text: ``specscale cube`` prints :func:`format_table`; :func:`format_number` is
the one number format of the tables (the markdown report's too)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from specscale.report.queries import json_attr
from specscale.sweep.cube_records import DIMS


def format_number(value, spec: str = ".3f", missing: str = "-") -> str:
    """``format(value, spec)``, or ``missing`` for None/NaN (an excluded or absent cell)."""
    return missing if value is None or not np.isfinite(value) else format(value, spec)


def format_table(ds: xr.Dataset, metrics: tuple[str, ...] = ("r2", "mae", "rmse", "r2_top20", "train_s")) -> str:
    """The cube as text: one block per (noise, mag) with its ceilings, one row per (model, n_train)
    that has results; metric columns are seed means (R^2 also +- the seed standard deviation)."""
    lines = [
        f"specscale cube: {int(ds['done'].sum())} cells; dims "
        + ", ".join(f"{d} {ds.sizes[d]}" for d in DIMS)
        + f"; code {ds.attrs.get('code_version', '?')}; dataset {', '.join(json_attr(ds, 'dataset_ids', []))}"
    ]
    widths = {"model": max([5] + [len(m) for m in ds.model.values.tolist()])}
    header = f"  {'model':<{widths['model']}}  {'n_train':>8}  {'seeds':>5}  " + "  ".join(
        f"{'r2 (+-sd)' if m == 'r2' else m:>{14 if m == 'r2' else 10}}" for m in metrics
    )
    mean = {m: ds[m].mean("seed", skipna=True) for m in metrics}
    std = ds["r2"].std("seed", skipna=True, ddof=0)
    seeds = ds["done"].sum("seed")
    for noise in ds.noise.values.tolist():
        for mag in ds.mag.values.tolist():
            ceil = "  ".join(
                f"{label} {format_number(float(ds[name].sel(noise=noise, mag=mag)))}"
                for name, label in (
                    ("ceiling_pop", "population"),
                    ("ceiling_median", "median"),
                    ("ceiling_pop_top20", "population top20"),
                )
                if name in ds
            )
            lines += ["", f"noise {noise:g}  mag {mag}" + (f"   R2 ceiling: {ceil}" if ceil else ""), header]
            for model in ds.model.values.tolist():
                for n in ds.n_train.values.tolist():
                    at = dict(noise=noise, mag=mag, model=model, n_train=n)
                    k = int(seeds.sel(at))
                    if k == 0:
                        continue
                    cols = []
                    for m in metrics:
                        v = float(mean[m].sel(at))
                        if m != "r2":
                            cols.append(f"{format_number(v, '.3f' if abs(v) < 100 else '.0f'):>10}")
                        elif k > 1:  # R^2 +- its spread over seeds
                            cols.append(f"{format_number(v):>7} +-{format_number(float(std.sel(at))):<5}")
                        else:
                            cols.append(f"{format_number(v):>14}")
                    lines.append(f"  {model:<{widths['model']}}  {n:>8}  {k:>5}  " + "  ".join(cols))
    return "\n".join(lines)

"""Pre-training of the ViT encoder on the CPU: what a step costs, and what it buys.

    .venv/bin/python benchmarks/bench_pretrain.py throughput [--data D.h5] [--model vit-tiny] [--steps 20]
    .venv/bin/python benchmarks/bench_pretrain.py probe --data D.h5 [--n-pretrain 4000] [--n-label 2000]

``throughput``: spectra/s of a pre-training step (msm + denoise) against a supervised step of the
same ViT, same batches from memory, same process, alternating rounds (medians). ``probe``: pre-train
on the first ``--n-pretrain`` training spectra, report the validation reconstruction of the hidden
pixels against their noise per epoch, then train the same linear probe (frozen encoder, mean-pooled
tokens, the head alone) on the first ``--n-label`` labelled stars on the pre-trained and on a randomly
initialised encoder (same stars, same noise, same head init) and compare them on the test stars with
a paired bootstrap (specscale.sweep.hypotheses.paired_bootstrap). Results go to the "pretrain"
section of benchmarks/RESULTS-models.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from _common import train_rate, write_section


def tiny_data(tmp: Path, n_train: int) -> Path:
    from specscale.data.simulate import SimulationConfig, simulate

    path = tmp / "bench.h5"
    simulate(path, SimulationConfig(n_train=n_train, n_val=200, n_test=200, seed=3, device="cpu"), progress=False)
    return path


def throughput(args, src) -> str:
    """Markdown of the pre-training vs supervised step rates."""
    import torch

    from specscale.core.vocab import Cell
    from specscale.data.loader import MemoryBatches
    from specscale.models.registry import model_params
    from specscale.models.vit import ViTModel
    from specscale.models.vit.params import PretrainParams
    from specscale.models.vit.pretrain import Pretrainer

    vit = dataclasses.replace(model_params(args.model, {}), workers=0, dropout=0.1)
    cell = Cell(noise=1.0, mag="20.5-22.5", model="vit", n_train=min(src.n("train"), 4 * vit.batch), seed=0)
    models = {
        "supervised (MSE on log g)": ViTModel(vit, seed=0),
        "pre-training (msm + denoise)": Pretrainer(PretrainParams.like(vit, tasks=("msm", "denoise")), seed=0),
    }
    batches = {}
    for name, m in models.items():
        m.build(src, cell)
        m.close()
        batches[name] = MemoryBatches(src, cell.n_train, cell.mag, m.sampler)
    rates = {name: [] for name in models}
    for _ in range(args.repeat):
        for name, m in models.items():
            train_rate(m, batches[name], 2, 0)  # warm-up
            rates[name].append(train_rate(m, batches[name], args.steps, 2)[0])
    sup, pre = (statistics.median(r) for r in rates.values())
    net = models["supervised (MSE on log g)"].net
    lines = [
        f"### Step throughput, `{args.model}` ({net.n_params() / 1e6:.2f}M parameters, {net.n_tokens} tokens), CPU",
        "",
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"batch {vit.batch}, batches from memory, {args.steps} steps x {args.repeat} alternating rounds (median):",
        "",
        "| step | spectra/s | relative |",
        "|---|---|---|",
        f"| supervised (MSE on log g) | {sup:.0f} | 1.00 |",
        f"| pre-training (msm + denoise, mask 0.3) | {pre:.0f} | {pre / sup:.2f} |",
        "",
        "The pre-training step runs the same encoder plus a per-token reconstruction head and a loss over "
        "every pixel; its extra cost is the (B, n_pix) reconstruction and its weights, not attention.",
    ]
    return "\n".join(lines)


def ridge_probe(encoders: dict, src, mag, noise: float, n_label: int, n_test: int) -> dict:
    """Test predictions of a closed-form ridge probe (standardised mean-pooled encoder tokens, alpha
    chosen on validation R^2) per encoder; features from one fixed noise draw per split."""
    import numpy as np
    import torch

    from specscale.core.vocab import LOGG
    from specscale.models.metrics import r2_score

    obs = {
        "train": src.observed("train", np.arange(n_label), mag, noise, seed=1),
        "val": src.observed("val", np.arange(src.n("val")), mag, noise),
        "test": src.observed("test", np.arange(min(n_test, src.n("test"))), mag, noise),
    }
    y = {k: o.labels[:, LOGG].astype(np.float64) for k, o in obs.items()}
    preds = {}
    for name, model in encoders.items():
        model.net.eval()
        feats = {}
        with torch.no_grad():
            for split, o in obs.items():
                x = model.observed_inputs(o)
                feats[split] = torch.cat(
                    [model.net.encode(x[i : i + 256])[:, 1:].mean(1) for i in range(0, len(x), 256)]
                )
                feats[split] = feats[split].double().numpy()
        mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-12
        z = {k: (f - mu) / sd for k, f in feats.items()}
        gram, rhs = z["train"].T @ z["train"], z["train"].T @ (y["train"] - y["train"].mean())
        best = None
        for alpha in 10.0 ** np.arange(-3, 5):
            w = np.linalg.solve(gram + alpha * np.eye(len(gram)), rhs)
            r2 = r2_score(y["val"], z["val"] @ w + y["train"].mean())
            if best is None or r2 > best[0]:
                best = (r2, w)
        preds[name] = z["test"] @ best[1] + y["train"].mean()
    return preds


def probe(args, src) -> str:
    """Markdown of the pre-training run and of the paired probe comparison."""
    import numpy as np
    import torch

    from specscale.core.vocab import LOGG, Cell, MagRange
    from specscale.models.registry import model_params
    from specscale.models.vit import ViTModel
    from specscale.models.vit.params import ENCODER_NAME, PretrainParams
    from specscale.models.vit.pretrain import pretrain
    from specscale.sweep.hypotheses import paired_bootstrap

    mag, noise = MagRange.parse(args.mag), args.noise
    vit = dataclasses.replace(model_params(args.model, {}), workers=0, pool="mean")
    pre = PretrainParams.like(vit, tasks=("msm", "denoise"), max_epochs=args.pretrain_epochs, val_spectra=500)
    work = Path(args.work)
    t0 = time.perf_counter()
    info = pretrain(src, pre, n_spectra=args.n_pretrain, noise=noise, mag=args.mag, seed=0, workdir=work / "pre")
    t_pre = time.perf_counter() - t0
    probe_p = dataclasses.replace(vit, freeze=True, lr=args.probe_lr, max_epochs=args.probe_epochs, patience=0)
    cell = Cell(noise=noise, mag=mag, model="vit", n_train=args.n_label, seed=1)
    test = src.observed("test", np.arange(min(args.n_test, src.n("test"))), mag, noise)
    y = test.labels[:, LOGG].astype(np.float64)
    preds, t_probe, encoders = {}, {}, {}
    for name, init in (("random", ""), ("pretrained", str(work / "pre" / ENCODER_NAME))):
        t0 = time.perf_counter()
        model = ViTModel(dataclasses.replace(probe_p, pretrain=init), seed=1)
        model.fit(src, cell, work / f"probe-{name}")
        preds[name], t_probe[name] = model.predict(test), time.perf_counter() - t0
        encoders[name] = model
    ridge = ridge_probe(encoders, src, mag, noise, args.n_label, args.n_test)

    def compare(p: dict) -> list[str]:
        r2 = paired_bootstrap(y, p["random"], p["pretrained"], metric="r2", n_boot=2000)
        mae = paired_bootstrap(y, p["random"], p["pretrained"], metric="mae", n_boot=2000)
        return [
            f"| random init | {r2.base:.4f} | {mae.base:.4f} |",
            f"| pre-trained | {r2.variant:.4f} | {mae.variant:.4f} |",
            f"| pre-trained - random (95% paired bootstrap, 2000 draws of the test stars) | {r2.diff:+.4f} "
            f"[{r2.ci_lo:+.4f}, {r2.ci_hi:+.4f}] | {mae.diff:+.4f} [{mae.ci_lo:+.4f}, {mae.ci_hi:+.4f}] |",
        ]

    rows = [
        f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h['val_msm_rmse']:.4f} | "
        f"{h['val_msm_sigma']:.4f} | {h['val_msm_chi']:.3f} | {h['val_msm_chi_flat']:.3f} | {h['val_denoise_chi']:.3f} |"
        for h in info["history"]
    ]
    lines = [
        f"### Pre-training pays? `{args.model}` encoder, {Path(args.data).name}, noise {noise:g}, mag {args.mag}",
        "",
        f"Pre-training: {args.n_pretrain} training spectra without labels, tasks msm + denoise (mask 0.3 of the "
        f"patches), {info['epochs']} epochs ({info['steps']} steps, {t_pre:.0f} s on {torch.get_num_threads()} "
        f"CPU thread(s)); validation: {pre.val_spectra} spectra, fixed noise and mask. chi = sqrt(mean((prediction - "
        "noiseless flux)^2 / sigma^2)) over the hidden (msm) or visible (denoise) pixels: below 1 the "
        "reconstruction is closer to the truth than the pixel's own noisy value is; the flat-continuum chi is that "
        "of guessing flux 1 for every hidden pixel (what a model must beat to have learnt the lines).",
        "",
        "| epoch | train loss | val loss | hidden-pixel RMSE | hidden-pixel noise RMS | msm chi | flat-continuum chi "
        "| denoise chi |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Linear probes of the frozen encoders on the first {args.n_label} labelled stars, tested on {y.size} "
        "test stars; same stars, noise, seed and head init for both encoders. (a) `freeze: true` through the "
        f"trainer (mean-pooled tokens, the head alone; lr {args.probe_lr:g}, {args.probe_epochs} epochs, noise "
        f"redrawn every step; {t_probe['random']:.0f} s and {t_probe['pretrained']:.0f} s):",
        "",
        "| encoder | test R^2 | test MAE (dex) |",
        "|---|---|---|",
        *compare(preds),
        "",
        "(b) closed-form ridge on the standardised mean-pooled tokens (one noise draw; alpha chosen on the "
        "validation R^2):",
        "",
        "| encoder | test R^2 | test MAE (dex) |",
        "|---|---|---|",
        *compare(ridge),
    ]
    (work / "probe.json").write_text(
        json.dumps(
            {
                "pretrain": info,
                "y": y.tolist(),
                **{f"probe_{k}": v.tolist() for k, v in preds.items()},
                **{f"ridge_{k}": v.tolist() for k, v in ridge.items()},
            },
            indent=1,
            default=float,
        )
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["throughput", "probe", "both"])
    ap.add_argument("--data")
    ap.add_argument("--model", default="vit-tiny", choices=["vit", "vit-tiny"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--mag", default="20.5-22.5")
    ap.add_argument("--n-pretrain", type=int, default=4000)
    ap.add_argument("--pretrain-epochs", type=int, default=12)
    ap.add_argument("--n-label", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--probe-lr", type=float, default=3e-2)
    ap.add_argument("--probe-epochs", type=int, default=10)
    ap.add_argument("--work", default=None, help="run directory (default: a temporary one)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import torch

    from specscale.data.sources import open_source

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        args.data = args.data or str(tiny_data(Path(tmp), 1024))
        args.work = args.work or tmp
        src = open_source(args.data)
        parts = []
        if args.what in ("throughput", "both"):
            parts.append(throughput(args, src))
        if args.what in ("probe", "both"):
            parts.append(probe(args, src))
    text = "## Pre-training of the ViT encoder (benchmarks/bench_pretrain.py)\n\n" + "\n\n".join(parts)
    print(text)
    if not args.no_write:
        write_section(f"pretrain_{args.what}", text)


if __name__ == "__main__":
    main()

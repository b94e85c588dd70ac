"""Roofline bound on the ViT's model FLOP utilisation (MFU): how high can MFU go for a given shape?

    python benchmarks/vit_roofline.py [--model vit] [--batch 1024]

For one training step of the configured ViT (models.<model> defaults), every kernel of the
transformer blocks (forward and backward) is given its FLOPs and the fewest bytes it must move
(bf16 activations, 2 bytes; weights are read once per step and are negligible at these batch
sizes). A kernel takes at least max(FLOPs / peak, bytes / bandwidth); the sum over kernels is the
step's lower bound, and model FLOPs / (bound x peak) is the highest MFU the shape allows on that GPU
if every kernel ran exactly at its roof. Two schedules:

- "eager": each op is its own kernel (LayerNorm, GELU and residual adds read and write HBM);
- "fused": LayerNorm, GELU and residual adds folded into the neighbouring matrix products'
  prologues/epilogues (what torch.compile with max-autotune can approach); attention is a
  FlashAttention kernel in both.

Real kernels reach perhaps 60-80% of their roof (less for FlashAttention at head size 32), so
measured MFU sits below these numbers. No GPU is needed: this is arithmetic on the shape.
Writes the "vit_roofline" section of benchmarks/RESULTS-models.md unless --no-write.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from _common import write_section

BYTES = 2  # bf16 activations

# dense bf16 peak (FLOP/s) and HBM bandwidth (B/s), vendor figures
GPUS = {"H100 SXM": (989e12, 3.35e12), "H200": (989e12, 4.8e12), "A100 80GB": (312e12, 2.04e12)}


@dataclass
class Kernel:
    name: str
    flops: float  # per token
    bytes: float  # per token


def block_kernels(d: int, m: int, t: int, fused: bool) -> list[Kernel]:
    """Kernels of one pre-LN encoder block, forward then backward, per token (width d, MLP m,
    sequence length t). GEMM Y = X W (n x k by k x o) costs 2 n k o FLOPs forward and 4 n k o
    backward (dX and dW); attention is FlashAttention (4 t d forward, 2.5x that backward)."""

    def gemm(name, k, o):
        return [Kernel(name, 2 * k * o, BYTES * (k + o)), Kernel(name + " bwd", 4 * k * o, 2 * BYTES * (k + o))]

    ks = gemm("qkv", d, 3 * d)
    ks += [Kernel("attention", 4 * t * d, BYTES * 4 * d), Kernel("attention bwd", 10 * t * d, BYTES * 8 * d)]
    ks += gemm("proj", d, d) + gemm("mlp up", d, m) + gemm("mlp down", m, d)
    if not fused:  # elementwise kernels: read inputs, write outputs (backward: read grad + saved, write grad)
        ks += [Kernel("layernorm x2", 0, 2 * BYTES * 2 * d), Kernel("layernorm bwd x2", 0, 2 * BYTES * 3 * d)]
        ks += [Kernel("gelu", 0, BYTES * 2 * m), Kernel("gelu bwd", 0, BYTES * 3 * m)]
        ks += [Kernel("residual x2", 0, 2 * BYTES * 3 * d), Kernel("residual bwd x2", 0, 2 * BYTES * 3 * d)]
    return ks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit", choices=["vit", "vit-tiny"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from specscale.models.registry import model_class

    p = model_class(args.model).Params()
    n_pix = 4096
    t = n_pix // p.patch + 1  # tokens incl. CLS
    d, m, depth = p.width, p.mlp, p.depth
    per_layer = 4 * d * d + 2 * d * m  # qkv + proj + mlp weights
    # model FLOPs per spectrum and training step, the MFU numerator: 6 N T over the blocks + attention
    model_flops = depth * t * (6 * per_layer + 12 * t * d)

    rows = []
    for gpu, (peak, bw) in GPUS.items():
        for fused in (False, True):
            ks = block_kernels(d, m, t, fused)
            seconds = depth * t * sum(max(k.flops / peak, k.bytes / bw) for k in ks)  # per spectrum
            n_mem = sum(k.bytes / bw > k.flops / peak for k in ks)
            rows.append(
                (
                    gpu,
                    "fused" if fused else "eager",
                    model_flops / (seconds * peak),
                    1 / seconds,
                    f"{n_mem} of {len(ks)}",
                )
            )
    ridge = {g: pk / bw for g, (pk, bw) in GPUS.items()}
    lines = [
        "## Roofline bound on ViT MFU (benchmarks/vit_roofline.py, arithmetic, no GPU)",
        "",
        f"`{args.model}`: {depth} layers, width {d}, MLP {m}, head size {d // p.heads}, {t} tokens (patch {p.patch}); "
        f"model FLOPs per spectrum and training step {model_flops / 1e9:.2f} G (blocks only). "
        "Bound = every kernel exactly at its roof (max of FLOPs/peak and bytes/bandwidth); bf16 activations.",
        "",
        "| GPU | schedule | MFU bound | spectra/s bound | memory-bound kernels |",
        "|---|---|---|---|---|",
        *[f"| {g} | {s} | {mfu:.0%} | {rate:,.0f} | {mb} |" for g, s, mfu, rate, mb in rows],
        "",
        "Arithmetic intensity a GPU needs to be compute-bound (peak / bandwidth): "
        + ", ".join(f"{g} {r:.0f} FLOP/B" for g, r in ridge.items())
        + f". A width-{d} GEMM moves (k + o) x 2 bytes per token for 2 k o FLOPs: {d * 3 * d / (d + 3 * d):.0f} FLOP/B for "
        f"qkv, {d * d / (2 * d):.0f} for proj, {d * m / (d + m):.0f} for the MLP, so at this width even the matrix products sit "
        "at or under the roof's knee and the elementwise kernels are pure bandwidth.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("vit_roofline", text)


if __name__ == "__main__":
    main()

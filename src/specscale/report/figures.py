"""The one list of the sweep's figures: names, titles, captions and report categories, in the
report's order. The markdown report and the Snakemake HTML report (the plots rule's report items,
whose caption files ``specscale plot --captions`` writes from here) both take their captions from it.

Kept apart from :mod:`specscale.report.plots` so that the workflow (which parses this for every
job) and the markdown report can name the figures without importing matplotlib."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specscale.core.files import write_text


@dataclass(frozen=True)
class Figure:
    """One figure: its ``title``, one-paragraph ``caption`` (plain text, also valid
    reStructuredText) and the ``category`` it is filed under in the Snakemake HTML report."""

    title: str
    caption: str
    category: str


# name -> the figure; the order of the report
FIGURES = {
    "scaling": Figure(
        "R^2 vs training size",
        "Seed mean (line) and seed range (band) of test R^2 per model; black line and band: the Bayes "
        "posterior-mean reference ± its error (what no estimator beats on average); light grey: the "
        "unbiased bounds (Fisher/CRLB, population solid, median dotted), which a shrinking regressor "
        "may beat; dash-dot: reference models; dashed, in a window variant's colour: the Bayes reference "
        "of that window's pixels alone. Without a Bayes reference in the cube only the unbiased "
        "bounds are drawn.",
        "Scaling",
    ),
    "ceiling_curves": Figure(
        "Ceiling vs magnitude",
        "Unbiased Fisher R^2 bound vs HSC-i magnitude per noise level (population solid, median dashed) "
        "with the best learned model of each cell (range cells: bar over the range) and, where the cube "
        "has it, the Bayes reference of the cell (black star ± its error).",
        "Ceiling",
    ),
    "gap": Figure(
        "Gap to the achievable",
        "Bayes reference minus the best learned model's R^2 per (noise, mag); label: gap ± its error "
        "(Bayes error and the best model's seed error) and the model. A cube without the Bayes "
        "reference shows the unbiased population bound minus the best instead, labelled as such.",
        "Ceiling",
    ),
    "snr_bins": Figure(
        "R^2 per S/N bin",
        "Test R^2 per per-spectrum S/N bin at each model's largest training size; black solid: the "
        "Bayes reference per bin (where the cube has it); grey dashed: the unbiased population bound per bin.",
        "Scaling",
    ),
    "decisions": Figure(
        "Decision hypotheses vs training size",
        "Per hypothesis (config section hypotheses), the paired difference of its metric (variant − "
        "base; relative: in % of the base) against training size, one line per (noise, mag) cell, "
        "bars: bootstrap confidence interval over test stars and seeds; red dashed: the decision "
        "threshold; filled circle: supported, cross: rejected, open circle: inconclusive.",
        "Decisions",
    ),
    "information": Figure(
        "Log g information per wavelength chunk",
        "Fisher information on log g of each chunk of pixels (top) and the information lost when the "
        "chunk is removed (bottom), with the strong lines (Ca II triplet, Na I 8183/8195, Mg I 8807) "
        "marked; from the chunk file given to `specscale plot --information` (else a placeholder panel).",
        "Ceiling",
    ),
}


def write_captions(out) -> list[Path]:
    """Write each figure's caption as ``out/<name>.rst``, the caption files of the plots rule's
    report items (Snakemake reads a caption from a file). Returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_text(figure.caption + "\n", out / f"{name}.rst") for name, figure in FIGURES.items()]

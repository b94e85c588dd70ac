"""The one list of the sweep's figures: names, titles and captions, in the report's order.

Kept apart from :mod:`specscale.report.plots` so that the workflow (which parses this for every
job) and the markdown report can name the figures without importing matplotlib."""

# name -> (title, one-line caption); the order of the report
FIGURES = {
    "scaling": (
        "R^2 vs training size",
        "Seed mean (line) and seed range (band) of test R^2 per model; black line and band: the Bayes "
        "posterior-mean reference ± its error (what no estimator beats on average); light grey: the "
        "unbiased bounds (Fisher/CRLB, population solid, median dotted), which a shrinking regressor "
        "may beat; dash-dot: reference models; dashed, in a window variant's colour: the Bayes reference "
        "of that window's pixels alone. Without a Bayes reference in the cube only the unbiased "
        "bounds are drawn.",
    ),
    "ceiling_curves": (
        "Ceiling vs magnitude",
        "Unbiased Fisher R^2 bound vs HSC-i magnitude per noise level (population solid, median dashed) "
        "with the best learned model of each cell (range cells: bar over the range) and, where the cube "
        "has it, the Bayes reference of the cell (black star ± its error).",
    ),
    "gap": (
        "Gap to the achievable",
        "Bayes reference minus the best learned model's R^2 per (noise, mag); label: gap ± its error "
        "(Bayes error and the best model's seed error) and the model. A cube without the Bayes "
        "reference shows the unbiased population bound minus the best instead, labelled as such.",
    ),
    "snr_bins": (
        "R^2 per S/N bin",
        "Test R^2 per per-spectrum S/N bin at each model's largest training size; black solid: the "
        "Bayes reference per bin (where the cube has it); grey dashed: the unbiased population bound per bin.",
    ),
    "decisions": (
        "Decision hypotheses vs training size",
        "Per hypothesis (config section hypotheses), the paired difference of its metric (variant − "
        "base; relative: in % of the base) against training size, one line per (noise, mag) cell, "
        "bars: bootstrap confidence interval over test stars and seeds; red dashed: the decision "
        "threshold; filled circle: supported, cross: rejected, open circle: inconclusive.",
    ),
    "information": (
        "Log g information per wavelength chunk",
        "Fisher information on log g of each chunk of pixels (top) and the information lost when the "
        "chunk is removed (bottom), with the strong lines (Ca II triplet, Na I 8183/8195, Mg I 8807) "
        "marked; from the chunk file given to `specscale plot --information` (else a placeholder panel).",
    ),
}

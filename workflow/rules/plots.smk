# Stage 5: figures and the markdown report, from the cube alone. The figures are those of
# specscale.report.figures.FIGURES; the PNGs are items of the Snakemake HTML report
# (snakemake --report report.html).


rule plots:
    input:
        cube=CUBE,
        information=INFORMATION.format(dataset=SWEEP.dataset),
    output:
        scaling=report(
            f"{PLOTS}/scaling.png",
            caption="../report/scaling.rst",
            category="Scaling",
            labels={"figure": "R2 vs training size"},
        ),
        ceiling_curves=report(
            f"{PLOTS}/ceiling_curves.png",
            caption="../report/ceiling_curves.rst",
            category="Ceiling",
            labels={"figure": "ceiling vs magnitude"},
        ),
        gap=report(
            f"{PLOTS}/gap.png",
            caption="../report/gap.rst",
            category="Ceiling",
            labels={"figure": "gap to the Bayes reference"},
        ),
        snr_bins=report(
            f"{PLOTS}/snr_bins.png",
            caption="../report/snr_bins.rst",
            category="Scaling",
            labels={"figure": "R2 per S/N bin"},
        ),
        decisions=report(
            f"{PLOTS}/decisions.png",
            caption="../report/decisions.rst",
            category="Decisions",
            labels={"figure": "hypotheses vs training size"},
        ),
        information=report(
            f"{PLOTS}/information.png",
            caption="../report/information.rst",
            category="Ceiling",
            labels={"figure": "log g information per chunk"},
        ),
        pdfs=[f"{PLOTS}/{name}.pdf" for name in FIGURES],
    log:
        f"{LOGS}/plots.log",
    benchmark:
        f"{BENCH}/plots.tsv"
    localrule: True
    conda:
        "../envs/specscale.yaml"
    resources:
        mem_mb=scaled("plots", "mem_mb"),
        runtime=scaled("plots", "runtime"),
    params:
        out=lambda wildcards, output: os.path.dirname(output.scaling),
    shell:
        "specscale plot {input.cube:q} --information {input.information:q} --out {params.out:q}"
        " > {log:q} 2>&1"


rule report:
    input:
        cube=CUBE,
        plots=rules.plots.output,
    output:
        REPORT,
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    localrule: True
    conda:
        "../envs/specscale.yaml"
    resources:
        mem_mb=scaled("plots", "mem_mb"),
        runtime=scaled("plots", "runtime"),
    params:
        plots=lambda wildcards, input: os.path.dirname(input.plots[0]),
    shell:
        "specscale report {input.cube:q} --plots {params.plots:q} --out {output:q} > {log:q} 2>&1"

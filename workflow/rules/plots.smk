# Stage 5: figures and the markdown report, from the cube alone. The figures, their titles,
# captions and report categories are those of specscale.report.figures.FIGURES; the PNGs are
# items of the Snakemake HTML report (snakemake --report report.html), each with the caption file
# that `specscale plot --captions` writes from that list.


rule plots:
    input:
        cube=CUBE,
        information=INFORMATION.format(dataset=SWEEP.dataset),
    output:
        pngs=[
            report(
                f"{PLOTS}/{name}.png",
                caption=os.path.abspath(f"{PLOTS}/captions/{name}.rst"),
                category=figure.category,
                labels={"figure": figure.title},
            )
            for name, figure in FIGURES.items()
        ],
        pdfs=[f"{PLOTS}/{name}.pdf" for name in FIGURES],
        captions=[f"{PLOTS}/captions/{name}.rst" for name in FIGURES],
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
        out=lambda wildcards, output: os.path.dirname(output.pdfs[0]),
        captions=lambda wildcards, output: os.path.dirname(output.captions[0]),
    shell:
        "specscale plot {input.cube:q} --information {input.information:q} --out {params.out:q}"
        " --captions {params.captions:q} > {log:q} 2>&1"


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

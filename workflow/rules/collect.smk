# Stage 4: the scaling cube: every metric of every cell, the ceilings and the ceiling curves in
# one netCDF file (`specscale collect`: specscale.sweep.grid.Sweep.collect). Reads JSON, so
# thousands of cells take seconds. The command reads the resolved sweep config from its generated
# file (the cells and the cube's provenance; a changed config re-collects) and gets the path
# templates of the files.


rule collect:
    input:
        config=f"{CONFIGS}/sweep.yaml",
        metrics=[cell_path(c, "metrics.json") for c in SWEEP.cells],
        ceilings=ceiling_files(),
        bayes=bayes_files(),
        window_ceilings=window_files(CEILING_WINDOW),
        window_bayes=window_files(BAYES_WINDOW),
        curves=CURVES.format(dataset=SWEEP.dataset),
    output:
        CUBE,
    log:
        f"{LOGS}/collect.log",
    benchmark:
        f"{BENCH}/collect.tsv"
    localrule: True
    conda:
        "../envs/specscale.yaml"
    resources:
        mem_mb=scaled("collect", "mem_mb"),
        runtime=scaled("collect", "runtime"),
    params:
        metrics=lambda wildcards: f"{CELL}/metrics.json",
        ceilings=lambda wildcards: CEILING,
        bayes=lambda wildcards: BAYES,
        window_ceilings=lambda wildcards: CEILING_WINDOW,
        window_bayes=lambda wildcards: BAYES_WINDOW,
    shell:
        "specscale collect --config {input.config:q} --metrics {params.metrics:q}"
        " --ceilings {params.ceilings:q} --bayes {params.bayes:q} --curves {input.curves:q}"
        " --window-ceilings {params.window_ceilings:q} --window-bayes {params.window_bayes:q}"
        " --out {output:q}"
        " > {log:q} 2>&1"

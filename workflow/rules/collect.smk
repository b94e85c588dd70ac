# Stage 4: the scaling cube: every metric of every cell, the ceilings and the ceiling curves in
# one netCDF file (specscale.cube). Reads JSON, so thousands of cells take seconds.


rule collect:
    input:
        metrics=[cell_path(c, "metrics.json") for c in CELLS],
        ceilings=[
            ceiling_path({"dataset": DATASET, "noise": n, "mag": m})
            for n, m in CEILING_CELLS
        ],
        curves=CURVES.format(dataset=DATASET),
    output:
        CUBE,
    log:
        f"{LOGS}/collect.log",
    benchmark:
        f"{BENCH}/collect.tsv"
    localrule: True
    resources:
        mem_mb=scaled("collect", "mem_mb"),
        runtime=scaled("collect", "runtime"),
    params:
        config=config,
    run:
        collect_cube(input, output, log)

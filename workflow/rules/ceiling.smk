# Stage 2: the Fisher information ceiling of every (noise, mag) cell the models run at, and the
# ceiling curves vs magnitude per noise level (the Jacobian is computed once for all of them).
# A `use rule ... with:` states only what differs (Snakemake merges params, replaces the rest).


rule ceiling:
    input:
        data=dataset_file,
        config=f"{CONFIGS}/fisher.yaml",
    output:
        CEILING,
    log:
        f"{LOGS}/ceiling/{{dataset}}/noise{{noise}}_mag{{mag}}.log",
    benchmark:
        f"{BENCH}/ceiling/{{dataset}}/noise{{noise}}_mag{{mag}}.tsv"
    conda:
        "../envs/specscale.yaml"
    threads: config["resources"]["ceiling"]["threads"]
    resources:
        mem_mb=scaled("ceiling", "mem_mb"),
        runtime=scaled("ceiling", "runtime"),
    params:
        stars=lambda wildcards: (
            f"--stars {config['grid']['ceiling']['stars']}"
            if config["grid"]["ceiling"].get("stars")
            else ""
        ),
        window="",
    shell:
        "specscale fisher --data {input.data:q} --noise {wildcards.noise} --mag {wildcards.mag}"
        " {params.stars} {params.window} --config {input.config:q} --threads {threads} --out {output:q}"
        " > {log:q} 2>&1"


rule ceiling_curves:
    input:
        data=dataset_file,
        config=f"{CONFIGS}/fisher.yaml",
    output:
        CURVES,
    log:
        f"{LOGS}/ceiling_curves/{{dataset}}.log",
    benchmark:
        f"{BENCH}/ceiling_curves/{{dataset}}.tsv"
    conda:
        "../envs/specscale.yaml"
    threads: config["resources"]["curves"]["threads"]
    resources:
        mem_mb=scaled("curves", "mem_mb"),
        runtime=scaled("curves", "runtime"),
    params:
        noise=",".join(SWEEP.curve_noise),
        mag=",".join(SWEEP.curve_mag),
        stars=config["grid"]["curves"]["stars"],
    shell:
        "specscale fisher-curves --data {input.data:q} --noise {params.noise} --mag {params.mag}"
        " --stars {params.stars} --config {input.config:q} --threads {threads} --out {output:q}"
        " > {log:q} 2>&1"


# A window variant's own ceiling: the information its pixels alone hold, on the same test stars.
use rule ceiling as ceiling_window with:
    output:
        CEILING_WINDOW,
    log:
        f"{LOGS}/ceiling_window/{{dataset}}/{{window}}/noise{{noise}}_mag{{mag}}.log",
    benchmark:
        f"{BENCH}/ceiling_window/{{dataset}}/{{window}}/noise{{noise}}_mag{{mag}}.tsv"
    params:
        window=window_option,


# The log g information per wavelength chunk of one cell (the information figure): each chunk's
# information alone and the population ceiling lost without it.


rule information:
    input:
        data=dataset_file,
        config=f"{CONFIGS}/fisher.yaml",
    output:
        INFORMATION,
    log:
        f"{LOGS}/information/{{dataset}}.log",
    benchmark:
        f"{BENCH}/information/{{dataset}}.tsv"
    conda:
        "../envs/specscale.yaml"
    threads: config["resources"]["curves"]["threads"]
    resources:
        mem_mb=scaled("curves", "mem_mb"),
        runtime=scaled("curves", "runtime"),
    params:
        noise=SWEEP.information_cell[0],
        mag=SWEEP.information_cell[1],
        stars=config["grid"]["curves"]["stars"],
    shell:
        "specscale fisher-chunks --data {input.data:q} --noise {params.noise} --mag {params.mag}"
        " --stars {params.stars} --config {input.config:q} --threads {threads} --out {output:q}"
        " > {log:q} 2>&1"


# The Bayes reference of every (noise, mag) cell: the posterior-mean log g (uniform prior of the
# dataset, its simulator and true noise) of the first grid.bayes.stars test stars, the stars the
# models are scored on; folded into the cube beside the ceilings (bayes_r2 +- bayes_r2_err).
# A dataset without a simulator gets the bank reference (its noiseless training spectra).
rule bayes:
    input:
        data=dataset_file,
    output:
        BAYES,
    log:
        f"{LOGS}/bayes/{{dataset}}/noise{{noise}}_mag{{mag}}.log",
    benchmark:
        f"{BENCH}/bayes/{{dataset}}/noise{{noise}}_mag{{mag}}.tsv"
    conda:
        "../envs/specscale.yaml"
    threads: config["resources"]["bayes"]["threads"]
    resources:
        mem_mb=scaled("bayes", "mem_mb"),
        runtime=scaled("bayes", "runtime"),
    params:
        stars=SWEEP.bayes_stars,
        samples=config["grid"]["bayes"]["samples"],
        window="",
    shell:
        "specscale bayes --data {input.data:q} --noise {wildcards.noise} --mag {wildcards.mag}"
        " --stars {params.stars} --samples {params.samples} {params.window} --threads {threads}"
        " --out {output:q} > {log:q} 2>&1"


# A window variant's own Bayes reference: the posterior mean from its pixels alone, same stars.
use rule bayes as bayes_window with:
    output:
        BAYES_WINDOW,
    log:
        f"{LOGS}/bayes_window/{{dataset}}/{{window}}/noise{{noise}}_mag{{mag}}.log",
    benchmark:
        f"{BENCH}/bayes_window/{{dataset}}/{{window}}/noise{{noise}}_mag{{mag}}.tsv"
    params:
        window=window_option,

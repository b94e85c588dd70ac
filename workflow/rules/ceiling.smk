# Stage 2: the Fisher information ceiling of every (noise, mag) cell the models run at, and the
# ceiling curves vs magnitude per noise level (the Jacobian is computed once for all of them).


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
    shell:
        "specscale fisher --data {input.data} --noise {wildcards.noise} --mag {wildcards.mag}"
        " {params.stars} --config {input.config} --threads {threads} --out {output} > {log} 2>&1"


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
        noise=",".join(CURVE_NOISE),
        mag=",".join(CURVE_MAG),
        stars=config["grid"]["curves"]["stars"],
    shell:
        "specscale fisher-curves --data {input.data} --noise {params.noise} --mag {params.mag}"
        " --stars {params.stars} --config {input.config} --threads {threads} --out {output}"
        " > {log} 2>&1"

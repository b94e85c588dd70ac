# Stage 1: the dataset (one per source; every noise x magnitude cell reads it, noise drawn on
# read) and the config files the package CLIs read, generated from the sweep config so that a
# changed section re-runs exactly the jobs that read it (Snakemake's params trigger: the
# sections of the file are its params).


rule config_file:
    output:
        f"{CONFIGS}/{{name}}.yaml",
    log:
        f"{LOGS}/config_file/{{name}}.log",
    benchmark:
        f"{BENCH}/config_file/{{name}}.tsv"
    wildcard_constraints:
        name=r"fisher|sweep|data/[A-Za-z0-9_]+|model/[A-Za-z0-9_.-]+|pretrain/[A-Za-z0-9_]+",
    localrule: True
    conda:
        "../envs/specscale.yaml"
    resources:
        mem_mb=200,
        runtime=2,
    params:
        sections=lambda wildcards: json.dumps(SWEEP.config_sections(wildcards.name)),
    shell:
        "specscale sweep-config --sections {params.sections:q} --out {output:q} > {log:q} 2>&1"


rule simulate:
    input:
        config=f"{CONFIGS}/data/{{dataset}}.yaml",
    output:
        DATA,
    log:
        f"{LOGS}/simulate/{{dataset}}.log",
    benchmark:
        f"{BENCH}/simulate/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=alternatives(SYNTHETIC),
    conda:
        "../envs/specscale.yaml"
    threads: config["resources"]["simulate"]["threads"]
    resources:
        mem_mb=scaled("simulate", "mem_mb"),
        runtime=scaled("simulate", "runtime"),
    shell:
        "specscale simulate --out {output:q} --config {input.config:q} --no-progress > {log:q} 2>&1"

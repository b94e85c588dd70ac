# Stage 2b: one job per pre-training run the grid's models start from (config section `pretrain`):
# `specscale pretrain NAME` trains the ViT encoder without labels and writes encoder.pt (a
# requeued job resumes from the checkpoint beside it); the fine-tuned variants' train jobs take
# that file as an input (common.smk: encoder_of_cell).


rule pretrain:
    input:
        data=dataset_file,
        config=f"{CONFIGS}/pretrain/{{name}}.yaml",
    output:
        PRETRAIN,
    log:
        f"{LOGS}/pretrain/{{dataset}}/{{name}}.log",
    benchmark:
        f"{BENCH}/pretrain/{{dataset}}/{{name}}.tsv"
    wildcard_constraints:
        name=alternatives(SWEEP.pretrain_runs),
    conda:
        "../envs/specscale.yaml"
    threads: resources.threads(resources.job_spec(SWEEP, "pretrain"))
    resources:
        mem_mb=pretrain_resource("mem_mb"),
        runtime=pretrain_resource("runtime"),
        gpu=resources.gpus(resources.job_spec(SWEEP, "pretrain")),
        cpus_per_gpu=resources.cpus_per_gpu(resources.job_spec(SWEEP, "pretrain")),
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        cell=lambda wildcards: pretrain_options(wildcards.name),
    shell:
        "specscale pretrain {wildcards.name:q} --data {input.data:q} --config {input.config:q}"
        " {params.cell} --threads {threads} --out {params.out:q} > {log:q} 2>&1"

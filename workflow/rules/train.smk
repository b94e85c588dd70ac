# Stage 3: one job per sweep cell: `specscale train` writes the cell's metrics.json and
# predictions.h5 (a killed job leaves no metrics.json; a requeued ViT job resumes from its
# checkpoint in the cell's work/ folder). The tracked models (the ViTs, which log the cell's
# ceiling to W&B beside R^2) have their own rule, derived from this one: GPU resources and the
# ceiling as an input.


rule train:
    input:
        data=dataset_file,
        config=f"{CONFIGS}/model/{{model}}.yaml",
    output:
        metrics=f"{CELL}/metrics.json",
        predictions=f"{CELL}/predictions.h5",
    log:
        f"{CELL}/train.log",
    benchmark:
        f"{CELL}/benchmark.tsv"
    wildcard_constraints:
        model=alternatives(SWEEP.cpu_models),
    conda:
        "../envs/specscale.yaml"
    threads: train_resource("threads")
    resources:
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
    params:
        out=lambda wildcards, output: os.path.dirname(output.metrics),
        ceiling=ceiling_option,
    shell:
        "specscale train {wildcards.model} --data {input.data:q} --noise {wildcards.noise}"
        " --mag {wildcards.mag} --n-train {wildcards.n_train} --seed {wildcards.seed}"
        " --config {input.config:q} {params.ceiling} --threads {threads} --out {params.out:q}"
        " > {log:q} 2>&1"


# `use rule` replaces a rule's input and resources as a whole: data, config, mem_mb and runtime
# are those of train. (The ceiling stays an input of this rule alone: an input function on every
# train job costs the logg1m dry run ~7% more time.)
use rule train as train_vit with:
    input:
        data=dataset_file,
        config=f"{CONFIGS}/model/{{model}}.yaml",
        ceiling=ceiling_of_cell,
        encoder=encoder_of_cell,
    wildcard_constraints:
        model=alternatives(SWEEP.vit_models),
    resources:
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
        gpu=train_resource("gpus"),
        cpus_per_gpu=train_resource("cpus_per_gpu"),

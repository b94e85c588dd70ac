# Stage 3: one job per sweep cell: `specscale train` writes the cell's metrics.json and
# predictions.h5 (a killed job leaves no metrics.json; a requeued ViT job resumes from its
# checkpoint in the cell's work/ folder). The ViT models have their own rule: GPU resources, and
# the cell's ceiling logged to W&B beside R^2.


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
        model=alternatives(CPU_MODELS),
    conda:
        "../envs/specscale.yaml"
    threads: train_threads
    resources:
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
    params:
        out=lambda wildcards, output: os.path.dirname(output.metrics),
    shell:
        "specscale train {wildcards.model} --data {input.data} --noise {wildcards.noise}"
        " --mag {wildcards.mag} --n-train {wildcards.n_train} --seed {wildcards.seed}"
        " --config {input.config} --threads {threads} --out {params.out} > {log} 2>&1"


rule train_vit:
    input:
        data=dataset_file,
        config=f"{CONFIGS}/model/{{model}}.yaml",
        ceiling=cell_ceiling,
    output:
        metrics=f"{CELL}/metrics.json",
        predictions=f"{CELL}/predictions.h5",
    log:
        f"{CELL}/train.log",
    benchmark:
        f"{CELL}/benchmark.tsv"
    wildcard_constraints:
        model=alternatives(VIT_MODELS),
    conda:
        "../envs/specscale.yaml"
    threads: train_threads
    resources:
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
        gpu=train_gpus,
        cpus_per_gpu=train_cpus_per_gpu,
    params:
        out=lambda wildcards, output: os.path.dirname(output.metrics),
    shell:
        "specscale train {wildcards.model} --data {input.data} --noise {wildcards.noise}"
        " --mag {wildcards.mag} --n-train {wildcards.n_train} --seed {wildcards.seed}"
        " --config {input.config} --ceiling {input.ceiling} --threads {threads}"
        " --out {params.out} > {log} 2>&1"

# The specscale sweep: noise level x magnitude cell x model x training size x seed, each cell a
# job, collected into results/cube.nc with the Fisher ceilings, then plots and results/report.md.
# Config: config/config.yaml (the default sweep; validated against workflow/schemas/).
#   snakemake --profile profiles/local            # this machine
#   snakemake --profile profiles/slurm            # a SLURM cluster
#   snakemake --configfile config/logg1m.yaml ... # the study's full protocol
from snakemake.utils import min_version

min_version("9.0")


# The embedded default sweep, unless --configfile names one: that file is then the whole config
# (Snakemake would otherwise merge it into the default, leaking default entries into it).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/ceiling.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/plots.smk"


rule all:
    default_target: True
    input:
        final_outputs(),

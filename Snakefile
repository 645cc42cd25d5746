# diffcomp: controlled experiments on how diffusion models learn, and fail, to compose concepts.
# The quick CPU configuration is config.yaml; the paper scale is config.paper.yaml.
from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default; a --configfile (e.g. the SLURM profile's config.paper.yaml) replaces it
# instead of being merged on top of it, so no quick-scale value leaks into a paper-scale run.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/bumps_data.smk"
include: "rules/bumps_train.smk"
include: "rules/bumps_figures.smk"
include: "rules/relational.smk"


rule all:
    default_target: True
    input:
        all_targets(),

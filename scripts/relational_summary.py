"""Rule relational_summary: each (experiment, split) at its final checkpoint, accuracies pooled over
seeds with their 95% intervals (inside [0, 1]), and each experiment's paired difference from the
baseline with its interval (inside [-1, 1])."""

from diffcomp.relational.summary import write_summary
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    summary = write_summary(snakemake.input[0], snakemake.output[0], baseline=snakemake.params.baseline)
    log.info("%d rows", len(summary))

"""Rule relational_metrics: the per-run tables as one tidy table."""

from diffcomp.relational.evaluate import combine_metrics
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    table = combine_metrics(list(snakemake.input), snakemake.output[0])
    log.info("%d rows from %d runs", len(table), len(snakemake.input))

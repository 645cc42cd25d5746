"""Rule bumps_metrics: the tidy study table results/bumps/metrics.csv."""

from diffcomp.bumps.metrics import combine_metrics
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    table = combine_metrics(snakemake.input, snakemake.output[0])
    log.info("%d rows from %d runs", len(table), table["run"].nunique())

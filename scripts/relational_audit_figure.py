"""Rule relational_audit_figure: bars of completeness, balance and coverage per split."""

from diffcomp.relational.report import write_audit_figure
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    write_audit_figure(snakemake.input.table, snakemake.output[0])
    log.info("wrote %s", snakemake.output[0])

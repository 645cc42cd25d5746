"""Rule relational_audit_table: results/relational/audit.csv, one row per configured split."""

from diffcomp.relational.report import write_audit_table
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    table = write_audit_table(list(snakemake.input), snakemake.params.specs, snakemake.output[0])
    log.info("audit table of %d splits:\n%s", len(table), table.to_string(index=False))

"""Rule relational_audit: audit.json of a split's training triples (what `diffcomp audit --json` writes)."""

from diffcomp.io import write_json
from diffcomp.relational.audit import audit_file, format_audit
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    report = audit_file(snakemake.input.train, snakemake.params.vocab_size)
    write_json(snakemake.output[0], report)
    log.info("%s\n%s", snakemake.input.train, format_audit(report))

"""Rule bumps_audit: audit.json (counts, hole fraction, marginal coverage, neighbour overlap)."""

from diffcomp.bumps.audit import audit
from diffcomp.bumps.data import BumpDataset, read_labels
from diffcomp.io import write_json
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    spec = BumpDataset.from_config(snakemake.params.spec, snakemake.params.spec["image_size"])
    report = audit(spec, read_labels(snakemake.input.labels))
    write_json(snakemake.output[0], report)
    log.info("%s: %d images, %d held out", spec.name, report["n_images"], report["n_ood"])

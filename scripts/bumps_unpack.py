"""Rule bumps_unpack: one run's train/ folder (snapshots, train.json) from its pack's stacked snapshots."""

from diffcomp.packing import unpack_run
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    written = unpack_run(snakemake.input.pack, snakemake.params.index, snakemake.output[0])
    log.info(
        "run %d of %s: %d snapshots -> %s",
        snakemake.params.index,
        snakemake.input.pack,
        len(written),
        snakemake.output[0],
    )

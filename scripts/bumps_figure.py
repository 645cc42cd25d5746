"""Rules bumps_figure_*: one figure of the bump study (PNG + PDF)."""

from diffcomp.bumps.figure_jobs import make_figure
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    make_figure(
        snakemake.params.kind,
        snakemake.input.metrics,
        list(snakemake.output),
        options=snakemake.params.options,
        phases_run=snakemake.params.get("phases_run"),
        holes=snakemake.params.get("holes"),
    )
    log.info("wrote %s", ", ".join(snakemake.output))

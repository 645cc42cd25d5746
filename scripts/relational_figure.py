"""Rule relational_figure: one figure of the relational study (kind from the wildcard)."""

from pathlib import Path

from diffcomp.relational.figures import write_relational_figure
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    samples = sorted(Path(snakemake.input.samples).glob("step*.npz"))
    write_relational_figure(
        snakemake.wildcards.kind,
        snakemake.input.metrics,
        list(snakemake.output),
        baseline=snakemake.params.baseline,
        samples_npz=samples[-1] if samples else None,
        icons_npz=snakemake.input.icons,
    )
    log.info("wrote %s", ", ".join(snakemake.output))

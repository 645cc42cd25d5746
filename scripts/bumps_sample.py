"""Rule bumps_sample: sample every kept checkpoint of a run (one job per run)."""

from diffcomp.bumps.sample import sample_run
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    runtime = {**snakemake.config["bumps"]["training"], "threads": snakemake.threads}
    written = sample_run(
        snakemake.params.run,
        snakemake.params.sampling,
        runtime,
        snakemake.input.labels,
        snakemake.input.train,
        snakemake.output[0],
    )
    log.info("sampled %d checkpoints", len(written))

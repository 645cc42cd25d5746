"""Rule bumps_evaluate: metrics of every checkpoint of a run, in one process."""

from pathlib import Path

from diffcomp.bumps.metrics import evaluate_run
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    table = evaluate_run(
        snakemake.params.evaluation,
        snakemake.params.spec,
        snakemake.params.seed,
        sorted(Path(snakemake.input.samples).glob("step*.npz")),
        snakemake.output.metrics,
        snakemake.output.embeddings,
    )
    log.info("evaluated %d checkpoints", len(table))

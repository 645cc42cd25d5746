"""Rule relational_evaluate: train and test accuracy of every checkpoint of a run, in one process."""

from diffcomp.relational.evaluate import evaluate_run
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    table = evaluate_run(
        snakemake.input.samples,
        snakemake.input.icons,
        snakemake.input.audit,
        snakemake.params.info,
        snakemake.output[0],
        train_csv=snakemake.input.train,
    )
    log.info("evaluated %d checkpoints", len(table))

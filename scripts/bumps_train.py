"""Rule bumps_train: train one (dataset, seed) run, resuming from its last checkpoint if there is one."""

from diffcomp.bumps.train import train_run
from diffcomp.workflow import resumable_run, run_training

run_training(
    snakemake,
    lambda log: train_run(
        resumable_run(snakemake, snakemake.params.run),
        {**snakemake.config["bumps"]["training"], "threads": snakemake.threads},
        snakemake.input.labels,
        snakemake.output[0],
    ),
)

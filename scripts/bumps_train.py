"""Rule bumps_train: train one (dataset, seed) run, resuming from its last checkpoint if there is one."""

import sys

from diffcomp.bumps.train import EXIT_TIME_LIMIT, TrainingInterrupted, train_run
from diffcomp.workflow import rule_logging

interrupted = False
with rule_logging(snakemake) as log:
    runtime = {**snakemake.config["bumps"]["training"], "threads": snakemake.threads}
    try:
        summary = train_run(snakemake.params.run, runtime, snakemake.input.labels, snakemake.output[0])
        log.info("finished %d steps at %.2f steps/s", summary["steps"], summary["steps_per_second"] or 0)
    except TrainingInterrupted as stop:
        log.warning("%s", stop)
        interrupted = True
if interrupted:
    # not an error: the state is saved and Snakemake's retry (or SLURM's requeue) resumes it
    sys.exit(EXIT_TIME_LIMIT)

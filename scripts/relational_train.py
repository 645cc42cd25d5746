"""Rules relational_pretrain and relational_train: train one run, resuming from its last checkpoint if there is one."""

import sys

from diffcomp.relational.train import train_relational_run
from diffcomp.training import EXIT_TIME_LIMIT, TrainingInterrupted
from diffcomp.workflow import rule_logging

interrupted = False
with rule_logging(snakemake) as log:
    runtime = {**snakemake.config["relational"]["training"], "threads": snakemake.threads}
    try:
        summary = train_relational_run(
            snakemake.params.run,
            runtime,
            snakemake.input.icons,
            snakemake.output[0],
            train_csv=snakemake.input.get("train"),
            init_dir=snakemake.input.get("init"),
        )
        log.info("finished %d steps at %.2f steps/s", summary["steps"], summary["steps_per_second"] or 0)
    except TrainingInterrupted as stop:
        log.warning("%s", stop)
        interrupted = True
if interrupted:
    # not an error: the state is saved and Snakemake's retry (or SLURM's requeue) resumes it
    sys.exit(EXIT_TIME_LIMIT)

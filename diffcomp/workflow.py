"""Glue for the thin rule scripts in scripts/: logging into the rule's log file, what keys a run's resume states."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys

from diffcomp.errors import EXIT_TIME_LIMIT, TrainingInterrupted


@contextlib.contextmanager
def rule_logging(snakemake):
    """Send logging, stdout and stderr (tqdm, warnings, tracebacks) of a rule script to its log file.

    The traceback of a failing script is written to the log before the exception propagates, so
    Snakemake's error report and the log both show it.
    """
    log_path = snakemake.log[0] if len(snakemake.log) else None
    if log_path is None:
        yield logging.getLogger("diffcomp")
        return
    with open(log_path, "w", buffering=1) as handle:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = handle
        logging.basicConfig(
            stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
        )
        try:
            yield logging.getLogger("diffcomp")
        except BaseException:
            logging.getLogger("diffcomp").exception("rule %s failed", snakemake.rule)
            raise
        finally:
            sys.stdout, sys.stderr = saved


def run_training(snakemake, train) -> None:
    """Run a training rule's ``train(log)``; a run that saved its state and stopped for its time
    limit exits with EXIT_TIME_LIMIT (75), not as an error: Snakemake's retry (or SLURM's requeue)
    resumes it."""
    interrupted = False
    with rule_logging(snakemake) as log:
        try:
            summary = train(log)
            log.info("finished %d steps at %.2f steps/s", summary["steps"], summary["steps_per_second"] or 0)
        except TrainingInterrupted as stop:
            log.warning("%s", stop)
            interrupted = True
    if interrupted:
        sys.exit(EXIT_TIME_LIMIT)


def files_digest(paths) -> str:
    """sha256 of the contents of ``paths``, in order; a folder counts as its files (recursively, by
    relative name) with their names."""
    digest = hashlib.sha256()
    for path in paths:
        path = os.fspath(path)
        files = (
            sorted(os.path.join(top, name) for top, _, names in os.walk(path) for name in names)
            if os.path.isdir(path)
            else [path]
        )
        digest.update(f"input {len(files)}\n".encode())
        for file in files:
            digest.update(f"{os.path.relpath(file, path)}\n".encode())
            with open(file, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def resumable_run(snakemake, run: dict) -> dict:
    """``run`` (what the config says determines a run's weights) with what else does: the code its
    job runs (the rule's ``params.code``, diffcomp.code_digest) and the contents of the job's input
    files. The trainer names a run's resume states by a hash of the run, so a job resumes only a
    state that the same code wrote from the same inputs; other code or other inputs train from
    scratch, where resuming would publish the old weights as new."""
    return {**run, "job": {"code": snakemake.params.code, "inputs": files_digest(snakemake.input)}}

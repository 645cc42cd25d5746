"""The package's exceptions (imports no other diffcomp module).

:class:`ConfigError` is raised by the schema validation in ``diffcomp.config``, each study's
semantic checks and the parse-time build checks in ``diffcomp.checks``; ``diffcomp.config``
re-exports it. :class:`TrainingInterrupted` and :data:`EXIT_TIME_LIMIT` belong to the trainer
(``diffcomp.training`` re-exports them); they live here so that the rule scripts' glue
(``diffcomp.workflow``) handles a stopped training without importing the trainer, whose code
then counts only for the jobs that train (``diffcomp.code_digest``).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value breaks the schema or a semantic rule."""


# Exit status of a job that checkpointed and stopped for its time limit (EX_TEMPFAIL):
# Snakemake's retries (or the SLURM plugin's requeue) then resume it.
EXIT_TIME_LIMIT = 75


class TrainingInterrupted(RuntimeError):
    """Training saved its state and stopped early (time limit or signal); a retry resumes it."""

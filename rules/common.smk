# Shared helpers: config validation, the expanded dataset/run lists, the targets of `rule all`.
import os
import re
import sys

# Rule scripts import the diffcomp package from this checkout, also inside conda envs and on
# cluster nodes where it is not pip-installed.
sys.path.insert(0, workflow.basedir)
# (update() because this sets the variable for the jobs; nothing here reads it.)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p
    )
)

from snakemake.exceptions import WorkflowError

from diffcomp.config import ConfigError, validate_config
from diffcomp.bumps.config import dataset_specs, semantic_config

try:
    config.update(validate_config(config))
except ConfigError as err:
    raise WorkflowError(str(err)) from None


RESULTS = "results"
LOGS = f"{RESULTS}/logs"

BUMPS = config.get("bumps")
BUMP_DATASETS = dataset_specs(BUMPS) if BUMPS else {}


wildcard_constraints:
    dataset="|".join(map(re.escape, BUMP_DATASETS)) or "NONE",
    seed=r"\d+",


def bump_dataset_params(wildcards):
    """Everything that defines a dataset's content: a change reruns its rules."""
    return {"image_size": BUMPS["image_size"], **BUMP_DATASETS[wildcards.dataset]}


def bump_run_definition(wildcards):
    """What determines a run's weights (dataset, seed, model, diffusion, training): a change retrains."""
    return semantic_config(BUMPS, bump_dataset_params(wildcards), int(wildcards.seed))


def bump_run_files(name):
    """One file per (dataset, seed) run of the bump study."""
    return expand(
        f"{RESULTS}/bumps/runs/{{dataset}}/seed{{seed}}/{name}",
        dataset=BUMP_DATASETS,
        seed=BUMPS["seeds"],
    )


def _figure_options():
    """bumps.figures with its nulls resolved against the configured datasets."""
    if not BUMPS:
        return {}
    options = dict(BUMPS["figures"])
    grid = BUMPS["grid"]
    if options["phases_run"] is None:
        first = next(iter(BUMP_DATASETS))
        options["phases_run"] = f"{first}_seed{BUMPS['seeds'][0]}"
    if options["diagram_sigma"] is None:
        options["diagram_sigma"] = (grid["sigmas"] or [1.0])[0]
    return options


BUMP_FIGURE_OPTIONS = _figure_options()


def bump_phases_run_file(name):
    if not BUMPS:
        return []
    dataset, _, seed = BUMP_FIGURE_OPTIONS["phases_run"].rpartition("_seed")
    return f"{RESULTS}/bumps/runs/{dataset}/seed{seed}/{name}"


def bump_hole_datasets():
    return [name for name, spec in BUMP_DATASETS.items() if spec["holes"]]


def bump_hole_samples():
    """Samples of the first seed of each dataset with a hole (for the hole panels)."""
    seed = BUMPS["seeds"][0]
    return [
        f"{RESULTS}/bumps/runs/{name}/seed{seed}/samples"
        for name in bump_hole_datasets()
    ]


def bump_hole_panels():
    return {
        name: (samples, BUMP_DATASETS[name]["holes"])
        for name, samples in zip(bump_hole_datasets(), bump_hole_samples())
    }


def all_targets():
    targets = []
    if BUMPS:
        targets += expand(
            f"{RESULTS}/bumps/datasets/{{dataset}}/{{file}}",
            dataset=BUMP_DATASETS,
            file=["labels.csv", "preview.png", "audit.json"],
        )
        targets.append(f"{RESULTS}/bumps/metrics.csv")
        targets += expand(
            f"{RESULTS}/bumps/figures/{{kind}}.{{ext}}",
            kind=["phases", "phase_diagram", "sigma", "imbalance", "holes"],
            ext=["png", "pdf"],
        )
    if "relational" in config:
        targets += relational_targets()
    return targets

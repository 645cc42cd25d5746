# Shared helpers: config validation, the expanded dataset/run lists, the targets of `rule all`.
import os
import re
import sys
from types import SimpleNamespace

# Rule scripts import the diffcomp package from this checkout, also inside conda envs and on
# cluster nodes where it is not pip-installed.
sys.path.insert(0, workflow.basedir)
# (update() because this sets the variable for the jobs; nothing here reads it.)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p
    )
)


from diffcomp.code_digest import code_index
from diffcomp.config import ConfigError, validate_config
from diffcomp.bumps.config import dataset_specs, semantic_config
from diffcomp.relational.config import (
    encoder_label,
    experiment_settings,
    intervention_label,
    intervention_parameters,
    packs as relational_packs,
    pretrain_experiment,
    run_definition,
    run_text_encoder,
    sampling_definition,
    run_id,
    runs,
    shared_text_encoder_id,
)
from diffcomp.relational.splits import Split

# The config files in force: a --configfile replaces config.yaml (see the Snakefile).
CONFIG_FILES = [str(f) for f in workflow.overwrite_configfiles] or ["config.yaml"]

try:
    # a config that passed the model build checks is remembered there (diffcomp.config)
    config.update(
        validate_config(config, build_check_cache=".snakemake/diffcomp/build_checks")
    )
except ConfigError as err:
    # The message is about the user's config, not this file: no traceback pointing here.
    print(f"Error in config file {', '.join(CONFIG_FILES)}:\n{err}", file=sys.stderr)
    sys.exit(1)


def code_digest(script, *modules):
    """The digest of the code a rule's jobs run (diffcomp.code_digest): ``script`` (relative to
    the workflow's directory), every diffcomp module it imports, transitively, and ``modules``
    (what it imports by name at run time) with theirs. Every rule passes it as ``params.code``, so
    a change to that code reruns the rule's jobs; comments, docstrings, formatting do not.
    """
    return code_index(workflow.basedir).digest(script, *modules)


RESULTS = "results"
LOGS = f"{RESULTS}/logs"
# Training jobs are the longest: Snakemake starts them before any ready sampling or evaluation
# job, so that a run does not end with every core but one idle behind its last training job.
TRAINING_PRIORITY = 10
# The short jobs that training waits for (datasets, vocabularies, splits, the shared encoders) go
# first of all: otherwise they queue behind ready training jobs of the other study, whose
# training then starts late and ends alone on one core.
UPSTREAM_PRIORITY = 20

BUMPS = config.get("bumps")
BUMP_DATASETS = dataset_specs(BUMPS) if BUMPS else {}


wildcard_constraints:
    dataset="|".join(map(re.escape, BUMP_DATASETS)) or "NONE",
    seed=r"\d+",
    pack=r"\d+",


def bump_dataset_params(wildcards):
    """Everything that defines a dataset's content: a change reruns its rules."""
    return {"image_size": BUMPS["image_size"], **BUMP_DATASETS[wildcards.dataset]}


def bump_run_definition(wildcards):
    """What determines a run's weights (dataset, seed, model, diffusion, training): a change retrains."""
    return semantic_config(BUMPS, bump_dataset_params(wildcards), int(wildcards.seed))


# Runs trained together when bumps.pack_size > 1: datasets x seeds in config order, cut into packs.
BUMP_PACK_SIZE = BUMPS["pack_size"] if BUMPS else 1
BUMP_RUN_LIST = [(d, s) for d in BUMP_DATASETS for s in BUMPS["seeds"]] if BUMPS else []
BUMP_PACKS = [
    BUMP_RUN_LIST[i : i + BUMP_PACK_SIZE]
    for i in range(0, len(BUMP_RUN_LIST), BUMP_PACK_SIZE)
]


def bump_pack_position(wildcards):
    """(pack, index in the pack) of the run (dataset, seed)."""
    run = (wildcards.dataset, int(wildcards.seed))
    return divmod(BUMP_RUN_LIST.index(run), BUMP_PACK_SIZE)


def bump_pack_runs(wildcards):
    """The run definitions of a pack, in order: what determines its weights."""
    return [
        semantic_config(
            BUMPS, {"image_size": BUMPS["image_size"], **BUMP_DATASETS[d]}, s
        )
        for d, s in BUMP_PACKS[int(wildcards.pack)]
    ]


def bump_pack_labels(wildcards):
    return [
        f"{RESULTS}/bumps/datasets/{d}/labels.csv"
        for d, _ in BUMP_PACKS[int(wildcards.pack)]
    ]


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


def relational_text_encoder_file(text_encoder, split):
    """The shared caption-pretrained weights of a run's encoder on ``split`` (rule
    relational_text_encoder), or None when it has no caption pretraining."""
    key = shared_text_encoder_id(text_encoder, RELATIONAL_SPLITS[split])
    if key is None:
        return None
    return f"{RESULTS}/relational/text_encoders/{split}/{key}.safetensors"


def relational_pretrain_inputs(wc):
    """Icons of the vocabulary, the split's training triples (whose captions its encoder is
    pretrained on) and the shared caption-pretrained encoder (if any)."""
    spec = RELATIONAL_SPLITS[wc.split]
    inputs = {
        "icons": rules.relational_vocabulary.output.icons.format(
            vocab_size=spec["vocab_size"], icon_size=RELATIONAL_ICON_SIZE
        ),
        "train": rules.relational_split.output.train.format(split=wc.split),
    }
    settings = experiment_settings(RELATIONAL, wc.experiment)
    encoder = run_text_encoder(settings["text_encoder"], int(wc.seed))
    shared = relational_text_encoder_file(encoder, wc.split)
    if shared:
        inputs["text_encoder"] = shared
    return inputs


def relational_train_inputs(wc):
    """Icons and triples of the run's split, the shared caption-pretrained encoder, the image
    encoder of the contrastive losses and the pretraining run it starts from (if any): all of
    them learned from the split's training triples only."""
    spec = RELATIONAL_SPLITS[wc.split]
    inputs = {
        "icons": rules.relational_vocabulary.output.icons.format(
            vocab_size=spec["vocab_size"], icon_size=RELATIONAL_ICON_SIZE
        ),
        "train": rules.relational_split.output.train.format(split=wc.split),
        "test": rules.relational_split.output.test.format(split=wc.split),
    }
    settings = experiment_settings(RELATIONAL, wc.experiment)
    encoder = run_text_encoder(settings["text_encoder"], int(wc.seed))
    shared = relational_text_encoder_file(encoder, wc.split)
    if shared:
        inputs["text_encoder"] = shared
    projection = settings["projection"]
    if settings["contrastive"] and not projection:
        inputs["image_encoder"] = rules.relational_image_encoder.output[0].format(
            split=wc.split
        )
    if projection:
        # a projection fine-tunes the base experiment's run of this split and seed
        inputs["init"] = (
            f"{RESULTS}/relational/runs/{projection['base']}/{wc.split}/seed{wc.seed}/train"
        )
    elif RELATIONAL["single_object_pretraining_steps"]:
        inputs["init"] = RELATIONAL_PRETRAIN.format(
            experiment=pretrain_experiment(RELATIONAL, wc.experiment),
            split=wc.split,
            seed=wc.seed,
        )
    return inputs


# Runs trained together when relational.pack_size > 1: each packable experiment's runs, cut into packs.
RELATIONAL_PACKS = (
    relational_packs(config["relational"]) if "relational" in config else {}
)


def relational_pack_position(wc):
    """(pack, index in the pack) of the run (experiment, split, seed)."""
    members = [m for pack in RELATIONAL_PACKS[wc.experiment] for m in pack]
    return divmod(
        members.index((wc.split, int(wc.seed))), config["relational"]["pack_size"]
    )


def relational_pack_members(wc):
    return [
        SimpleNamespace(experiment=wc.experiment, split=split, seed=seed)
        for split, seed in RELATIONAL_PACKS[wc.experiment][int(wc.pack)]
    ]


def relational_pack_inputs(wc):
    """Each member's icons, training triples and init folder, as lists in pack order."""
    members = [relational_train_inputs(m) for m in relational_pack_members(wc)]
    return {
        key: [inputs[key] for inputs in members]
        for key in ("icons", "train", "init", "text_encoder")
        if key in members[0]
    }


def relational_pack_runs(wc):
    """The run definitions of a pack, in order: what determines its weights."""
    return [
        run_definition(config["relational"], m.experiment, m.split, m.seed)
        for m in relational_pack_members(wc)
    ]


def relational_run_definition(wc):
    return run_definition(RELATIONAL, wc.experiment, wc.split, int(wc.seed))


def relational_sampling(wc):
    return sampling_definition(RELATIONAL, wc.experiment)


def relational_run_info(wc):
    """The run's descriptive columns in the relational metrics table."""
    settings = experiment_settings(config["relational"], wc.experiment)
    spec = config["relational"]["splits"]
    split = next(s for s in spec if s["name"] == wc.split)
    return {
        "run": f"{wc.experiment}/{wc.split}/seed{wc.seed}",
        "experiment": wc.experiment,
        "split": wc.split,
        "family": Split.from_config(split).describe(),
        "vocab_size": split["vocab_size"],
        "encoder": encoder_label(settings["text_encoder"]),
        "pos_emb": settings["model"]["pos_emb"],
        "seed": int(wc.seed),
        "intervention": intervention_label(settings),
        "intervention_params": intervention_parameters(settings),
    }


def relational_samples_run():
    """The run whose samples the sample-grid figure shows."""
    section = config["relational"]
    chosen = section["figures"]["samples_run"]
    if chosen is None and not runs(section):
        return None
    return chosen or run_id(*runs(section)[0])


def relational_samples_file():
    """The samples of that run's final checkpoint come from its samples folder."""
    return f"{RESULTS}/relational/runs/{relational_samples_run()}/samples"


def relational_samples_icons():
    section = config["relational"]
    split = relational_samples_run().split("/")[1]
    vocab = next(s["vocab_size"] for s in section["splits"] if s["name"] == split)
    return f"{RESULTS}/relational/vocab/N{vocab}_S{section['icon_size']}/icons.npz"


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

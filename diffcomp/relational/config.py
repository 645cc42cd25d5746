"""The relational study's section of the config: semantic checks and the expanded split list.

The schema (relational.schema.yaml) checks types; the rules here need the split families:
a family's own parameters (band's ``m``, random's ``size``) present and no others, band's ``m``
small enough to leave test pairs, a vocabulary no larger than the glyph list, unique names.
"""

from __future__ import annotations

from diffcomp.errors import ConfigError
from diffcomp.relational.icons import MAX_VOCAB_SIZE
from diffcomp.relational.splits import Split, SplitSpecError
from diffcomp.runtime_keys import RUNTIME_KEYS


def split_specs(section: dict) -> dict[str, dict]:
    """Every configured split by name, as plain dicts (what the rules pass as params)."""
    return {spec["name"]: dict(spec) for spec in section.get("splits", [])}


def vocab_sizes(section: dict) -> list[int]:
    """The distinct vocabulary sizes of the configured splits: one icon set is rendered for each."""
    return sorted({spec["vocab_size"] for spec in section.get("splits", [])})


def check_relational(section: dict) -> None:
    """Rules the schema cannot express; each message names the key path."""
    first_use: dict[str, int] = {}
    for k, spec in enumerate(section.get("splits", [])):
        where = f"relational.splits[{k}]"
        name = spec["name"]
        if name in first_use:
            raise ConfigError(
                f"{where}.name: split name {name!r} is used twice (first at relational.splits[{first_use[name]}])"
            )
        first_use[name] = k
        if spec["vocab_size"] > MAX_VOCAB_SIZE:
            raise ConfigError(
                f"{where}.vocab_size: {spec['vocab_size']} nouns requested, but the icon vocabulary has "
                f"{MAX_VOCAB_SIZE} glyphs (diffcomp.relational.icons.GLYPHS)"
            )
        try:
            Split.from_config(spec)
        except SplitSpecError as err:
            key = f".{err.key}" if err.key else ""
            raise ConfigError(f"{where}{key} (split {name!r}): {err}") from None
    check_experiments(section)


# --------------------------------------------------------------------------------------------
# Experiments and runs
# --------------------------------------------------------------------------------------------
def experiment_names(section: dict) -> list[str]:
    return [spec["name"] for spec in section.get("experiments", [])]


def baseline_experiment(section: dict) -> str | None:
    """The first experiment: the one every figure compares against (None when nothing is trained)."""
    names = experiment_names(section)
    return names[0] if names else None


def experiment_settings(section: dict, name: str) -> dict:
    """An experiment's text encoder, model, splits and projection: the study's settings with the
    experiment's overrides; a projection experiment takes its base experiment's model and encoder."""
    spec = next((e for e in section["experiments"] if e["name"] == name), None)
    if spec is None:
        raise KeyError(f"relational.experiments has no experiment named {name!r}")
    if "projection" in spec:
        base = experiment_settings(section, spec["projection"]["base"])
        return {**base, "splits": spec.get("splits") or base["splits"], "projection": dict(spec["projection"])}
    guidance = {**GUIDANCE_OFF, **section.get("guidance", {}), **spec.get("guidance", {})}
    text_encoder = dict(section["text_encoder"])
    if "text_encoder" in spec:
        text_encoder["name"] = spec["text_encoder"]
    if "text_encoder_trainable" in spec:
        text_encoder["trainable"] = spec["text_encoder_trainable"]
    if "text_encoder_caption_pretraining_steps" in spec:
        text_encoder["pretraining_steps"] = spec["text_encoder_caption_pretraining_steps"]
    if "text_encoder_foreign_nouns" in spec:
        text_encoder["foreign_nouns"] = spec["text_encoder_foreign_nouns"]
    if text_encoder["name"] != "t5-scratch":
        # caption pretraining (and its foreign nouns) is t5-scratch's: a pretrained encoder ignores
        # the study-wide values, so they neither enter its runs' fingerprints nor raise an error;
        # an experiment that sets one for such an encoder itself is refused by check_relational
        for key in ("caption_pretraining_steps", "foreign_nouns"):
            if f"text_encoder_{key}" not in spec:
                text_encoder[key] = 0
    model = dict(section["model"])
    for key in ("pos_emb", "vertical_padding"):
        if key in spec:
            model[key] = spec[key]
    splits = spec.get("splits") or list(split_specs(section))
    contrastive = dict(spec["contrastive"]) if "contrastive" in spec else None
    return {
        "text_encoder": text_encoder,
        "model": model,
        "splits": splits,
        "projection": None,
        "contrastive": contrastive,
        "guidance": guidance,
    }


# classifier-free guidance off: no conditioning dropout, the conditional prediction alone
GUIDANCE_OFF = {"condition_dropout": 0.0, "scale": 1.0}


def sampling_definition(section: dict, experiment: str) -> dict:
    """The sampling settings of an experiment's runs: the study's, with ``guidance_scale`` when
    guidance is on (absent when off, so samples made before the key existed stay valid)."""
    scale = experiment_settings(section, experiment)["guidance"]["scale"]
    sampling = dict(section["sampling"])
    return {**sampling, "guidance_scale": scale} if scale != 1 else sampling


CONTRASTIVE_TERMS = ("fake_to_fake", "fake_to_real")


def intervention_label(settings: dict) -> str:
    """The metrics table's ``intervention``: baseline, projection-<variant> or contrastive-<which>
    (fake_to_fake, fake_to_real, both, or none when both weights are 0)."""
    projection, contrastive = settings["projection"], settings.get("contrastive")
    if projection:
        return f"projection-{projection['variant']}"
    if contrastive:
        used = [term for term in CONTRASTIVE_TERMS if contrastive[term]]
        return "contrastive-" + (used[0] if len(used) == 1 else {0: "none", 2: "both"}[len(used)])
    return "baseline"


def intervention_parameters(settings: dict) -> str:
    """The intervention's parameters as "key=value" pairs (the metrics table's ``intervention_params``;
    "none" for no intervention, so the cell is never empty, i.e. missing, in the CSV)."""
    projection, contrastive = settings["projection"], settings.get("contrastive")
    if projection:
        keys = ["base", "variant", "window", "early_steps_above", "steps", "learning_rate", "max_grad_norm"]
        if projection["variant"] != "window":
            keys.remove("window")
        return " ".join(f"{key}={projection[key]}" for key in keys)
    if contrastive:
        return " ".join(f"{key}={contrastive[key]}" for key in (*CONTRASTIVE_TERMS, "temperature"))
    return "none"


def encoder_label(text_encoder: dict) -> str:
    """The encoder as the metrics table names it: t5-scratch, t5-scratch-captions (pretrained on the
    captions' text), either with -trained when trained with the UNet, minilm, pretrained:<dir name>."""
    name = text_encoder["name"]
    if name.startswith("pretrained:"):
        return "pretrained:" + name.removeprefix("pretrained:").rstrip("/").rsplit("/", 1)[-1]
    if text_encoder.get("caption_pretraining_steps"):
        name += "-captions"
    return f"{name}-trained" if text_encoder["trainable"] else name


# the text-encoder keys that determine a caption-pretrained t5-scratch encoder's weights
_PRETRAINING_KEYS = (
    "seed",
    "d_model",
    "num_layers",
    "num_heads",
    "d_ff",
    "max_length",
    "caption_pretraining_steps",
    "foreign_nouns",
)


def run_text_encoder(text_encoder: dict, seed: int) -> dict:
    """An experiment's text encoder as its run of seed ``seed`` uses it: t5-scratch's initial
    weights and caption-pretraining batches are drawn from ``text_encoder.seed + seed``, so each
    run seed has its own encoder and an interval over seeds includes the encoder's variation."""
    return {**text_encoder, "seed": text_encoder["seed"] + seed}


def shared_text_encoder_id(text_encoder: dict, split: dict) -> str | None:
    """The id of the caption-pretrained weights a run's encoder (``text_encoder``, as
    :func:`run_text_encoder` gives it) starts from on ``split`` (its spec), which one job
    pretrains on the split's training captions for every run and sampling job that uses them
    (rule relational_text_encoder); None for an encoder without caption pretraining. It covers
    everything that changes those weights: the encoder's sizes and seed, the steps, the split,
    and the objective with its optimiser settings. Whether the encoder is then trained with the
    UNet does not matter."""
    if text_encoder["name"] != "t5-scratch" or not text_encoder.get("caption_pretraining_steps"):
        return None
    import hashlib
    import json

    from diffcomp.relational.text.pretraining import PRETRAINING_SETTINGS

    keys = {key: text_encoder.get(key) for key in _PRETRAINING_KEYS}
    blob = json.dumps({"encoder": keys, "split": dict(split), "pretraining": PRETRAINING_SETTINGS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def shared_text_encoders(section: dict) -> dict[tuple[str, str], dict]:
    """Every run's caption-pretrained encoder, by (split name, :func:`shared_text_encoder_id` id)."""
    specs = split_specs(section)
    shared = {}
    for experiment, split, seed in runs(section):
        encoder = run_text_encoder(experiment_settings(section, experiment)["text_encoder"], seed)
        key = shared_text_encoder_id(encoder, specs[split])
        if key is not None:
            shared.setdefault((split, key), encoder)
    return shared


def runs(section: dict) -> list[tuple[str, str, int]]:
    """Every (experiment, split, seed) run, experiments in config order."""
    return [
        (name, split, seed)
        for name in experiment_names(section)
        for split in experiment_settings(section, name)["splits"]
        for seed in section["seeds"]
    ]


def run_id(experiment: str, split: str, seed: int) -> str:
    return f"{experiment}/{split}/seed{seed}"


def _training_semantics(section: dict, settings: dict | None = None) -> dict:
    """The training keys that determine a run's weights; with an experiment's ``settings``, its
    conditioning dropout too (absent when 0, so runs trained before the key existed stay valid)."""
    training = {k: v for k, v in section["training"].items() if k not in RUNTIME_KEYS}
    dropout = settings["guidance"]["condition_dropout"] if settings else 0
    return {**training, "condition_dropout": dropout} if dropout else training


def pretrain_definition(section: dict, experiment: str, split: str, seed: int) -> dict:
    """What determines the weights of a single-object pretraining run. It belongs to a split:
    its text encoder is the one the split's pair runs use, caption-pretrained on that split's
    training captions only."""
    settings = experiment_settings(section, experiment)
    spec = split_specs(section)[split]
    return {
        "stage": "pretrain",
        "icon_size": section["icon_size"],
        "vocab_size": spec["vocab_size"],
        "split": spec,
        "seed": seed,
        "text_encoder": run_text_encoder(settings["text_encoder"], seed),
        "model": settings["model"],
        "diffusion": section["diffusion"],
        "training": {**_training_semantics(section, settings), "steps": section["single_object_pretraining_steps"]},
    }


def pretrain_experiment(section: dict, experiment: str) -> str:
    """The experiment whose pretraining runs ``experiment`` starts from: the first one, in config
    order, with the same pretraining settings (model and encoder), so that experiments differing
    only in their pair training (contrastive losses) share one pretraining run."""

    def settings(name: str) -> tuple:
        own = experiment_settings(section, name)
        return own["text_encoder"], own["model"], _training_semantics(section, own)

    for name in experiment_names(section):
        if "projection" not in next(e for e in section["experiments"] if e["name"] == name):
            if settings(name) == settings(experiment):
                return name
    return experiment


def run_definition(section: dict, experiment: str, split: str, seed: int) -> dict:
    """What determines a run's weights (and nothing else): a change retrains it.

    A pair run may start from a pretraining run; a projection run starts from its base
    experiment's run and trains only the projection, for its own steps and learning rate.
    """
    settings = experiment_settings(section, experiment)
    spec = split_specs(section)[split]
    run = {
        "icon_size": section["icon_size"],
        "split": spec,
        "seed": seed,
        "text_encoder": run_text_encoder(settings["text_encoder"], seed),
        "model": settings["model"],
        "diffusion": section["diffusion"],
    }
    projection = settings["projection"]
    if projection:
        steps = projection["steps"]
        training = {
            **_training_semantics(section),
            "steps": steps,
            "learning_rate": projection["learning_rate"],
            "warmup_steps": min(section["training"]["warmup_steps"], steps // 10),
        }
        init = run_definition(section, projection["base"], split, seed)
        return {**run, "stage": "projection", "training": training, "projection": projection, "init": init}
    staged = section["single_object_pretraining_steps"] > 0
    pretrain = pretrain_definition(section, experiment, split, seed) if staged else None
    run = {**run, "stage": "pairs", "training": _training_semantics(section, settings), "init": pretrain}
    if settings["contrastive"]:
        run["contrastive"] = settings["contrastive"]
        run["image_encoder"] = dict(section["image_encoder"])
    return run


def unpackable_reason(run: dict) -> str | None:
    """Why ``run`` (a run_definition) cannot train in a pack, or None if it can."""
    if run.get("contrastive"):
        return "its contrastive losses (a second forward pass and an image encoder per run) are not packed"
    if run["training"].get("condition_dropout"):
        return "conditioning dropout is not packed"
    if run["text_encoder"]["trainable"]:
        # transformers' T5 attention mask branches on tensor values, which torch.vmap cannot follow
        return "a trained text encoder cannot run under torch.vmap"
    return None


def packs(section: dict) -> dict[str, list[list[tuple[str, int]]]]:
    """The packs of every packable experiment: its (split, seed) runs in config order, cut into
    ``pack_size`` runs each. Empty with pack_size 1; unpackable experiments are left out."""
    size = section.get("pack_size", 1)
    if size <= 1:
        return {}
    plan = {}
    for name in experiment_names(section):
        members = [(split, seed) for experiment, split, seed in runs(section) if experiment == name]
        if unpackable_reason(run_definition(section, name, *members[0])) is None:
            plan[name] = [members[i : i + size] for i in range(0, len(members), size)]
    return plan


def check_projection_experiment(section: dict, spec: dict, where: str, earlier: dict) -> None:
    """A projection fine-tunes an earlier, ordinary experiment's runs: same splits or fewer, nothing overridden."""
    base = spec["projection"]["base"]
    by_name = {e["name"]: e for e in section["experiments"]}
    if base not in earlier or base == spec["name"]:
        raise ConfigError(f"{where}.projection.base: {base!r} is not an experiment listed before {spec['name']!r}")
    if "projection" in by_name[base]:
        raise ConfigError(f"{where}.projection.base: {base!r} is itself a projection; fine-tune an ordinary experiment")
    overridable = (
        "text_encoder",
        "text_encoder_trainable",
        "text_encoder_caption_pretraining_steps",
        "text_encoder_foreign_nouns",
        "pos_emb",
        "vertical_padding",
        "contrastive",
        "guidance",
    )
    overridden = [key for key in overridable if key in spec]
    if overridden:
        raise ConfigError(f"{where}: a projection experiment uses its base's model and encoder; drop {overridden}")
    base_splits = experiment_settings(section, base)["splits"]
    missing = [split for split in spec.get("splits", []) if split not in base_splits]
    if missing:
        raise ConfigError(f"{where}.splits: {missing} are not trained by the base experiment {base!r}")


def check_guidance(settings: dict, where: str) -> None:
    """Guided sampling needs an unconditional prediction that was trained; dropout and the
    contrastive losses' caption partners do not mix."""
    guidance = settings["guidance"]
    if guidance["scale"] != 1 and not guidance["condition_dropout"]:
        raise ConfigError(
            f"{where}.scale: {guidance['scale']} needs condition_dropout > 0; without it the unconditional "
            'prediction eps("") is never trained (scale 1 samples without guidance)'
        )
    if guidance["condition_dropout"] and settings["contrastive"]:
        raise ConfigError(
            f"{where}.condition_dropout: not with contrastive losses, which compare each caption's prediction "
            "with its partner caption's"
        )


def check_experiments(section: dict) -> None:
    """Experiment names unique, their splits configured, encoders usable, the samples run one of the runs."""
    from diffcomp.relational.text.names import check_encoder

    splits = split_specs(section)
    seen: dict[str, int] = {}
    for k, spec in enumerate(section["experiments"]):
        where = f"relational.experiments[{k}]"
        if spec["name"] in seen:
            raise ConfigError(
                f"{where}.name: experiment name {spec['name']!r} is used twice "
                f"(first at relational.experiments[{seen[spec['name']]}])"
            )
        seen[spec["name"]] = k
        for j, split in enumerate(spec.get("splits", [])):
            if split not in splits:
                raise ConfigError(f"{where}.splits[{j}]: no split named {split!r} (configured: {', '.join(splits)})")
        if "projection" in spec:
            check_projection_experiment(section, spec, where, seen)
            continue
        settings = experiment_settings(section, spec["name"])
        check_guidance(settings, f"{where}.guidance" if "guidance" in spec else "relational.guidance")
        key = f"{where}.text_encoder" if "text_encoder" in spec else "relational.text_encoder.name"
        check_encoder(settings["text_encoder"]["name"], key)
        if settings["text_encoder"]["trainable"] and settings["text_encoder"]["name"] != "t5-scratch":
            raise ConfigError(
                f"{where}: only t5-scratch can be trained with the UNet, not {settings['text_encoder']['name']!r}"
            )
        encoder = settings["text_encoder"]
        if encoder["foreign_nouns"] and not (encoder["name"] == "t5-scratch" and encoder["caption_pretraining_steps"]):
            raise ConfigError(
                f"{where}: text_encoder.foreign_nouns applies to t5-scratch's caption pretraining only "
                "(caption_pretraining_steps > 0); set it to 0"
            )
        largest = max(spec_["vocab_size"] for spec_ in section.get("splits", [])) if section.get("splits") else 0
        if encoder["foreign_nouns"] and largest + encoder["foreign_nouns"] > MAX_VOCAB_SIZE:
            raise ConfigError(
                f"{where}: text_encoder.foreign_nouns = {encoder['foreign_nouns']} with {largest} nouns needs "
                f"more than the {MAX_VOCAB_SIZE} nouns of the icon vocabulary"
            )
        if encoder["caption_pretraining_steps"] and encoder["name"] != "t5-scratch":
            # only an experiment's own override gets here (experiment_settings zeroes the inherited one)
            raise ConfigError(
                f"{where}.text_encoder_caption_pretraining_steps: caption pretraining applies to t5-scratch "
                f"only; {encoder['name']!r} comes pretrained (delete the key)"
            )
    model = section["model"]
    if model["pos_emb"] == "sinusoidal" or any(e.get("pos_emb") == "sinusoidal" for e in section["experiments"]):
        if model["block_out_channels"][0] % 4:
            raise ConfigError(
                f"relational.model.block_out_channels[0]: the sinusoidal position embedding needs a multiple of 4, "
                f"got {model['block_out_channels'][0]}"
            )
    samples_run = section["figures"]["samples_run"]
    known = [run_id(*r) for r in runs(section)]
    if samples_run is not None and samples_run not in known:
        raise ConfigError(f"relational.figures.samples_run: {samples_run!r} is not a run (runs: {', '.join(known)})")

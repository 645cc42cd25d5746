# Relational-skew study (Chang et al. 2024): icon vocabularies, split families and their audit.
# Only icons are rendered and cached (one .npz per vocabulary); a split is its triples as CSV,
# and pair images are stacked from the icons when needed.
from diffcomp.relational.config import (
    baseline_experiment,
    experiment_names,
    pretrain_definition,
    run_id,
    runs,
    shared_text_encoders,
    split_specs,
    vocab_sizes,
)

RELATIONAL = config.get("relational")
RELATIONAL_SPLITS = split_specs(RELATIONAL) if RELATIONAL else {}
RELATIONAL_ICON_SIZE = RELATIONAL["icon_size"] if RELATIONAL else 0
RELATIONAL_VOCAB = f"{RESULTS}/relational/vocab/N{{vocab_size}}_S{{icon_size}}"


wildcard_constraints:
    split="|".join(map(re.escape, RELATIONAL_SPLITS)) or "NONE",
    vocab_size="|".join(map(str, vocab_sizes(RELATIONAL or {}))) or "NONE",
    icon_size=str(RELATIONAL_ICON_SIZE),
    experiment="|".join(map(re.escape, experiment_names(RELATIONAL or {}))) or "NONE",


rule relational_vocabulary:
    output:
        icons=f"{RELATIONAL_VOCAB}/icons.npz",
        sheet=report(
            f"{RELATIONAL_VOCAB}/icons.png",
            caption="../report/relational_icons.rst",
            category="Relational skew",
            subcategory="Vocabularies",
        ),
        pretrain=f"{RELATIONAL_VOCAB}/pretrain.csv",
    log:
        f"{LOGS}/relational/vocabulary/N{{vocab_size}}_S{{icon_size}}.log",
    priority: UPSTREAM_PRIORITY
    conda:
        "../envs/data.yaml"
    params:
        code=code_digest("scripts/relational_vocabulary.py"),
    script:
        "../scripts/relational_vocabulary.py"


rule relational_split:
    input:
        icons=lambda wc: rules.relational_vocabulary.output.icons.format(
            vocab_size=RELATIONAL_SPLITS[wc.split]["vocab_size"],
            icon_size=RELATIONAL_ICON_SIZE,
        ),
    output:
        train=f"{RESULTS}/relational/splits/{{split}}/train.csv",
        test=f"{RESULTS}/relational/splits/{{split}}/test.csv",
        preview=report(
            f"{RESULTS}/relational/splits/{{split}}/preview.png",
            caption="../report/relational_split.rst",
            category="Relational skew",
            subcategory="Splits",
        ),
    log:
        f"{LOGS}/relational/split/{{split}}.log",
    priority: UPSTREAM_PRIORITY
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda wc: RELATIONAL_SPLITS[wc.split],
        preview_count=RELATIONAL["preview_count"] if RELATIONAL else 0,
        code=code_digest("scripts/relational_split.py"),
    script:
        "../scripts/relational_split.py"


rule relational_audit:
    input:
        train=rules.relational_split.output.train,
    output:
        f"{RESULTS}/relational/splits/{{split}}/audit.json",
    log:
        f"{LOGS}/relational/audit/{{split}}.log",
    conda:
        "../envs/data.yaml"
    params:
        vocab_size=lambda wc: RELATIONAL_SPLITS[wc.split]["vocab_size"],
        code=code_digest("scripts/relational_audit.py"),
    script:
        "../scripts/relational_audit.py"


rule relational_audit_table:
    input:
        expand(rules.relational_audit.output[0], split=RELATIONAL_SPLITS),
    output:
        f"{RESULTS}/relational/audit.csv",
    log:
        f"{LOGS}/relational/audit_table.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        specs=RELATIONAL_SPLITS,
        code=code_digest("scripts/relational_audit_table.py"),
    script:
        "../scripts/relational_audit_table.py"


rule relational_audit_figure:
    input:
        table=rules.relational_audit_table.output[0],
    output:
        report(
            f"{RESULTS}/relational/audit.png",
            caption="../report/relational_audit.rst",
            category="Relational skew",
            subcategory="Audit",
        ),
    log:
        f"{LOGS}/relational/audit_figure.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        code=code_digest("scripts/relational_audit_figure.py"),
    script:
        "../scripts/relational_audit_figure.py"


RELATIONAL_RUNS = runs(RELATIONAL) if RELATIONAL else []
RELATIONAL_RUN = f"{RESULTS}/relational/runs/{{experiment}}/{{split}}/seed{{seed}}"
RELATIONAL_PRETRAIN = (
    f"{RESULTS}/relational/pretrain/{{experiment}}/{{split}}/seed{{seed}}/train"
)
RELATIONAL_FIGURES = [
    "curves",
    "scatter",
    "skew",
    "ablation",
    "interventions",
    "samples",
]


rule relational_pretrain:
    input:
        unpack(relational_pretrain_inputs),
    output:
        directory(RELATIONAL_PRETRAIN),
    log:
        f"{LOGS}/relational/pretrain/{{experiment}}_{{split}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/relational/pretrain/{{experiment}}_{{split}}_seed{{seed}}.tsv"
    priority: TRAINING_PRIORITY
    conda:
        "../envs/train.yaml"
    threads: RELATIONAL["training"]["threads"] if RELATIONAL else 1
    params:
        run=lambda wc: pretrain_definition(
            RELATIONAL, wc.experiment, wc.split, int(wc.seed)
        ),
        code=code_digest("scripts/relational_train.py"),
    script:
        "../scripts/relational_train.py"


# A caption-pretrained t5-scratch encoder: pretrained once per split (on its training captions
# only), encoder and seed, and loaded by every training and sampling job that uses it instead of
# pretraining it again.
RELATIONAL_TEXT_ENCODERS = shared_text_encoders(RELATIONAL) if RELATIONAL else {}


rule relational_text_encoder:
    input:
        train=rules.relational_split.output.train,
    output:
        f"{RESULTS}/relational/text_encoders/{{split}}/{{encoder}}.safetensors",
    log:
        f"{LOGS}/relational/text_encoder/{{split}}_{{encoder}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/relational/text_encoder/{{split}}_{{encoder}}.tsv"
    wildcard_constraints:
        encoder="|".join({key for _, key in RELATIONAL_TEXT_ENCODERS}) or "NONE",
    priority: UPSTREAM_PRIORITY
    conda:
        "../envs/train.yaml"
    params:
        spec=lambda wc: RELATIONAL_TEXT_ENCODERS[(wc.split, wc.encoder)],
        vocab_size=lambda wc: RELATIONAL_SPLITS[wc.split]["vocab_size"],
        code=code_digest("scripts/relational_text_encoder.py"),
    script:
        "../scripts/relational_text_encoder.py"


# The frozen image encoder of the contrastive losses: trained once per split, on its training
# images only.
rule relational_image_encoder:
    input:
        icons=lambda wc: rules.relational_vocabulary.output.icons.format(
            vocab_size=RELATIONAL_SPLITS[wc.split]["vocab_size"],
            icon_size=RELATIONAL_ICON_SIZE,
        ),
        train=rules.relational_split.output.train,
    output:
        directory(f"{RESULTS}/relational/image_encoders/{{split}}"),
    log:
        f"{LOGS}/relational/image_encoder/{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/relational/image_encoder/{{split}}.tsv"
    priority: UPSTREAM_PRIORITY
    conda:
        "../envs/train.yaml"
    threads: RELATIONAL["training"]["threads"] if RELATIONAL else 1
    params:
        spec=RELATIONAL["image_encoder"] if RELATIONAL else {},
        code=code_digest("scripts/relational_image_encoder.py"),
    script:
        "../scripts/relational_image_encoder.py"


# A run of an experiment without packs trains alone (relational_train); with
# relational.pack_size > 1, a packable experiment's runs train in packs (relational_train_pack),
# and relational_unpack writes each run's train/ folder from its pack.
RELATIONAL_PACKED = "|".join(map(re.escape, RELATIONAL_PACKS)) or "NONE"
RELATIONAL_SINGLE = (
    "|".join(
        re.escape(e)
        for e in experiment_names(RELATIONAL or {})
        if e not in RELATIONAL_PACKS
    )
    or "NONE"
)


rule relational_train:
    input:
        unpack(relational_train_inputs),
    output:
        directory(f"{RELATIONAL_RUN}/train"),
    log:
        f"{LOGS}/relational/train/{{experiment}}_{{split}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/relational/train/{{experiment}}_{{split}}_seed{{seed}}.tsv"
    wildcard_constraints:
        experiment=RELATIONAL_SINGLE,
    priority: TRAINING_PRIORITY
    conda:
        "../envs/train.yaml"
    threads: RELATIONAL["training"]["threads"] if RELATIONAL else 1
    params:
        run=relational_run_definition,
        code=code_digest("scripts/relational_train.py"),
    script:
        "../scripts/relational_train.py"


rule relational_train_pack:
    input:
        unpack(relational_pack_inputs),
    output:
        directory(f"{RESULTS}/relational/packs/{{experiment}}/pack{{pack}}/train"),
    log:
        f"{LOGS}/relational/train_pack/{{experiment}}_pack{{pack}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/relational/train_pack/{{experiment}}_pack{{pack}}.tsv"
    wildcard_constraints:
        experiment=RELATIONAL_PACKED,
    priority: TRAINING_PRIORITY
    conda:
        "../envs/train.yaml"
    threads: RELATIONAL["training"]["threads"] if RELATIONAL else 1
    params:
        runs=relational_pack_runs,
        code=code_digest("scripts/relational_train_pack.py"),
    script:
        "../scripts/relational_train_pack.py"


rule relational_unpack:
    input:
        pack=lambda wc: rules.relational_train_pack.output[0].format(
            experiment=wc.experiment, pack=relational_pack_position(wc)[0]
        ),
    output:
        directory(f"{RELATIONAL_RUN}/train"),
    log:
        f"{LOGS}/relational/unpack/{{experiment}}_{{split}}_seed{{seed}}.log",
    wildcard_constraints:
        experiment=RELATIONAL_PACKED,
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        index=lambda wc: relational_pack_position(wc)[1],
        code=code_digest("scripts/relational_unpack.py"),
    script:
        "../scripts/relational_unpack.py"


rule relational_sample:
    input:
        unpack(relational_train_inputs),
        weights=rules.relational_train.output[0],
    output:
        directory(f"{RELATIONAL_RUN}/samples"),
    log:
        f"{LOGS}/relational/sample/{{experiment}}_{{split}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/relational/sample/{{experiment}}_{{split}}_seed{{seed}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: RELATIONAL["training"]["threads"] if RELATIONAL else 1
    params:
        run=relational_run_definition,
        sampling=relational_sampling,
        code=code_digest("scripts/relational_sample.py"),
    script:
        "../scripts/relational_sample.py"


rule relational_evaluate:
    input:
        samples=rules.relational_sample.output[0],
        icons=lambda wc: relational_train_inputs(wc)["icons"],
        audit=rules.relational_audit.output[0],
        train=rules.relational_split.output.train,
    output:
        f"{RELATIONAL_RUN}/metrics.csv",
    log:
        f"{LOGS}/relational/evaluate/{{experiment}}_{{split}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/relational/evaluate/{{experiment}}_{{split}}_seed{{seed}}.tsv"
    conda:
        "../envs/eval.yaml"
    params:
        info=lambda wc: relational_run_info(wc),
        code=code_digest("scripts/relational_evaluate.py"),
    script:
        "../scripts/relational_evaluate.py"


rule relational_metrics:
    input:
        [f"{RESULTS}/relational/runs/{run_id(*r)}/metrics.csv" for r in RELATIONAL_RUNS],
    output:
        f"{RESULTS}/relational/metrics.csv",
    log:
        f"{LOGS}/relational/metrics.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        code=code_digest("scripts/relational_metrics.py"),
    script:
        "../scripts/relational_metrics.py"


rule relational_summary:
    input:
        rules.relational_metrics.output[0],
    output:
        report(
            f"{RESULTS}/relational/summary.csv",
            caption="../report/relational_summary.rst",
            category="Relational skew",
            subcategory="Tables",
        ),
    log:
        f"{LOGS}/relational/summary.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        baseline=(baseline_experiment(RELATIONAL) if RELATIONAL else None) or "",
        code=code_digest("scripts/relational_summary.py"),
    script:
        "../scripts/relational_summary.py"


rule relational_figure:
    input:
        metrics=rules.relational_metrics.output[0],
        samples=lambda wc: relational_samples_file(),
        icons=lambda wc: relational_samples_icons(),
    output:
        report(
            multiext(f"{RESULTS}/relational/figures/{{kind}}", ".png", ".pdf"),
            caption="../report/relational_figure.rst",
            category="Relational skew",
            subcategory="Figures",
        ),
    log:
        f"{LOGS}/relational/figures/{{kind}}.log",
    wildcard_constraints:
        kind="|".join(RELATIONAL_FIGURES),
    localrule: True
    conda:
        "../envs/eval.yaml"
    params:
        baseline=(baseline_experiment(RELATIONAL) if RELATIONAL else None) or "",
        code=code_digest("scripts/relational_figure.py"),
    script:
        "../scripts/relational_figure.py"


RELATIONAL_TARGETS = (
    [
        rules.relational_audit_table.output[0],
        rules.relational_audit_figure.output[0],
        *expand(
            f"{RESULTS}/relational/splits/{{split}}/{{file}}",
            split=RELATIONAL_SPLITS,
            file=["train.csv", "test.csv", "preview.png", "audit.json"],
        ),
        *(
            [rules.relational_metrics.output[0], rules.relational_summary.output[0]]
            + expand(
                f"{RESULTS}/relational/figures/{{kind}}.{{ext}}",
                kind=RELATIONAL_FIGURES,
                ext=["png", "pdf"],
            )
            if RELATIONAL_RUNS
            else []
        ),
        *expand(
            f"{RELATIONAL_VOCAB}/{{file}}",
            vocab_size=vocab_sizes(RELATIONAL),
            icon_size=RELATIONAL_ICON_SIZE,
            file=["icons.npz", "icons.png", "pretrain.csv"],
        ),
    ]
    if RELATIONAL
    else []
)
# all_targets() in common.smk calls relational_targets(). Binding the list's copy method keeps
# this file free of function definitions, which --lint flags next to rules.
relational_targets = RELATIONAL_TARGETS.copy

# Relational-skew study (Chang et al. 2024): icon vocabularies, split families and their audit.
# Only icons are rendered and cached (one .npz per vocabulary); a split is its triples as CSV,
# and pair images are stacked from the icons when needed.
from diffcomp.relational.config import split_specs, vocab_sizes

RELATIONAL = config.get("relational")
RELATIONAL_SPLITS = split_specs(RELATIONAL) if RELATIONAL else {}
RELATIONAL_ICON_SIZE = RELATIONAL["icon_size"] if RELATIONAL else 0
RELATIONAL_VOCAB = f"{RESULTS}/relational/vocab/N{{vocab_size}}_S{{icon_size}}"


wildcard_constraints:
    split="|".join(map(re.escape, RELATIONAL_SPLITS)) or "NONE",
    vocab_size="|".join(map(str, vocab_sizes(RELATIONAL or {}))) or "NONE",
    icon_size=str(RELATIONAL_ICON_SIZE),


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
    conda:
        "../envs/data.yaml"
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
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda wc: RELATIONAL_SPLITS[wc.split],
        preview_count=RELATIONAL["preview_count"] if RELATIONAL else 0,
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
    script:
        "../scripts/relational_audit_figure.py"


RELATIONAL_TARGETS = (
    [
        rules.relational_audit_table.output[0],
        rules.relational_audit_figure.output[0],
        *expand(
            f"{RESULTS}/relational/splits/{{split}}/{{file}}",
            split=RELATIONAL_SPLITS,
            file=["train.csv", "test.csv", "preview.png", "audit.json"],
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

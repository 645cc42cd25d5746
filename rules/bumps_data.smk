# Gaussian-bump datasets and their audit. Pixels are rendered on the fly from labels.csv.


rule bumps_dataset:
    output:
        labels=f"{RESULTS}/bumps/datasets/{{dataset}}/labels.csv",
        preview=report(
            f"{RESULTS}/bumps/datasets/{{dataset}}/preview.png",
            caption="../report/bumps_dataset.rst",
            category="Gaussian bumps",
            subcategory="Datasets",
        ),
    log:
        f"{LOGS}/bumps/dataset/{{dataset}}.log",
    priority: UPSTREAM_PRIORITY
    conda:
        "../envs/data.yaml"
    params:
        spec=bump_dataset_params,
        preview_count=BUMPS["preview_count"] if BUMPS else 0,
        seed=config["seed"],
        code=code_digest("scripts/bumps_dataset.py"),
    script:
        "../scripts/bumps_dataset.py"


rule bumps_audit:
    input:
        labels=rules.bumps_dataset.output.labels,
    output:
        f"{RESULTS}/bumps/datasets/{{dataset}}/audit.json",
    log:
        f"{LOGS}/bumps/audit/{{dataset}}.log",
    conda:
        "../envs/data.yaml"
    params:
        spec=bump_dataset_params,
        code=code_digest("scripts/bumps_audit.py"),
    script:
        "../scripts/bumps_audit.py"

# Gaussian-bump study: training, sampling at every checkpoint, evaluation (three jobs per run).


BUMP_TRAIN = f"{RESULTS}/bumps/runs/{{dataset}}/seed{{seed}}/train"


if BUMP_PACK_SIZE == 1:

    rule bumps_train:
        input:
            labels=rules.bumps_dataset.output.labels,
        output:
            directory(BUMP_TRAIN),
        log:
            f"{LOGS}/bumps/train/{{dataset}}_seed{{seed}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/bumps/train/{{dataset}}_seed{{seed}}.tsv"
        priority: TRAINING_PRIORITY
        conda:
            "../envs/train.yaml"
        threads: BUMPS["training"]["threads"] if BUMPS else 1
        params:
            run=bump_run_definition,
            code=code_digest("scripts/bumps_train.py"),
        script:
            "../scripts/bumps_train.py"

else:

    # bumps.pack_size runs as one stacked model in one job, then each run's weights unpacked
    rule bumps_train_pack:
        input:
            labels=bump_pack_labels,
        output:
            directory(f"{RESULTS}/bumps/packs/pack{{pack}}/train"),
        log:
            f"{LOGS}/bumps/train_pack/pack{{pack}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/bumps/train_pack/pack{{pack}}.tsv"
        priority: TRAINING_PRIORITY
        conda:
            "../envs/train.yaml"
        threads: BUMPS["training"]["threads"] if BUMPS else 1
        params:
            runs=bump_pack_runs,
            code=code_digest("scripts/bumps_train_pack.py"),
        script:
            "../scripts/bumps_train_pack.py"

    rule bumps_unpack:
        input:
            pack=lambda wc: f"{RESULTS}/bumps/packs/pack{bump_pack_position(wc)[0]}/train",
        output:
            directory(BUMP_TRAIN),
        log:
            f"{LOGS}/bumps/unpack/{{dataset}}_seed{{seed}}.log",
        localrule: True
        conda:
            "../envs/train.yaml"
        params:
            index=lambda wc: bump_pack_position(wc)[1],
            code=code_digest("scripts/bumps_unpack.py"),
        script:
            "../scripts/bumps_unpack.py"


rule bumps_sample:
    input:
        labels=rules.bumps_dataset.output.labels,
        train=BUMP_TRAIN,
    output:
        directory(f"{RESULTS}/bumps/runs/{{dataset}}/seed{{seed}}/samples"),
    log:
        f"{LOGS}/bumps/sample/{{dataset}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bumps/sample/{{dataset}}_seed{{seed}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: BUMPS["training"]["threads"] if BUMPS else 1
    params:
        run=bump_run_definition,
        sampling=BUMPS["sampling"] if BUMPS else {},
        code=code_digest("scripts/bumps_sample.py"),
    script:
        "../scripts/bumps_sample.py"


rule bumps_evaluate:
    input:
        samples=rules.bumps_sample.output[0],
    output:
        metrics=f"{RESULTS}/bumps/runs/{{dataset}}/seed{{seed}}/metrics.csv",
        embeddings=f"{RESULTS}/bumps/runs/{{dataset}}/seed{{seed}}/embeddings.npz",
    log:
        f"{LOGS}/bumps/evaluate/{{dataset}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bumps/evaluate/{{dataset}}_seed{{seed}}.tsv"
    conda:
        "../envs/eval.yaml"
    params:
        spec=bump_dataset_params,
        seed=lambda wc: int(wc.seed),
        evaluation=BUMPS["evaluation"] if BUMPS else {},
        code=code_digest("scripts/bumps_evaluate.py"),
    script:
        "../scripts/bumps_evaluate.py"


rule bumps_metrics:
    input:
        lambda wc: bump_run_files("metrics.csv"),
    output:
        f"{RESULTS}/bumps/metrics.csv",
    log:
        f"{LOGS}/bumps/metrics.log",
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        code=code_digest("scripts/bumps_metrics.py"),
    script:
        "../scripts/bumps_metrics.py"

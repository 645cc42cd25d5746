# Gaussian-bump study: the figure set (paper Figs. 3, 4, 5, 8, 9), drawn on the submitting host.


rule bumps_figure_phases:
    input:
        metrics=rules.bumps_metrics.output[0],
        samples=bump_phases_run_file("samples"),
        embeddings=bump_phases_run_file("embeddings.npz"),
    output:
        report(
            multiext(f"{RESULTS}/bumps/figures/phases", ".png", ".pdf"),
            caption="../report/bumps_phases.rst",
            category="Gaussian bumps",
            subcategory="Figures",
        ),
    log:
        f"{LOGS}/bumps/figures/phases.log",
    localrule: True
    conda:
        "../envs/eval.yaml"
    params:
        kind="phases",
        options=BUMP_FIGURE_OPTIONS,
        phases_run=lambda wc, input: (
            BUMP_FIGURE_OPTIONS["phases_run"],
            input.samples,
            input.embeddings,
        ),
        code=code_digest("scripts/bumps_figure.py", "diffcomp.bumps.figures.phases"),
    script:
        "../scripts/bumps_figure.py"


rule bumps_figure_metrics:
    input:
        metrics=rules.bumps_metrics.output[0],
        hole_samples=lambda wc: bump_hole_samples() if wc.kind == "holes" else [],
    output:
        report(
            multiext(f"{RESULTS}/bumps/figures/{{kind}}", ".png", ".pdf"),
            caption="../report/bumps_metric_figure.rst",
            category="Gaussian bumps",
            subcategory="Figures",
        ),
    log:
        f"{LOGS}/bumps/figures/{{kind}}.log",
    wildcard_constraints:
        kind="phase_diagram|sigma|imbalance|holes",
    localrule: True
    conda:
        "../envs/eval.yaml"
    params:
        kind=lambda wc: wc.kind,
        options=BUMP_FIGURE_OPTIONS,
        holes=lambda wc: bump_hole_panels() if wc.kind == "holes" else None,
        # a figure job imports only its own figure's module (diffcomp.bumps.figure_jobs)
        code=lambda wc: code_digest(
            "scripts/bumps_figure.py", f"diffcomp.bumps.figures.{wc.kind}"
        ),
    script:
        "../scripts/bumps_figure.py"

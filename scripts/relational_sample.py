"""Rule relational_sample: sample every kept checkpoint of a run (one job per run)."""

from diffcomp.relational.text.shared import use_shared_pretraining
from diffcomp.relational.train import sample_relational_run
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    # the caption-pretrained encoder's weights, pretrained once (rule relational_text_encoder)
    use_shared_pretraining(snakemake.input.get("text_encoder"))
    runtime = {**snakemake.config["relational"]["training"], "threads": snakemake.threads}
    written = sample_relational_run(
        snakemake.params.run,
        snakemake.params.sampling,
        runtime,
        snakemake.input.icons,
        snakemake.input.train,
        snakemake.input.test,
        snakemake.input.weights,
        snakemake.output[0],
    )
    log.info("sampled %d checkpoints", len(written))

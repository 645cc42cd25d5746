"""Rule relational_text_encoder: caption-pretrain a text encoder on a split's training captions, once for its jobs."""

from diffcomp.relational.text.build import pretrain_shared_encoder
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    key = pretrain_shared_encoder(
        snakemake.params.spec, int(snakemake.params.vocab_size), snakemake.input.train, snakemake.output[0]
    )
    log.info("wrote %s (caption pretraining %s)", snakemake.output[0], key[:12])

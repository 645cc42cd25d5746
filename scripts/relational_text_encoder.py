"""Rule relational_text_encoder: pretrain one caption encoder on the captions' text, once for every job that uses it."""

from diffcomp.relational.text import pretrain_shared_encoder
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    key = pretrain_shared_encoder(snakemake.params.spec, int(snakemake.wildcards.vocab_size), snakemake.output[0])
    log.info("wrote %s (caption pretraining %s)", snakemake.output[0], key[:12])

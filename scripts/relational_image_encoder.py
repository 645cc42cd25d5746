"""Rule relational_image_encoder: train the frozen image encoder of the contrastive losses on a vocabulary's icons."""

from diffcomp.relational.contrastive import train_image_encoder
from diffcomp.relational.icons import load_icons
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    icons, _ = load_icons(snakemake.input.icons)
    summary = train_image_encoder(icons, snakemake.params.spec, snakemake.output[0], threads=snakemake.threads)
    log.info("image encoder %s: %s", snakemake.output[0], summary)

"""Rule relational_image_encoder: the contrastive losses' frozen image encoder, trained on a split's training images."""

from diffcomp.relational.contrastive import train_image_encoder, training_pairs
from diffcomp.relational.data import read_split_triples
from diffcomp.relational.icons import load_icons
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    icons, names = load_icons(snakemake.input.icons)
    pairs = training_pairs(read_split_triples(snakemake.input.train, names))
    summary = train_image_encoder(icons, pairs, snakemake.params.spec, snakemake.output[0], threads=snakemake.threads)
    log.info("image encoder %s: %s", snakemake.output[0], summary)

"""Rule relational_split: train/test triples (subject,relation,object CSVs) and a preview sheet."""

from diffcomp.relational.data import write_split
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    split = write_split(
        snakemake.params.spec,
        icons_npz=snakemake.input.icons,
        train_csv=snakemake.output.train,
        test_csv=snakemake.output.test,
        preview_png=snakemake.output.preview,
        preview_count=snakemake.params.preview_count,
    )
    log.info("%s: %s on %d nouns -> %s", split.name, split.describe(), split.vocab_size, snakemake.output.train)

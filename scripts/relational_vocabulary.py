"""Rule relational_vocabulary: cached icons, their sheet and the single-object pretraining captions."""

from diffcomp.relational.data import write_vocabulary
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    vocab_size, icon_size = int(snakemake.wildcards.vocab_size), int(snakemake.wildcards.icon_size)
    write_vocabulary(
        vocab_size,
        icon_size,
        icons_npz=snakemake.output.icons,
        sheet_png=snakemake.output.sheet,
        pretrain_csv=snakemake.output.pretrain,
    )
    log.info("rendered %d icons of %d x %d pixels into %s", vocab_size, icon_size, icon_size, snakemake.output.icons)

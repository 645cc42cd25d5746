"""Rule bumps_dataset: labels.csv and a preview sheet for one Gaussian-bump dataset."""

from diffcomp.bumps.data import BumpDataset, write_dataset
from diffcomp.workflow import rule_logging

with rule_logging(snakemake) as log:
    spec = BumpDataset.from_config(snakemake.params.spec, snakemake.params.spec["image_size"])
    write_dataset(
        spec,
        labels_csv=snakemake.output.labels,
        preview_png=snakemake.output.preview,
        preview_count=snakemake.params.preview_count,
        seed=snakemake.params.seed,
    )
    log.info("wrote %s", snakemake.output.labels)

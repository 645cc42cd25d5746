"""Rule relational_train_pack: train a pack of relational runs as one stacked model, resuming from its last state."""

from diffcomp.relational.text.shared import use_shared_pretraining
from diffcomp.relational.train import train_relational_pack
from diffcomp.workflow import resumable_run, run_training


def train(log):
    # the caption-pretrained encoder's weights, pretrained once (rule relational_text_encoder)
    use_shared_pretraining(snakemake.input.get("text_encoder"))
    return train_relational_pack(
        [resumable_run(snakemake, run) for run in snakemake.params.runs],
        {**snakemake.config["relational"]["training"], "threads": snakemake.threads},
        list(snakemake.input.icons),
        snakemake.output[0],
        train_csvs=list(snakemake.input.train),
        init_dirs=list(snakemake.input.init) if "init" in snakemake.input.keys() else None,
    )


run_training(snakemake, train)

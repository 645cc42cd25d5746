"""Rules relational_pretrain and relational_train: train one run, resuming from its last checkpoint if there is one."""

from diffcomp.relational.text.shared import use_shared_pretraining
from diffcomp.relational.train import train_relational_run
from diffcomp.workflow import resumable_run, run_training


def train(log):
    # the caption-pretrained encoder's weights, pretrained once (rule relational_text_encoder)
    use_shared_pretraining(snakemake.input.get("text_encoder"))
    return train_relational_run(
        resumable_run(snakemake, snakemake.params.run),
        {**snakemake.config["relational"]["training"], "threads": snakemake.threads},
        snakemake.input.icons,
        snakemake.output[0],
        train_csv=snakemake.input.get("train"),
        init_dir=snakemake.input.get("init"),
        image_encoder_dir=snakemake.input.get("image_encoder"),
    )


run_training(snakemake, train)

"""Resume states (``.state/{fingerprint}/`` beside a run's or a pack's ``train/``) are the files that
outlive a training job: a retry resumes from them. Their key is everything that determines the
weights: the run's definition in the config, the code its job runs (params.code) and the contents
of its input files (diffcomp.workflow.resumable_run). A change to any of them trains from scratch;
resuming would publish the old weights as new.

``steps_this_job`` in a run's summary tells which happened: 0 when a finished state was resumed,
every step when it trained from scratch.
"""

import os
from types import SimpleNamespace

import pandas as pd
from test_bumps_pack import two_runs
from test_bumps_train import tiny_run

from diffcomp.bumps.train import train_pack, train_run
from diffcomp.training import fingerprint
from diffcomp.workflow import files_digest, resumable_run

STEPS = {"steps": 4, "checkpoint_every": 2, "warmup_steps": 1}


def job(code: str, *inputs):
    """The parts of a rule script's ``snakemake`` object that resumable_run reads."""
    return SimpleNamespace(params=SimpleNamespace(code=code), input=[str(p) for p in inputs])


def test_files_digest_is_the_inputs_contents(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "folder"
    a.write_text("x\n1\n")
    (b / "snapshots").mkdir(parents=True)
    (b / "snapshots" / "step2.bin").write_bytes(b"\x00\x01")
    (b / "train.json").write_text("{}")
    before = files_digest([a, b])
    os.utime(a, (1, 1))  # a new modification time, the same contents
    assert files_digest([a, b]) == before
    assert files_digest([b, a]) != before  # the inputs in another order
    (b / "snapshots" / "step2.bin").rename(b / "snapshots" / "step4.bin")
    assert files_digest([a, b]) != before  # a folder's file renamed
    (b / "snapshots" / "step4.bin").rename(b / "snapshots" / "step2.bin")
    assert files_digest([a, b]) == before
    a.write_text("x\n2\n")
    assert files_digest([a, b]) != before


def test_the_key_covers_the_run_the_code_and_the_inputs(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("mu_x,mu_y\n0,0\n")
    run = {"seed": 0, "training": {"learning_rate": 1e-3}}
    key = fingerprint(resumable_run(job("c0de", labels), run))
    assert fingerprint(resumable_run(job("c0de", labels), run)) == key
    assert fingerprint(resumable_run(job("c0df", labels), run)) != key
    assert fingerprint(resumable_run(job("c0de", labels), {**run, "seed": 1})) != key
    labels.write_text("mu_x,mu_y\n0,1\n")
    assert fingerprint(resumable_run(job("c0de", labels), run)) != key


def test_a_run_resumes_only_a_state_of_its_own_code_and_inputs(tmp_path):
    _, run, runtime, labels = tiny_run(tmp_path, **STEPS)
    out = tmp_path / "run" / "train"

    def steps_trained(code: str) -> int:
        return train_run(resumable_run(job(code, labels), run), runtime, labels, out)["steps_this_job"]

    assert steps_trained("aaaa") == 4
    assert steps_trained("aaaa") == 0  # its finished state: the same weights, nothing trained
    assert steps_trained("bbbb") == 4  # other code
    table = pd.read_csv(labels)
    table.iloc[::2].to_csv(labels, index=False)  # other training labels
    assert steps_trained("bbbb") == 4
    assert steps_trained("bbbb") == 0
    states = sorted(p.name for p in (out.parent / ".state").iterdir())
    assert len(states) == 3, states


def test_a_pack_resumes_only_a_state_of_its_own_code_and_inputs(tmp_path):
    runs, runtime, labels = two_runs(tmp_path)
    runs = [{**r, "training": {**r["training"], **STEPS}} for r in runs]
    out = tmp_path / "pack0" / "train"

    def steps_trained(code: str, members=runs) -> int:
        snakemake = job(code, *labels)
        pack = [resumable_run(snakemake, r) for r in members]
        return train_pack(pack, runtime, labels, out)["steps_this_job"]

    assert steps_trained("aaaa") == 4
    assert steps_trained("aaaa") == 0
    assert steps_trained("bbbb") == 4  # other code
    labels[1].write_text(labels[1].read_text())  # written again, the same contents
    assert steps_trained("bbbb") == 0
    table = pd.read_csv(labels[1])
    table.iloc[::2].to_csv(labels[1], index=False)  # one member's labels changed
    assert steps_trained("bbbb") == 4
    changed = [runs[0], {**runs[1], "seed": runs[1]["seed"] + 1}]  # one member's definition changed
    assert steps_trained("bbbb", changed) == 4

"""A code change reruns exactly the jobs that run that code, through real Snakemake.

One tiny finished run of both studies in a copy of the workflow (Snakefile, rules, scripts, the
diffcomp package, profiles) under a temporary folder; each test edits a file of that copy,
dry-runs, and puts the file back. The last two tests change the run's state (``--touch``, a
retrained job) and so come last. What counts as a job's code: tests/test_code_digest.py.
"""

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import TINY_MODEL, TINY_RELATIONAL_MODEL, TINY_TEXT_ENCODER, snakemake_bin
from test_code_digest import workflow_rules

from diffcomp.bumps.figure_jobs import figure_module
from diffcomp.code_digest import CodeIndex

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "scripts", "diffcomp", "report", "envs", "profiles"]

CONFIG = {
    "seed": 0,
    "bumps": {
        "image_size": 8,
        "grid": {"increments": [1.0], "sigmas": [1.0]},
        "seeds": [0],
        "model": TINY_MODEL,
        "diffusion": {"num_train_timesteps": 20},
        "training": {"steps": 4, "batch_size": 8, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2},
        "sampling": {"num_samples": 16, "num_samples_ood": 4, "num_inference_steps": 2, "batch_size": 32},
        "evaluation": {"umap_neighbors": 5},
    },
    "relational": {
        "icon_size": 16,
        "preview_count": 4,
        "splits": [{"name": "band", "family": "band", "vocab_size": 4, "m": 1}],
        "text_encoder": TINY_TEXT_ENCODER,
        "model": TINY_RELATIONAL_MODEL,
        "diffusion": {"num_train_timesteps": 20},
        "training": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2},
        "sampling": {"num_train": 3, "num_test": 3, "num_inference_steps": 2, "batch_size": 8},
        "experiments": [{"name": "baseline"}],
    },
}
# What the run builds: every rule of both studies but the packs and pretraining, two of the bump
# figures and one of the relational ones (each figure is a job of its own, and they cost seconds).
TARGETS = [
    "results/bumps/datasets/inc1_sig1/audit.json",
    "results/bumps/figures/phases.png",
    "results/bumps/figures/sigma.png",
    "results/relational/audit.png",
    "results/relational/summary.csv",
    "results/relational/figures/curves.png",
]
BUMP_RULES = {
    "bumps_dataset",
    "bumps_audit",
    "bumps_train",
    "bumps_sample",
    "bumps_evaluate",
    "bumps_metrics",
    "bumps_figure_phases",
    "bumps_figure_metrics",
}
RELATIONAL_RULES = {
    "relational_vocabulary",
    "relational_split",
    "relational_audit",
    "relational_audit_table",
    "relational_audit_figure",
    "relational_train",
    "relational_sample",
    "relational_evaluate",
    "relational_metrics",
    "relational_summary",
    "relational_figure",
}
TRAINING_AND_AFTER = {
    "bumps_train",
    "bumps_sample",
    "bumps_evaluate",
    "bumps_metrics",
    "bumps_figure_phases",
    "bumps_figure_metrics",
    "relational_train",
    "relational_sample",
    "relational_evaluate",
    "relational_metrics",
    "relational_summary",
    "relational_figure",
}
EDIT = "\n_EDITED = True  # a new statement: the module does something else\n"


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [snakemake_bin(), "--snakefile", str(root / "Snakefile"), "--directory", str(root)]
    cmd += ["--configfile", "config.yaml", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONHASHSEED": "0"})
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def dry_run(root: Path, *args: str) -> tuple[dict[str, int], set[str]]:
    """What a dry run of the targets would execute now: rule -> job count, and the jobs' outputs."""
    out = snakemake(root, "--cores", "2", "-n", *TARGETS, *args).stdout  # targets first: options may take lists
    counts, outputs = {}, set()
    for line in out.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
        elif line.startswith("    output: "):
            outputs.update(line.removeprefix("    output: ").split(", "))
    return counts, outputs


def planned(root: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of what a dry run of the targets would execute now."""
    return dry_run(root, *args)[0]


@contextlib.contextmanager
def edited(root: Path, name: str, change):
    """The workflow copy's file ``name`` changed by ``change(text)``, put back afterwards."""
    path = root / name
    original = path.read_text()
    changed = change(original)
    assert changed != original, f"the edit leaves {name} as it is"
    path.write_text(changed)
    try:
        yield
    finally:
        path.write_text(original)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("code_reruns")
    for name in WORKFLOW:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    snakemake(root, "--cores", "2", *TARGETS)
    return root


def test_the_run_has_every_rule_it_is_meant_to(finished):
    metadata = [json.loads(p.read_text()) for p in (finished / ".snakemake" / "metadata").iterdir()]
    assert {m["rule"] for m in metadata} == BUMP_RULES | RELATIONAL_RULES


def test_comments_docstrings_and_formatting_rerun_nothing(finished):
    def reformat(text: str) -> str:
        assert text.startswith('"""')
        text = text.replace('"""', '"""An edited docstring. ', 1)
        text = text.replace("\n\n\ndef ", "\n\n\n\ndef ").replace("\nimport ", "\nimport  ")
        return f"# a new first line\n{text}\n\n# a last comment\n"

    with (
        edited(finished, "diffcomp/training.py", reformat),
        edited(finished, "diffcomp/relational/splits.py", reformat),
        edited(finished, "diffcomp/bumps/figures/sigma.py", reformat),
        edited(finished, "scripts/bumps_train.py", lambda text: text + "# a comment in a rule script\n"),
    ):
        assert planned(finished) == {}


def test_an_evaluator_edit_reruns_evaluation_and_what_reads_it(finished):
    with edited(finished, "diffcomp/relational/evaluate.py", lambda text: text + EDIT):
        assert planned(finished) == {
            "relational_evaluate": 1,
            "relational_metrics": 1,
            "relational_summary": 1,
            "relational_figure": 1,
        }


def test_an_edit_to_one_bump_figure_reruns_that_figure_only(finished):
    with edited(finished, "diffcomp/bumps/figures/sigma.py", lambda text: text + EDIT):
        plan, outputs = dry_run(finished)
    assert plan == {"bumps_figure_metrics": 1}
    assert outputs == {"results/bumps/figures/sigma.png", "results/bumps/figures/sigma.pdf"}
    with edited(finished, "diffcomp/bumps/figures/phases.py", lambda text: text + EDIT):
        assert planned(finished) == {"bumps_figure_phases": 1}


def test_a_trainer_edit_reruns_every_training_job_of_both_studies_and_what_follows(finished):
    with edited(finished, "diffcomp/training.py", lambda text: text + EDIT):
        plan = planned(finished)
        assert set(plan) == TRAINING_AND_AFTER, plan
        assert plan["bumps_train"] == 1 and plan["relational_train"] == 1
        # to keep the results of the old code: leave params (and so params.code) out of the triggers
        assert planned(finished, "--rerun-triggers", "mtime", "input", "software-env") == {}


def test_a_split_edit_reruns_the_relational_splits_and_downstream_but_no_bump_job(finished):
    with edited(finished, "diffcomp/relational/splits.py", lambda text: text + EDIT):
        plan = planned(finished)
    assert {"relational_split", "relational_audit", "relational_train", "relational_evaluate"} <= set(plan)
    assert set(plan) == RELATIONAL_RULES  # the vocabulary's job runs relational.data, which imports splits
    assert not set(plan) & BUMP_RULES


def expected_digest(index: CodeIndex, rules: dict, rule: str, output: str) -> str:
    script = rules[rule]["script"]
    if rule.startswith("bumps_figure_"):
        return index.digest(script, figure_module(Path(output).name.split(".")[0]))
    return index.digest(script)


def test_each_output_records_its_code_digest_and_the_report_shows_it(finished):
    index, rules = CodeIndex(finished), workflow_rules()
    shown = {}
    for path in (finished / ".snakemake" / "metadata").iterdir():
        output = base64.b64decode(path.name).decode()
        record = json.loads(path.read_text())
        digest = expected_digest(index, rules, record["rule"], output)
        assert repr(digest) in record["params"], (output, record["rule"], record["params"])
        shown[output] = digest
    snakemake(finished, "--cores", "1", "--report", "results/report.html", *TARGETS)
    html = (finished / "results" / "report.html").read_text(errors="replace")
    for output in ("results/bumps/figures/sigma.png", "results/relational/figures/curves.png"):
        assert shown[output] in html, output
    assert shown["results/bumps/figures/sigma.png"] != shown["results/bumps/figures/phases.png"]


def test_touch_keeps_the_results_of_old_code(finished):
    with edited(finished, "diffcomp/relational/evaluate.py", lambda text: text + EDIT):
        # what would rerun (test_an_evaluator_edit_...) is marked up to date instead
        snakemake(finished, "--cores", "1", "--touch", *TARGETS)
        assert planned(finished) == {}


def test_a_trainer_edit_retrains_from_scratch(finished):
    """The rerun trains anew: its resume states are keyed on its code (tests/test_resume_states.py)."""
    train = "results/bumps/runs/inc1_sig1/seed0/train"
    states = finished / "results/bumps/runs/inc1_sig1/seed0/.state"
    assert len(list(states.iterdir())) == 1
    with edited(finished, "diffcomp/training.py", lambda text: text + EDIT):
        snakemake(finished, "--cores", "1", train)
    log = (finished / "results/logs/bumps/train/inc1_sig1_seed0.log").read_text()
    assert "from scratch" in log and "resuming" not in log
    assert len(list(states.iterdir())) == 2
    assert json.loads((finished / train / "train.json").read_text())["steps_this_job"] == 4

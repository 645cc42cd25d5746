"""profiles/slurm against a real SLURM: jobs run under SLURM, give a local run's outputs, and
training longer than a job's time limit finishes over Snakemake's retries with the same weights.

Needs a running SLURM controller and node: `make test-slurm` (tests/slurm/run_slurm_test.sh)
starts a single-node one from Debian packages and runs this file; without one every test skips.

The runs mostly wait for SLURM (job start-up, status queries), so they overlap: the time-limit
runs start before the first test, and each test starts its SLURM and local runs together.
`DIFFCOMP_SLURM_SIGTERM_TEST=1` adds the slower SIGTERM variant of the time-limit test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml

from diffcomp.bumps.config import dataset_specs
from diffcomp.config import load_config
from diffcomp.relational import config as relational_config

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
PIPELINE = REPO / "tests" / "slurm" / "config.yaml"
TIMELIMIT = REPO / "tests" / "slurm" / "timelimit.yaml"
SQUEUE_SHIM = REPO / "tests" / "slurm" / "no_end_time"
# A hang in the scheduler must fail the test, not eat the CI budget (seconds per Snakemake run).
RUN_TIMEOUT = 900
# No accounting database on the test node, so sacct cannot answer; squeue can (MinJobAge=600).
# The first status query 2 s after a submission instead of the profile's 20 s.
SLURM_ARGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2")
# bumps_train's SLURM time limit in the time-limit tests, minutes: 2 for the first attempt, less
# than the run's ~3 minutes of training; the retry gets the time to finish, so the test needs
# exactly two attempts however fast the machine is. (1 minute was too tight on a half-speed
# machine: the job's start-up alone took over 60 s, and the attempt ended 62-77 s in, where
# slurmctld may already end it as TIMEOUT.)
TRAIN_RUNTIME = "2 if attempt == 1 else 15"
# The slower variant: SLURM must end the first attempt (TIMEOUT, SIGTERM ~0-30 s after the limit),
# so its work must outlast 150 s of training on a fast machine.
SIGTERM_TEST = os.environ.get("DIFFCOMP_SLURM_SIGTERM_TEST") == "1"
SIGTERM_STEPS = 8000
# train.json keys that measure the machine, not the run.
TIMING_KEYS = {"seconds_this_job", "steps_per_second"}

pytestmark = pytest.mark.slurm


def _slurm_answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and any(s.strip("*~#") in {"idle", "mixed", "allocated"} for s in proc.stdout.split())


@pytest.fixture(scope="module")
def slurm():
    if not _slurm_answers():
        pytest.skip("no SLURM controller answers `sinfo` (start one with `make test-slurm`)")
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=15, check=True)
    settings = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", config.stdout, re.M))
    return settings


def _env(path_prefix: Path | None = None) -> dict:
    """The environment of a user with the project venv active (jobs inherit it: sbatch --export=ALL)."""
    venv_bin = Path(sys.executable).parent
    return {
        **os.environ,
        "PATH": os.pathsep.join([*([str(path_prefix)] if path_prefix else []), str(venv_bin), os.environ["PATH"]]),
        "VIRTUAL_ENV": str(venv_bin.parent),
        "PYTHONHASHSEED": "0",
        # matplotlib dates its PDFs by this: without it the figures' PDFs differ in CreationDate only.
        "SOURCE_DATE_EPOCH": "0",
    }


class Run:
    """One `snakemake` CLI run in the background; its output goes to snakemake.log in its directory."""

    def __init__(self, label: str, workdir: Path, config: Path, *args: str, path_prefix: Path | None = None):
        self.label, self.workdir = label, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile")]
        cmd += ["--directory", str(workdir), "--configfile", str(config), *args]
        self.log_path = workdir / "snakemake.log"
        self.started, self.started_at = time.monotonic(), time.time()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(path_prefix), cwd=workdir)
        self.seconds: float | None = None

    def wait(self) -> str:
        """Wait for the run to succeed; returns its log."""
        try:
            returncode = self.proc.wait(timeout=max(1.0, RUN_TIMEOUT - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.label}: hung for {RUN_TIMEOUT} s:\n{self.log()[-6000:]}") from None
        if self.seconds is None:
            # Snakemake's last words end its log: its time, not this call's, when waited for late.
            self.seconds = self.log_path.stat().st_mtime - self.started_at
            print(f"{self.label}: {self.seconds:.0f} s")
        if returncode != 0:
            raise AssertionError(f"{self.label}: snakemake failed ({returncode}):\n{self.log()[-10000:]}")
        return self.log()

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self):
        """Interrupt a run still going (Snakemake cancels its SLURM jobs on SIGINT)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _sync_snakemake(workdir: Path, config: Path, *args: str) -> None:
    run = Run(f"snakemake {' '.join(args)}", workdir, config, *args)
    run.wait()


def _derived_profile(directory: Path, train_runtime: str) -> Path:
    """profiles/slurm with another time limit for bumps_train (a --set-resources would replace the whole key)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    profile["configfile"] = str((PROFILE / profile["configfile"]).resolve())
    profile["set-resources"]["bumps_train"]["runtime"] = train_runtime
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


# ------------------------------------------------------------------------------------------------
# What SLURM and Snakemake recorded
# ------------------------------------------------------------------------------------------------
def _submitted(log: str) -> dict[str, Path]:
    """SLURM job id -> its log (the in-job Snakemake's output), from the submitting Snakemake's log."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)
    return {jobid: Path(path) for jobid, path in found}


def _jobcomp(path: Path, run_id: str) -> dict[str, dict]:
    """SLURM's own record (jobcomp/filetxt) of the jobs named after this Snakemake run: id -> fields."""
    jobs = {}
    for line in path.read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("Name") == run_id:
            jobs[fields["JobId"]] = fields
    return jobs


def _slurm_records(slurm: dict, log: str) -> list[dict]:
    """SLURM's completion records of every job this run submitted, oldest first."""
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    ids = set(_submitted(log))
    assert ids, log[-4000:]
    jobcomp = Path(slurm["JobCompLoc"])
    assert _wait_for(lambda: set(_jobcomp(jobcomp, run_id)) >= ids, 30), (ids, _jobcomp(jobcomp, run_id))
    records = _jobcomp(jobcomp, run_id)
    assert set(records) == ids, "SLURM ran jobs that Snakemake did not submit"
    return [records[jobid] for jobid in sorted(ids, key=int)]


def _seconds(record: dict) -> float:
    return (datetime.fromisoformat(record["EndTime"]) - datetime.fromisoformat(record["StartTime"])).total_seconds()


def _rule_jobs_in(slurm_log: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job that Snakemake ran inside one SLURM job (its SLURM log)."""
    found = set()
    for block in re.split(r"\n\s*\[[^\]]+\]\n", slurm_log):
        rule = re.search(r"^\s*(?:local)?rule (\w+):", block, re.M)
        wildcards = re.search(r"^\s*wildcards: (.+?)\s*$", block, re.M)
        if rule and wildcards:
            found.add((rule.group(1), wildcards.group(1)))
    return found


def _wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while not (ok := predicate()) and time.monotonic() < deadline:
        time.sleep(1)
    return ok


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------
def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_same_files(root_a: Path, root_b: Path, skip=(), ignore_keys=TIMING_KEYS) -> list[str]:
    """Every file under root_a equals root_b's, byte for byte; train.json but for ``ignore_keys``.

    Returns the names compared; names starting with a prefix in ``skip`` need only exist in both.
    """
    a, b = _files(root_a), _files(root_b)
    assert sorted(a) == sorted(b)
    compared = []
    for name, path in a.items():
        if any(name.startswith(prefix) for prefix in skip):
            continue
        if path.name == "train.json":
            summary_a, summary_b = json.loads(path.read_text()), json.loads(b[name].read_text())
            assert ignore_keys <= set(summary_a) & set(summary_b), name
            for key in ignore_keys:
                del summary_a[key], summary_b[key]
            assert summary_a == summary_b, name
        elif path.suffix == ".pt":
            # torch.save names the archive's records after the file, here a random temporary name.
            _assert_same_content(torch.load(path, weights_only=True), torch.load(b[name], weights_only=True), name)
        else:
            assert path.read_bytes() == b[name].read_bytes(), f"{name} differs"
        compared.append(name)
    return compared


def _assert_same_content(a, b, where: str):
    """Nested dicts/lists of tensors and plain values, equal bit for bit (a resume state)."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_content(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_content(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _train_dir(config: Path) -> str:
    bumps = load_config(config)["bumps"]
    (name,) = dataset_specs(bumps)
    return f"results/bumps/runs/{name}/seed{bumps['seeds'][0]}/train"


# ------------------------------------------------------------------------------------------------
# The whole bump study, on SLURM and locally
# ------------------------------------------------------------------------------------------------
def test_profile_runs_the_bump_study_under_slurm_with_local_outputs(slurm, tmp_path):
    on_slurm = Run(
        "tiny bump study through --profile profiles/slurm",
        tmp_path / "slurm",
        PIPELINE,
        "--profile",
        str(PROFILE),
        *SLURM_ARGS,
    )
    local = Run("same study locally (--cores 2)", tmp_path / "local", PIPELINE, "--cores", "2")
    try:
        log = on_slurm.wait()
        local.wait()
    finally:
        on_slurm.stop()
        local.stop()

    # Every job the cluster rules made was submitted through the plugin, and SLURM's
    # job-completion log knows exactly those jobs: all COMPLETED, in the test's directory.
    cluster_rules = (
        "bumps_dataset|bumps_audit|bumps_train|bumps_sample|bumps_evaluate|"
        "relational_vocabulary|relational_split|relational_audit|relational_text_encoder|relational_train|"
        "relational_sample|relational_evaluate"
    )
    assert not re.search(rf"^\s*localrule ({cluster_rules}):", log, re.M), "a cluster rule ran on the submit host"
    records = _slurm_records(slurm, log)
    for record in records:
        assert record["JobState"] == "COMPLETED", record
        assert Path(record["WorkDir"]) == tmp_path / "slurm", record

    # Every rule job ran inside one of those SLURM jobs (the in-job Snakemake's log, kept by the profile).
    ran = set()
    for slurm_log in _submitted(log).values():
        ran |= _rule_jobs_in(slurm_log.read_text())
    bumps = load_config(PIPELINE)["bumps"]
    names = dataset_specs(bumps)
    expected = {(rule, f"dataset={name}") for name in names for rule in ("bumps_dataset", "bumps_audit")}
    expected |= {
        (rule, f"dataset={name}, seed={seed}")
        for name in names
        for seed in bumps["seeds"]
        for rule in ("bumps_train", "bumps_sample", "bumps_evaluate")
    }
    relational = load_config(PIPELINE)["relational"]
    splits = [spec["name"] for spec in relational["splits"]]
    vocab = {spec["vocab_size"] for spec in relational["splits"]}
    relational_runs = relational_config.runs(relational)
    expected |= {("relational_vocabulary", f"vocab_size={n}, icon_size={relational['icon_size']}") for n in vocab}
    expected |= {(rule, f"split={split}") for split in splits for rule in ("relational_split", "relational_audit")}
    expected |= {
        (rule, f"experiment={experiment}, split={split}, seed={seed}")
        for experiment, split, seed in relational_runs
        for rule in ("relational_train", "relational_sample", "relational_evaluate")
    }
    encoders = relational_config.shared_text_encoders(relational)  # caption pretraining, once per split
    expected |= {("relational_text_encoder", f"split={split}, encoder={key}") for split, key in encoders}
    assert ran == expected
    # One SLURM job per dataset (the profile groups a dataset with its audit) and three per run;
    # likewise per vocabulary, per split (with its audit), per caption-pretrained encoder and three
    # per relational run.
    bump_jobs = len(names) * (1 + 3 * len(bumps["seeds"]))
    relational_jobs = len(vocab) + len(splits) + len(encoders) + 3 * len(relational_runs)
    assert len(records) == bump_jobs + relational_jobs, _submitted(log)
    # The rest ran on the submitting host.
    for rule in (
        "bumps_metrics",
        "bumps_figure_phases",
        "bumps_figure_metrics",
        "relational_audit_table",
        "relational_audit_figure",
        "relational_metrics",
        "relational_figure",
    ):
        assert re.search(rf"^\s*localrule {rule}:", log, re.M), rule

    # Same outputs as the local run: datasets, audits, snapshots (safetensors), samples, embeddings,
    # metrics and figures byte for byte, resume states tensor for tensor. Logs and benchmarks carry
    # times and hosts.
    compared = _assert_same_files(
        tmp_path / "local" / "results", tmp_path / "slurm" / "results", skip=("logs/", "benchmarks/")
    )
    for name in names:
        for file in ("labels.csv", "preview.png", "audit.json"):
            assert f"bumps/datasets/{name}/{file}" in compared
    bump_snapshots = [name for name in compared if name.startswith("bumps/") and name.endswith(".safetensors")]
    assert len(bump_snapshots) == 2 * 2 * len(names)  # train/ and .state/
    assert "bumps/metrics.csv" in compared
    assert sum(name.startswith("bumps/figures/") for name in compared) == 10
    # the relational study too: trained weights, samples, metrics and every figure, byte for byte
    assert "relational/metrics.csv" in compared
    assert sum(name.startswith("relational/figures/") for name in compared) == 12  # six figures, PNG + PDF
    for experiment, split, seed in relational_runs:
        run = f"relational/runs/{experiment}/{split}/seed{seed}"
        assert f"{run}/metrics.csv" in compared and f"{run}/samples/step000000004.npz" in compared
        assert f"{run}/train/snapshots/step000000004.safetensors" in compared


# ------------------------------------------------------------------------------------------------
# Training longer than its time limit
# ------------------------------------------------------------------------------------------------
@dataclass
class TimeLimitCase:
    """One training run through the profile (first attempt: 2 minutes) and the same run locally, uninterrupted."""

    config: Path
    on_slurm: Run
    local: Run

    @property
    def training(self) -> dict:
        return load_config(self.config)["bumps"]["training"]

    def stop(self):
        self.on_slurm.stop()
        self.local.stop()


def _start_time_limit_case(label: str, base: Path, config: Path, path_prefix: Path | None = None) -> TimeLimitCase:
    train_dir = _train_dir(config)
    name = Path(train_dir).parts[-3]
    # The dataset is made locally (the pipeline test runs dataset jobs on SLURM): here every SLURM
    # job is an attempt of the training job.
    _sync_snakemake(base / "slurm", config, "--cores", "1", f"results/bumps/datasets/{name}/labels.csv")
    profile = _derived_profile(base / "profile", TRAIN_RUNTIME)
    args = ("--profile", str(profile), *SLURM_ARGS, train_dir)
    on_slurm = Run(f"{label} through the profile", base / "slurm", config, *args, path_prefix=path_prefix)
    local = Run(f"{label}: the same run locally, uninterrupted", base / "local", config, "--cores", "1", train_dir)
    return TimeLimitCase(config, on_slurm, local)


@pytest.fixture(scope="module")
def margin_case(slurm, tmp_path_factory):
    case = _start_time_limit_case("time limit, stop margin", tmp_path_factory.mktemp("margin"), TIMELIMIT)
    yield case
    case.stop()


@pytest.fixture(scope="module")
def sigterm_case(slurm, tmp_path_factory):
    base = tmp_path_factory.mktemp("sigterm")
    config = yaml.safe_load(TIMELIMIT.read_text())
    config["bumps"]["training"]["steps"] = SIGTERM_STEPS
    (base / "config.yaml").write_text(yaml.safe_dump(config))
    # The squeue shim withholds the job's end time from training, which then runs until SIGTERM.
    case = _start_time_limit_case("time limit, SIGTERM", base, base / "config.yaml", path_prefix=SQUEUE_SHIM)
    yield case
    case.stop()


@pytest.fixture(scope="module", autouse=True)
def _start_time_limit_runs_first(request):
    """The time-limit runs take longest and mostly wait: start them before the first test, to overlap with it."""
    for name, enabled in (("margin_case", True), ("sigterm_case", SIGTERM_TEST)):
        if enabled and any(name in item.fixturenames for item in request.session.items):
            request.getfixturevalue(name)


def _two_attempts(case: TimeLimitCase, slurm: dict, first_state: str) -> tuple[str, dict, dict]:
    """Wait for both runs; the SLURM run took two attempts: first_state, then COMPLETED. Returns its log and both."""
    log = case.on_slurm.wait()
    case.local.wait()
    attempts = _slurm_records(slurm, log)
    for number, record in enumerate(attempts, 1):
        print(
            f"  attempt {number}: SLURM job {record['JobId']} {record['JobState']} after {_seconds(record):.0f} s "
            f"(limit {record['TimeLimit']} min)"
        )
    assert [(r["JobState"], r["TimeLimit"]) for r in attempts] == [(first_state, "2"), ("COMPLETED", "15")], attempts
    for record in attempts:
        assert Path(record["WorkDir"]) == case.on_slurm.workdir, record
    assert all(path.parent.parent.name == "rule_bumps_train" for path in _submitted(log).values()), _submitted(log)
    return log, attempts[0], attempts[1]


def _assert_resumed_bit_identical(case: TimeLimitCase, stopped_at: int):
    """The retry resumed where the first attempt stopped, and the run equals the uninterrupted one."""
    training, train_dir = case.training, _train_dir(case.config)
    name = Path(train_dir).parts[-3]
    results = case.on_slurm.workdir / "results"
    train_log = (results / "logs" / "bumps" / "train" / f"{name}_seed0.log").read_text()
    resumed = re.search(rf"resuming {name} from step (\d+)", train_log)
    assert resumed, train_log[-3000:]
    assert 0 < int(resumed[1]) == stopped_at < training["steps"]
    summary = json.loads((case.on_slurm.workdir / train_dir / "train.json").read_text())
    assert summary["steps_this_job"] == training["steps"] - stopped_at
    # Every snapshot (the final weights and each checkpoint's), bit for bit; loss.csv: see
    # test_resumed_run_has_the_uninterrupted_loss_history.
    compared = _assert_same_files(
        case.local.workdir / train_dir,
        case.on_slurm.workdir / train_dir,
        skip=("loss.csv",),
        ignore_keys=TIMING_KEYS | {"steps_this_job"},
    )
    snapshots = [n for n in compared if n.endswith(".safetensors")]
    assert len(snapshots) == training["steps"] // training["checkpoint_every"], compared


def test_training_past_its_time_limit_stops_itself_and_resumes_bit_identical(slurm, margin_case):
    """The preferred path: training reads the job's end time from squeue and stops stop_margin_seconds before it."""
    log, first, _ = _two_attempts(margin_case, slurm, "FAILED")
    # Stopped by itself: FAILED (exit 75), not TIMEOUT, so SLURM never had to kill it, and before
    # its 2-minute limit (it stops 50 s before its end time: 75-95 s in, a minute of which the
    # job's start-up can take on a half-speed machine; 92 s with a 40-s margin on a loaded one).
    assert _seconds(first) < 120, first
    margin = margin_case.training["stop_margin_seconds"]
    # The first attempt's rule log (printed by Snakemake: show-failed-logs), and its SLURM log.
    stopped = re.search(rf"stopped at step (\d+)/\d+ \(within {margin:.0f} s of the job's end time\)", log)
    assert stopped, log[-6000:]
    assert "returned non-zero exit status 75" in _submitted(log)[first["JobId"]].read_text()
    _assert_resumed_bit_identical(margin_case, int(stopped[1]))


@pytest.mark.skipif(not SIGTERM_TEST, reason="slow (about 6 minutes): DIFFCOMP_SLURM_SIGTERM_TEST=1 runs it")
def test_training_stopped_by_sigterm_at_its_time_limit_resumes_bit_identical(slurm, sigterm_case):
    """The fallback: without the end time (squeue withheld), training stops on SLURM's SIGTERM at the limit."""
    log, first, _ = _two_attempts(sigterm_case, slurm, "TIMEOUT")
    stopped = re.search(r"stopped at step (\d+)/\d+ \(received SIGTERM\)", log)
    assert stopped, log[-6000:]
    first_log = _submitted(log)[first["JobId"]].read_text()
    assert "DUE TO TIME LIMIT" in first_log, first_log[-3000:]
    _assert_resumed_bit_identical(sigterm_case, int(stopped[1]))


@pytest.mark.parametrize("case_name", ["margin_case", "sigterm_case"])
def test_resumed_run_has_the_uninterrupted_loss_history(request, case_name):
    if case_name == "sigterm_case" and not SIGTERM_TEST:
        pytest.skip("slow: DIFFCOMP_SLURM_SIGTERM_TEST=1 runs it")
    case = request.getfixturevalue(case_name)
    case.on_slurm.wait()
    case.local.wait()
    train_dir = _train_dir(case.config)
    uninterrupted = (case.local.workdir / train_dir / "loss.csv").read_text().splitlines()
    resumed = (case.on_slurm.workdir / train_dir / "loss.csv").read_text().splitlines()
    # the loss summed since the last row is part of the resume state, so even the row that spans the
    # interruption is the same
    assert resumed == uninterrupted

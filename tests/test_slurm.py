"""profiles/slurm against a real SLURM: jobs run under SLURM and give the same outputs as a local run.

Needs a running SLURM controller and node: `make test-slurm` (tests/slurm/run_slurm_test.sh)
starts a single-node one from Debian packages and runs this file; without one every test skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffcomp.bumps.config import dataset_specs
from diffcomp.config import load_config

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
TINY = REPO / "tests" / "slurm" / "config.yaml"
# A hang in the scheduler must fail the test, not eat the CI budget.
RUN_TIMEOUT = 600

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


def _env() -> dict:
    """The environment of a user with the project venv active (jobs inherit it: sbatch --export=ALL)."""
    venv_bin = Path(sys.executable).parent
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]),
        "VIRTUAL_ENV": str(venv_bin.parent),
        "PYTHONHASHSEED": "0",
    }


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir), "--configfile", str(TINY), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=workdir, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"snakemake hung for {RUN_TIMEOUT} s:\n{(err.stderr or b'')[-6000:]!r}") from None
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}")
    return proc


def _targets() -> list[str]:
    """Phase 1: every dataset's outputs and audit (training stages join once their rules land)."""
    names = dataset_specs(load_config(TINY)["bumps"])
    files = ["labels.csv", "preview.png", "audit.json"]
    return [f"results/bumps/datasets/{name}/{file}" for name in names for file in files]


def _jobcomp(path: Path, run_id: str) -> dict[str, dict]:
    """SLURM's own record (jobcomp/filetxt) of the jobs named after this Snakemake run: id -> fields."""
    jobs = {}
    for line in path.read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("Name") == run_id:
            jobs[fields["JobId"]] = fields
    return jobs


def _rule_jobs_in(slurm_log: str) -> set[tuple[str, str]]:
    """(rule, dataset) of every job that Snakemake ran inside one SLURM job (its SLURM log)."""
    found = set()
    for block in re.split(r"\n\s*\[[^\]]+\]\n", slurm_log):
        rule = re.search(r"^\s*(?:local)?rule (\w+):", block, re.M)
        wildcards = re.search(r"^\s*wildcards: dataset=(\S+)", block, re.M)
        if rule and wildcards:
            found.add((rule.group(1), wildcards.group(1)))
    return found


def _wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while not (ok := predicate()) and time.monotonic() < deadline:
        time.sleep(1)
    return ok


def _result_files(workdir: Path) -> dict[str, Path]:
    root = workdir / "results"
    # Logs carry timestamps and hosts; everything else must match exactly.
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and p.parts[len(root.parts)] != "logs"}


def test_profile_runs_jobs_under_slurm_with_local_outputs(slurm, tmp_path):
    targets = _targets()
    t0 = time.monotonic()
    proc = _snakemake(
        tmp_path / "slurm",
        "--profile",
        str(PROFILE),
        # No accounting database on the test node, so sacct cannot answer; squeue can (MinJobAge=600).
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        *targets,
    )
    slurm_seconds = time.monotonic() - t0
    log = proc.stderr
    print(f"tiny run through --profile profiles/slurm: {slurm_seconds:.0f} s")

    # Snakemake submitted through the plugin and logged every SLURM job id.
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)
    assert submitted, log[-4000:]
    assert not re.search(r"^\s*localrule (bumps_dataset|bumps_audit):", log, re.M), "a cluster rule ran locally"

    # SLURM's job-completion log knows exactly these jobs, all COMPLETED, run in the test's directory.
    jobcomp_path = Path(slurm["JobCompLoc"])
    ids = {jobid for jobid, _ in submitted}
    assert _wait_for(lambda: set(_jobcomp(jobcomp_path, run_id)) >= ids, 30), (ids, _jobcomp(jobcomp_path, run_id))
    records = _jobcomp(jobcomp_path, run_id)
    assert set(records) == ids
    for record in records.values():
        assert record["JobState"] == "COMPLETED", record
        assert Path(record["WorkDir"]) == tmp_path / "slurm", record

    # Every rule job ran inside one of those SLURM jobs (the inner Snakemake's log, kept by the profile).
    ran = set()
    for _, slurm_log in submitted:
        ran |= _rule_jobs_in(Path(slurm_log).read_text())
    names = dataset_specs(load_config(TINY)["bumps"])
    expected = {(rule, name) for name in names for rule in ("bumps_dataset", "bumps_audit")}
    assert ran == expected
    # The profile groups a dataset with its audit: one SLURM job per dataset.
    assert len(ids) == len(names), submitted

    # Same outputs as a local run of the same configuration.
    t0 = time.monotonic()
    _snakemake(tmp_path / "local", "--cores", "2", *targets)
    print(f"same run locally (--cores 2): {time.monotonic() - t0:.0f} s")
    on_slurm, local = _result_files(tmp_path / "slurm"), _result_files(tmp_path / "local")
    assert sorted(on_slurm) == sorted(local)
    assert all(t.removeprefix("results/") in local for t in targets)
    for name, path in local.items():
        if name.endswith(".json"):
            assert json.loads(on_slurm[name].read_text()) == json.loads(path.read_text()), name
        else:
            assert on_slurm[name].read_bytes() == path.read_bytes(), name

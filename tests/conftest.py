import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The smallest bump-study UNet the schema allows a sensible run with: seconds per job on a CPU.
TINY_MODEL = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "attention_levels": [1],
    "norm_num_groups": 4,
    "label_encoding_dim": 8,
}

# The smallest relational-study UNet and text encoder: a fraction of a second per step on a CPU.
TINY_RELATIONAL_MODEL = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "cross_attention_levels": [1],
    "cross_attention_dim": 16,
    "attention_head_dim": 4,
    "norm_num_groups": 4,
}
# caption pretraining off (the schema's default trains the encoder for 400 steps): a test that
# needs it sets caption_pretraining_steps itself
TINY_TEXT_ENCODER = {
    "d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32, "max_length": 12, "caption_pretraining_steps": 0
}  # fmt: skip


def ema_parameters(seed: int, count: int = 4) -> list:
    """Weights of several shapes (a 0-dim one too) for the EMA tests; the second is frozen, which
    EMAModel copies instead of averaging."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 2, 3, 3), (), (11,), (2, 9)][:count] + [(4, 4)] * max(0, count - 6)
    parameters = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]
    parameters[1].requires_grad_(False)
    return parameters


def perturb(parameters, generator) -> None:
    """What an optimiser step does to the weights, as far as an EMA can tell."""
    import torch

    with torch.no_grad():
        for p in parameters:
            p.add_(0.1 * torch.randn(p.shape, generator=generator).to(p.dtype))


def snakemake_bin() -> str:
    """The snakemake of the interpreter running the tests (the project venv)."""
    candidate = Path(sys.executable).with_name("snakemake")
    return str(candidate) if candidate.exists() else shutil.which("snakemake")


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real workflow CLI on a config inside ``workdir`` (results land there)."""
    cmd = [snakemake_bin(), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def planned_rules(workdir: Path) -> dict[str, int]:
    """Rule -> job count of what a dry run of workdir/config.yaml would execute now."""
    out = run_snakemake(workdir, "--configfile", "config.yaml", "--cores", "2", "-n").stdout
    counts = {}
    for line in out.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


@pytest.fixture
def workdir(tmp_path):
    return tmp_path

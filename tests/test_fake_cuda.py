"""The GPU code paths, run on a fake CUDA device (tests/fake_cuda.py): devices and types, no numbers.

Every training configuration a GPU job can take (single runs and packs of both studies, the
interventions, pretraining; bf16, TF32, fused AdamW, channels-last, the whole-step CUDA graph)
trains, checkpoints and resumes here on ``cuda:0`` tensors that carry no data. A CPU tensor or
a CPU generator where CUDA needs a device one fails as it would on a GPU, and the states and
snapshots are checked to hold what a GPU run's would, where it would. The samplers run on the
same device from snapshots trained on the CPU. What this cannot check is any value: arithmetic,
rounding and speed on a GPU are the benchmarks' (bench/gpu_bench.sh).
"""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_cuda import FAKE_CUDA, FakeCudaApi, MemoryCheckpoints, devices, fake_cuda, load_cuda_device_guard
from test_bumps_pack import two_runs
from test_bumps_train import tiny_run
from test_relational_train import tiny_section
from torch._subclasses.fake_tensor import unset_fake_temporarily

from diffcomp.bumps import train as bumps_train
from diffcomp.bumps.sample import sample_run
from diffcomp.bumps.train import train_pack, train_run
from diffcomp.relational.config import pretrain_definition, run_definition
from diffcomp.relational.train import sample_relational_run, train_relational_pack, train_relational_run
from diffcomp.training import TrainingInterrupted

_WHY_NOT = load_cuda_device_guard()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"no fake CUDA device: {_WHY_NOT}")

CUDA = str(FAKE_CUDA)
# every GPU option but the CUDA graph, at its non-default value
GPU_OPTIONS = {"precision": "bf16", "tf32": True, "fused_optimizer": True, "channels_last": True}


def _optimizer_devices(state: dict, key: str) -> set[str]:
    return devices([per_parameter[key] for per_parameter in state["optimizer"]["state"].values()])


def _assert_gpu_state(state: dict, *, step_on_device: bool, ema: bool = True) -> None:
    """What a GPU run's resume state holds, where: weights, moments and EMA on the device; AdamW's
    step counters on the device only for the fused or capturable AdamW; the loss sum on the host."""
    assert devices(state["model"]) == {CUDA}
    assert _optimizer_devices(state, "exp_avg") == _optimizer_devices(state, "exp_avg_sq") == {CUDA}
    assert _optimizer_devices(state, "step") == {CUDA if step_on_device else "cpu"}
    if ema:
        assert devices(state["ema"]["shadow_params"]) == {CUDA}
    assert devices(state["running_loss"]) == {"cpu"}
    assert devices([state["data_rng"], state["noise_rng"], state["torch_rng"]]) == {"cpu"}


@pytest.mark.parametrize(
    "options",
    [{}, GPU_OPTIONS, {"cuda_graph": True}, {"cuda_graph": True, **GPU_OPTIONS}],
    ids=["default", "gpu-options", "cuda-graph", "cuda-graph-gpu-options"],
)
def test_bump_run_trains_checkpoints_and_resumes_on_cuda(tmp_path, monkeypatch, options):
    _, run, runtime, labels = tiny_run(tmp_path, **options)
    runtime = {**runtime, "device": CUDA}
    checkpoints = MemoryCheckpoints(monkeypatch)
    out = tmp_path / "train"
    with fake_cuda() as api:
        with pytest.raises(TrainingInterrupted, match="stopped at step 6/12"):
            train_run(run, runtime, labels, out, stop_after_step=6)
        summary = train_run(run, runtime, labels, out)
    graphed = options.get("cuda_graph", False)
    assert summary["device"] == CUDA and summary["steps_this_job"] == 6 and summary["cuda_graph"] is graphed
    assert summary["fused_optimizer"] is ("fused_optimizer" in options)
    assert summary["channels_last"] is ("channels_last" in options) and summary["tf32"] is options.get("tf32")
    _assert_gpu_state(checkpoints.states[6], step_on_device=graphed or "fused_optimizer" in options)
    assert sorted(checkpoints.snapshots) == [4, 8, 12]
    assert all(devices(weights) == {CUDA} for weights in checkpoints.snapshots.values())
    if graphed:  # each job: 3 eager warm-ups (the last audited), a capture, then replays
        assert api.replays == 2 * (6 - 3) and len(api.registered) == 2 * 2
    else:
        assert api.replays == 0
    assert (out / "loss.csv").exists() and (out / "train.json").exists()
    assert torch.backends.cuda.matmul.allow_tf32 is False  # fake_cuda puts the process-wide flags back


@pytest.mark.parametrize("options", [{}, {"cuda_graph": True, **GPU_OPTIONS}], ids=["default", "cuda-graph-gpu"])
def test_bump_pack_trains_and_resumes_on_cuda(tmp_path, monkeypatch, options):
    """A pack on CUDA: vmapped GroupNorm under CUDA's autocast rule, its own generators in the graph."""
    runs, runtime, labels = two_runs(tmp_path)
    runtime = {**runtime, **options, "device": CUDA}
    checkpoints = MemoryCheckpoints(monkeypatch)
    with fake_cuda() as api:
        with pytest.raises(TrainingInterrupted):
            train_pack(runs, runtime, labels, tmp_path / "pack" / "train", stop_after_step=6)
        summary = train_pack(runs, runtime, labels, tmp_path / "pack" / "train")
    assert summary["device"] == CUDA and summary["steps_this_job"] == 6
    assert summary["channels_last"] is False  # a pack's 5-D stacked weights keep their layout
    graphed = bool(options)
    _assert_gpu_state(checkpoints.states[6], step_on_device=graphed)
    assert devices(checkpoints.states[6]["task_rngs"]) == {"cpu"}
    # the trainer's two generators and each run's data and noise generators, registered by each job
    assert len(api.registered) == (2 * (2 + 2 * len(runs)) if graphed else 0)


def test_a_cpu_tensor_in_the_step_fails_on_the_fake_device_as_on_a_gpu(tmp_path, monkeypatch):
    """The check itself: a batch rendered on the host and a generator on the host are caught."""
    real_render = bumps_train.render_torch
    monkeypatch.setattr(bumps_train, "render_torch", lambda labels, *a: real_render(labels, *a).cpu())
    _, run, runtime, labels = tiny_run(tmp_path)
    MemoryCheckpoints(monkeypatch)
    # the noise is drawn like the batch, on the CPU, from the run's CUDA generator
    with fake_cuda(), pytest.raises(RuntimeError, match="draws from a generator on cuda into a tensor on cpu"):
        train_run(run, {**runtime, "device": CUDA}, labels, tmp_path / "train")
    with fake_cuda(), pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        torch.ones(2, device=FAKE_CUDA) + torch.ones(2)
    # the capture audit sees what a CPU run cannot: copies between the host and the device
    from diffcomp.graphed_step import CaptureAudit

    with fake_cuda():
        on_device = torch.ones(2, device=FAKE_CUDA)
        audit = CaptureAudit([], FAKE_CUDA)
        with audit:
            on_device.cpu()
            torch.ones(2).to(FAKE_CUDA)
            on_device * 2
    assert [p.split(" [")[0] for p in audit.problems] == ["copies between the host and the device"] * 2
    with fake_cuda(), pytest.raises(RuntimeError, match="draws from a generator on cpu into a tensor on cuda"):
        torch.randn(2, generator=torch.Generator(device="cpu"), device=FAKE_CUDA)


def test_relational_runs_train_and_resume_on_cuda(tmp_path, monkeypatch):
    """Frozen encoder with the CUDA graph and the GPU options; a trained encoder eagerly; a
    single-object pretraining run; each interrupted once and resumed."""
    section, runtime, icons = tiny_section(tmp_path)
    run = run_definition(section, "baseline", "band", 0)
    checkpoints = MemoryCheckpoints(monkeypatch)
    graphed = {**runtime, "cuda_graph": True, **GPU_OPTIONS, "device": CUDA}
    with fake_cuda() as api:
        with pytest.raises(TrainingInterrupted):
            train_relational_run(
                run, graphed, icons, tmp_path / "g" / "train", train_csv=tmp_path / "train.csv", stop_after_step=5
            )
        summary = train_relational_run(run, graphed, icons, tmp_path / "g" / "train", train_csv=tmp_path / "train.csv")
    assert summary["device"] == CUDA and summary["cuda_graph"] is True and api.replays > 0
    _assert_gpu_state(checkpoints.states[5], step_on_device=True)

    trained_section, trained_runtime, trained_icons = tiny_section(tmp_path / "t", trainable=True)
    trained = run_definition(trained_section, "baseline", "band", 0)
    checkpoints = MemoryCheckpoints(monkeypatch)
    eager = {**trained_runtime, **GPU_OPTIONS, "device": CUDA}
    with fake_cuda():
        with pytest.raises(TrainingInterrupted):
            train_relational_run(
                trained,
                eager,
                trained_icons,
                tmp_path / "t" / "train",
                train_csv=tmp_path / "t" / "train.csv",
                stop_after_step=5,
            )
        train_relational_run(
            trained, eager, trained_icons, tmp_path / "t" / "train", train_csv=tmp_path / "t" / "train.csv"
        )
    state = checkpoints.states[5]
    _assert_gpu_state(state, step_on_device=True)
    assert any(key.startswith("text_encoder.") for key in state["model"])  # the encoder trains on the device

    pre_section, pre_runtime, pre_icons = tiny_section(tmp_path / "pre", single_object_pretraining_steps=4)
    pretrain = pretrain_definition(pre_section, "baseline", "band", 0)
    checkpoints = MemoryCheckpoints(monkeypatch)
    with fake_cuda():
        summary = train_relational_run(
            pretrain,
            {**pre_runtime, "cuda_graph": True, "device": CUDA},
            pre_icons,
            tmp_path / "pre" / "train",
            train_csv=tmp_path / "pre" / "train.csv",
        )
    assert summary["device"] == CUDA and summary["cuda_graph"] is True


def test_relational_pack_and_interventions_train_on_cuda(tmp_path, monkeypatch):
    """A relational pack, the contrastive losses (with the image encoder) and the projection on
    its CPU-trained base, each with the CUDA graph and bf16."""
    from test_relational_contrastive import contrastive_section
    from test_relational_pack import PAIRS, study
    from test_relational_projection import projection_section

    options = {"cuda_graph": True, "precision": "bf16", "device": CUDA}
    section, runtime, files = study(tmp_path / "pack")
    runs = [run_definition(section, "baseline", split, seed) for split, seed in PAIRS]
    checkpoints = MemoryCheckpoints(monkeypatch)
    with fake_cuda() as api:
        summary = train_relational_pack(
            runs,
            {**runtime, **options},
            [files[s][0] for s, _ in PAIRS],
            tmp_path / "pack" / "train",
            train_csvs=[files[s][1] for s, _ in PAIRS],
        )
    assert summary["device"] == CUDA and api.replays > 0
    _assert_gpu_state(checkpoints.states[max(checkpoints.states)], step_on_device=True)

    section, runtime, icons = contrastive_section(tmp_path / "c", fake_to_fake=0.5, fake_to_real=0.5)
    contrastive = run_definition(section, "contrastive", "band", 0)
    with fake_cuda() as api:
        summary = train_relational_run(
            contrastive,
            {**runtime, **options},
            icons,
            tmp_path / "c" / "train",
            train_csv=tmp_path / "c" / "train.csv",
            image_encoder_dir=tmp_path / "c" / "encoder",
        )
    assert summary["device"] == CUDA and api.replays > 0

    # the projection starts from its base run's weights: trained for real on the CPU first
    section, runtime, icons = projection_section(tmp_path / "p", steps=4)
    base_dir = tmp_path / "p" / "base" / "train"
    monkeypatch.undo()
    train_relational_run(
        run_definition(section, "baseline", "band", 0), runtime, icons, base_dir, train_csv=tmp_path / "p" / "train.csv"
    )
    MemoryCheckpoints(monkeypatch)
    with fake_cuda() as api:
        summary = train_relational_run(
            run_definition(section, "wiclp", "band", 0),
            {**runtime, **options},
            icons,
            tmp_path / "p" / "wiclp" / "train",
            train_csv=tmp_path / "p" / "train.csv",
            init_dir=base_dir,
        )
    assert summary["device"] == CUDA and api.replays > 0


def test_samplers_run_on_cuda_from_cpu_trained_snapshots(tmp_path):
    """The bump sampler with its GPU options (bf16 forward passes, TF32, channels-last weights) and
    the relational sampler, on CUDA, from snapshots trained for real on the CPU."""
    section, run, runtime, labels = tiny_run(tmp_path)
    train_run(run, runtime, labels, tmp_path / "bumps" / "train")
    sampling = {**section["sampling"], "precision": "bf16"}
    run_tf32 = {**run, "training": {**run["training"], "tf32": True}}
    with fake_cuda():
        written = sample_run(
            run_tf32,
            sampling,
            {"device": CUDA, "threads": 1, "channels_last": True},
            labels,
            tmp_path / "bumps" / "train",
            tmp_path / "bumps" / "samples",
        )
    assert [p.name for p in written] == [f"step{s:09d}.npz" for s in (4, 8, 12)]
    with np.load(written[0]) as sampled:
        assert sampled["images"].shape[1:] == (8, 8) and len(sampled["activations"]) == len(sampled["images"])

    rel_section, rel_runtime, icons = tiny_section(tmp_path / "rel")
    rel_run = run_definition(rel_section, "baseline", "band", 0)
    train_dir = tmp_path / "rel" / "train"
    train_relational_run(rel_run, rel_runtime, icons, train_dir, train_csv=tmp_path / "rel" / "train.csv")
    with fake_cuda():
        written = sample_relational_run(
            rel_run,
            rel_section["sampling"],
            {**rel_runtime, "device": CUDA},
            icons,
            tmp_path / "rel" / "train.csv",
            tmp_path / "rel" / "test.csv",
            train_dir,
            tmp_path / "rel" / "samples",
        )
    assert len(written) == 2


def test_a_bf16_pack_computes_every_layer_in_the_type_its_single_run_does_on_cuda():
    """CUDA's autocast rules (norms in float32, convolutions and linear layers in bf16) hold in a
    pack as in its single runs: every layer's output type matches (tests/test_packing.py checks
    the CPU's rules)."""
    from test_packing import pack_and_single_types

    with fake_cuda():
        found = pack_and_single_types(FAKE_CUDA)
    for single, packed in found:
        assert {torch.float32, torch.bfloat16} <= set(single.values())
        assert packed == single


def _bench(name: str):
    """bench/{name}.py as a module (bench_relational imports bench_bumps from its folder)."""
    folder = str(Path(__file__).resolve().parents[1] / "bench")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


# bench/gpu_bench.sh's settings (the compiled ones aside: torch.compile generates code for a real GPU)
GPU_BENCH_SETTINGS = {
    "eager_packed": ["--packed", "2"],
    "graph_packed": ["--packed", "2", "--no-bare", "--set", "cuda_graph=true"],
    "bf16_wide_heads_graph_packed": [
        *("--packed", "2", "--no-bare", "--set", "cuda_graph=true", "--set", "precision=bf16"),
        *("--set", "model.attention_head_dim=16"),
    ],
    "bf16_eager": ["--set", "precision=bf16"],
    "wide_heads_eager": ["--set", "model.attention_head_dim=16"],
    "tf32_fused": ["--set", "tf32=true", "--set", "fused_optimizer=true"],
}


@pytest.mark.parametrize("setting", list(GPU_BENCH_SETTINGS))
def test_gpu_bench_bump_settings_run_on_cuda(tmp_path, monkeypatch, setting):
    """What a device session runs first (bench/gpu_bench.sh) runs on CUDA here: the quick config,
    a few steps, and the report a GPU would give (its timings mean nothing here)."""
    MemoryCheckpoints(monkeypatch)
    out = tmp_path / "bench.json"
    args = ["--config", "config.yaml", "--steps", "4", "--rounds", "1", "--training-only", "--json", str(out)]
    with fake_cuda():
        _bench("bench_bumps").main([*args, "--set", "device=cuda:0", *GPU_BENCH_SETTINGS[setting]])
    result = json.loads(out.read_text())
    assert result["training"]["device"] == CUDA and result["training"]["bf16_peak_tflops"] == 989.4  # an H100's
    if "--packed" in GPU_BENCH_SETTINGS[setting]:
        packed = result["packed"]
        assert packed["models"] == 2 and packed["pipeline_pack_aggregate_steps_per_s"] > 0
        assert packed["sample_seconds_per_checkpoint_per_model"] > 0


def test_gpu_bench_relational_setting_runs_on_cuda(tmp_path, monkeypatch):
    """gpu_bench.sh's relational setting: training, contrastive losses, text encoder, prediction
    and sampling on CUDA (the image encoder trains on the CPU, as the workflow's rule does)."""
    bench = _bench("bench_relational")
    MemoryCheckpoints(monkeypatch)
    train_on_cpu = bench.train_image_encoder

    def train_image_encoder(*args, **kwargs):
        with unset_fake_temporarily():
            return train_on_cpu(*args, **kwargs)

    monkeypatch.setattr(bench, "train_image_encoder", train_image_encoder)
    out = tmp_path / "bench.json"
    with fake_cuda():
        bench.main(["--config", "config.yaml", "--steps", "3", "--rounds", "1", "--device", CUDA, "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["device"] == CUDA and result["device_name"] == FakeCudaApi.DEVICE_NAME
    assert {"training", "contrastive", "text_encoder", "sampling"} <= set(result)

"""training.cuda_graph: the graph-ready step (diffcomp.graphed_step) and its refusals, on the CPU.

No GPU here: the CUDA capture and replay are not run. What is tested is everything the CPU can
check: the device-side EMA equals diffusers' EMAModel bit for bit (and their states are
interchangeable), a CPU run with cuda_graph on (the same step code, eager) equals the default run
bit for bit and resumes bit-identically, and the configurations a graph cannot run are refused
before any training work.
"""

import copy
import io
import logging
import types

import pytest
import torch
from conftest import ema_parameters, perturb
from diffusers.training_utils import EMAModel
from fake_cuda import FakeCudaApi
from safetensors.torch import load_file
from test_bumps_pack import two_runs
from test_bumps_train import tiny_run
from test_relational_train import tiny_section
from torch.utils._python_dispatch import TorchDispatchMode

from diffcomp.bumps.train import TrainingInterrupted, train_pack, train_run
from diffcomp.config import RUNTIME_KEYS, ConfigError, validate_config
from diffcomp.graphed_step import (
    CaptureAudit,
    DeviceEMA,
    GraphedStep,
    audit_capture,
    check_generators,
    same_generator,
)
from diffcomp.relational.config import run_definition
from diffcomp.relational.train import train_relational_run
from diffcomp.training import (
    RunPaths,
    TrainingTask,
    check_cuda_graph,
    fingerprint,
    make_optimizer,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU


# --------------------------------------------------------------------------------------------
# the device-side EMA
# --------------------------------------------------------------------------------------------
def _round_trip(state: dict) -> dict:
    """Through torch.save/load as the trainer's resume states go (weights_only, onto the CPU)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


def _assert_same_ema(a, b) -> None:
    assert a.optimization_step == b.optimization_step
    assert len(a.shadow_params) == len(b.shadow_params)
    for x, y in zip(a.shadow_params, b.shadow_params, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize(
    "options",
    [{"decay": 0.99}, {"decay": 0.9999}, {"decay": 0.999, "use_ema_warmup": True, "min_decay": 0.5}],
    ids=["0.99", "0.9999", "warmup"],
)
@pytest.mark.parametrize("foreach_update", [None, True], ids=["loop", "foreach"])
def test_device_ema_equals_diffusers_bit_for_bit(options, foreach_update):
    """In both update forms: the loop a CPU gets by default, and the foreach one of a GPU."""
    parameters = ema_parameters(0)
    reference = EMAModel(parameters, **options)
    device_ema = DeviceEMA(parameters, foreach_update=foreach_update, **options)
    generator = torch.Generator().manual_seed(1)
    for _ in range(15):
        perturb(parameters, generator)
        reference.step(parameters)
        device_ema.step(parameters)
        _assert_same_ema(reference, device_ema)
    assert isinstance(device_ema.optimization_step, int) and device_ema.optimization_step == 15

    # states are interchangeable: each class resumes from the other's saved state
    saved_reference, saved_device = _round_trip(reference.state_dict()), _round_trip(device_ema.state_dict())
    assert saved_reference.keys() == saved_device.keys()
    assert {k: v for k, v in saved_reference.items() if k != "shadow_params"} == {
        k: v for k, v in saved_device.items() if k != "shadow_params"
    }
    resumed_reference = EMAModel(parameters, **options)
    resumed_device = DeviceEMA(parameters, foreach_update=foreach_update, **options)
    resumed_reference.load_state_dict(saved_device)
    shadow = list(resumed_device.shadow_params)
    resumed_device.load_state_dict(saved_reference)
    # loaded in place: a captured graph keeps pointing at the right tensors
    assert all(a is b for a, b in zip(shadow, resumed_device.shadow_params, strict=True))
    for _ in range(15):
        perturb(parameters, generator)
        for ema in (reference, device_ema, resumed_reference, resumed_device):
            ema.step(parameters)
        _assert_same_ema(reference, device_ema)
        _assert_same_ema(reference, resumed_reference)
        _assert_same_ema(reference, resumed_device)
    assert resumed_device.optimization_step == 30


def test_device_ema_decay_follows_diffusers_formula():
    ema = DeviceEMA(ema_parameters(0), decay=0.9, update_after_step=2)
    for step in range(12):
        ema.optimization_step = step
        assert ema.device_decay().dtype == torch.float64
        assert ema.device_decay().item() == ema.get_decay(step)


def test_device_ema_sampling_weights_round_trip():
    """store / copy_to / restore (the trainer's sampling_weights) work on the inherited methods."""
    parameters = ema_parameters(2)
    ema = DeviceEMA(parameters, decay=0.9)
    perturb(parameters, torch.Generator().manual_seed(3))
    ema.step(parameters)
    before = [p.detach().clone() for p in parameters]
    ema.store(parameters)
    ema.copy_to(parameters)
    assert all(torch.equal(p, s) for p, s in zip(parameters, ema.shadow_params, strict=True))
    ema.restore(parameters)
    assert all(torch.equal(p, b) for p, b in zip(parameters, before, strict=True))


def test_device_ema_rejects_mismatched_state():
    ema = DeviceEMA(ema_parameters(0), decay=0.9)
    state = copy.deepcopy(ema.state_dict())
    state["shadow_params"] = state["shadow_params"][:-1]
    with pytest.raises(ValueError, match="do not match"):
        ema.load_state_dict(state)


# --------------------------------------------------------------------------------------------
# a CPU run with cuda_graph on: the same step code, eager, bit-identical
# --------------------------------------------------------------------------------------------
def _snapshots(out_dir) -> dict:
    return {p.name: load_file(str(p)) for p in sorted((out_dir / "snapshots").glob("*.safetensors"))}


def _assert_same_run(a, b) -> None:
    snapshots_a, snapshots_b = _snapshots(a), _snapshots(b)
    assert snapshots_a.keys() == snapshots_b.keys() and snapshots_a
    for name, weights in snapshots_a.items():  # the EMA weights at every checkpoint
        assert weights.keys() == snapshots_b[name].keys()
        for key in weights:
            assert torch.equal(weights[key], snapshots_b[name][key]), (name, key)
    assert (a / "loss.csv").read_text() == (b / "loss.csv").read_text()


def test_cpu_run_with_cuda_graph_equals_the_default_run(tmp_path, caplog):
    _, run, runtime, labels = tiny_run(tmp_path, device="cpu")
    train_run(run, runtime, labels, tmp_path / "default" / "train")
    _, run_on, runtime_on, _ = tiny_run(tmp_path, device="cpu", cuda_graph=True)
    assert run_on == run and runtime_on["cuda_graph"] is True  # a runtime key: the same run, the same fingerprint
    with caplog.at_level(logging.WARNING, logger="diffcomp.train"):
        summary = train_run(run_on, runtime_on, labels, tmp_path / "graph" / "train")
    assert "training.cuda_graph: CUDA graphs need a CUDA device" in caplog.text
    assert summary["cuda_graph"] is False  # the effective setting, as for the other GPU options
    _assert_same_run(tmp_path / "default" / "train", tmp_path / "graph" / "train")


@pytest.mark.parametrize("first_job", [True, False], ids=["graph-then-graph", "eager-then-graph"])
def test_resume_with_cuda_graph_equals_uninterrupted(tmp_path, first_job):
    _, run, runtime, labels = tiny_run(tmp_path, device="cpu")
    reference = tmp_path / "a" / "train"
    train_run(run, runtime, labels, reference)

    on = {**runtime, "cuda_graph": True}
    resumed = tmp_path / "b" / "train"
    # step 5: between checkpoints (every 4) and loss.csv rows (every 2); the first job's EMA state
    # (EMAModel's or DeviceEMA's) is resumed by a cuda_graph job
    with pytest.raises(TrainingInterrupted, match="stopped at step 5/12"):
        train_run(run, on if first_job else runtime, labels, resumed, stop_after_step=5)
    summary = train_run(run, on, labels, resumed)
    assert summary["steps_this_job"] == 7
    _assert_same_run(reference, resumed)


def test_cpu_pack_with_cuda_graph_equals_the_default_pack(tmp_path):
    """A pack's step draws from its own generators (TrainingTask.generators) and averages stacked weights."""
    runs, runtime, labels = two_runs(tmp_path)
    train_pack(runs, runtime, labels, tmp_path / "default" / "train")
    with pytest.raises(TrainingInterrupted):
        train_pack(runs, {**runtime, "cuda_graph": True}, labels, tmp_path / "graph" / "train", stop_after_step=6)
    train_pack(runs, {**runtime, "cuda_graph": True}, labels, tmp_path / "graph" / "train")
    _assert_same_run(tmp_path / "default" / "train", tmp_path / "graph" / "train")


def test_cpu_relational_run_and_pack_with_cuda_graph_equal_the_default_ones(tmp_path):
    """A frozen encoder's relational step is declared capturable, single or packed."""
    from test_relational_pack import PAIRS, study

    from diffcomp.relational.train import train_relational_pack

    section, runtime, files = study(tmp_path)
    split, seed = PAIRS[0]
    run = run_definition(section, "baseline", split, seed)
    on = {**runtime, "cuda_graph": True}
    for name, options in (("default", runtime), ("graph", on)):
        train_relational_run(run, options, files[split][0], tmp_path / name / "train", train_csv=files[split][1])
    _assert_same_run(tmp_path / "default" / "train", tmp_path / "graph" / "train")

    runs = [run_definition(section, "baseline", s, k) for s, k in PAIRS]
    args = (runs, runtime, [files[s][0] for s, _ in PAIRS])
    csvs = [files[s][1] for s, _ in PAIRS]
    train_relational_pack(*args, tmp_path / "pack_default" / "train", train_csvs=csvs)
    with pytest.raises(TrainingInterrupted):
        train_relational_pack(runs, on, args[2], tmp_path / "pack_graph" / "train", train_csvs=csvs, stop_after_step=5)
    train_relational_pack(runs, on, args[2], tmp_path / "pack_graph" / "train", train_csvs=csvs)
    _assert_same_run(tmp_path / "pack_default" / "train", tmp_path / "pack_graph" / "train")


# --------------------------------------------------------------------------------------------
# refusals, before any training work
# --------------------------------------------------------------------------------------------
def test_check_cuda_graph_off_accepts_everything():
    task = TrainingTask(name="t", model=torch.nn.Linear(1, 1), next_batch=None, loss=None)
    for mode in (False, "reduce-overhead", "max-autotune"):
        assert check_cuda_graph({"cuda_graph": False, "compile": mode}, task) is False
    assert check_cuda_graph({}, task) is False


@pytest.mark.parametrize("mode", [False, True, "none", "default", "max-autotune-no-cudagraphs"])
def test_check_cuda_graph_accepts_compile_modes_without_graphs(mode):
    task = TrainingTask(name="t", model=torch.nn.Linear(1, 1), next_batch=None, loss=None, capturable=True)
    assert check_cuda_graph({"cuda_graph": True, "compile": mode}, task) is True


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_with_a_cuda_graph_compile_mode_is_refused_before_training(tmp_path, monkeypatch, mode):
    with pytest.raises(
        ValueError, match=rf"training\.cuda_graph: true cannot be combined with training\.compile: {mode}"
    ):
        check_cuda_graph({"cuda_graph": True, "compile": mode})
    calls = []
    monkeypatch.setattr(torch.nn.functional, "mse_loss", lambda *a, **k: calls.append(1))
    _, run, runtime, labels = tiny_run(tmp_path, device="cpu", cuda_graph=True, compile=mode)
    out = tmp_path / "run" / "train"
    with pytest.raises(ValueError, match=r"training\.cuda_graph"):
        train_run(run, runtime, labels, out)  # on a CPU too, where the compile mode would fall back
    assert not calls and not out.exists()
    assert not list(RunPaths.for_run(out, run).state_dir.glob("state_step*.pt"))


def test_undeclared_task_is_refused():
    task = TrainingTask(name="some task", model=torch.nn.Linear(1, 1), next_batch=None, loss=None)
    with pytest.raises(ValueError, match=r"training\.cuda_graph: true, but the training step of some task"):
        check_cuda_graph({"cuda_graph": True}, task)


def test_relational_run_with_a_trained_encoder_and_cuda_graph_is_refused_before_training(tmp_path, monkeypatch):
    section, runtime, icons = tiny_section(tmp_path, trainable=True)
    run = run_definition(section, "baseline", "band", 0)
    calls = []
    monkeypatch.setattr(torch.nn.functional, "mse_loss", lambda *a, **k: calls.append(1))
    out = tmp_path / "run" / "train"
    with pytest.raises(ValueError, match=r"training\.cuda_graph: true, but the training step of band"):
        train_relational_run(run, {**runtime, "cuda_graph": True}, icons, out, train_csv=tmp_path / "train.csv")
    assert not calls and not out.exists()
    assert not list(RunPaths.for_run(out, run).state_dir.glob("state_step*.pt"))


# --------------------------------------------------------------------------------------------
# the capture audit: what a CUDA graph would get wrong, seen in an eager run on the CPU
# --------------------------------------------------------------------------------------------
def _audited(step, generators=(), device=CPU) -> list[str]:
    audit = CaptureAudit(generators, device)
    with audit:
        step()
    return audit.problems


_X = torch.arange(6.0)
_MASK = _X > 2


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (lambda: _X.sum().item(), "reads a tensor's value on the host"),
        (lambda: bool(_X[0] > 1), "reads a tensor's value on the host"),
        (lambda: _X[_MASK], "indexes with a boolean mask"),
        (lambda: _X.clone().index_put_((_MASK,), torch.zeros(())), "indexes with a boolean mask"),
        (lambda: _X.nonzero(), "data-dependent output shape (nonzero)"),
        (lambda: torch.unique(_X), "data-dependent output shape (unique)"),
        (lambda: torch.repeat_interleave(_X, torch.ones(6, dtype=torch.long)), "repeat_interleave without"),
        (lambda: _X * torch.tensor(2.0), "builds a tensor from host data"),
        (lambda: torch.randn(3), "draws from torch's default generator"),
        (lambda: torch.nn.functional.dropout(_X, 0.1), "draws from torch's default generator"),  # CUDA: native_dropout
        (lambda: torch.randn(3, generator=torch.Generator().manual_seed(5)), "a generator the training step does not"),
    ],
    ids=[
        "item",
        "branch",
        "mask",
        "mask-put",
        "nonzero",
        "unique",
        "repeat",
        "tensor",
        "default-rng",
        "dropout",
        "unknown-rng",
    ],
)
def test_capture_audit_names_the_problem_and_its_line(step, expected):
    problems = _audited(step, [torch.Generator().manual_seed(1)])
    assert len(problems) == 1 and expected in problems[0], problems
    assert "test_graphed_step.py:" in problems[0]  # the offending source line, not torch's


def test_capture_audit_passes_device_side_code_and_leaves_the_optimizer_to_torch():
    declared = torch.Generator().manual_seed(1)
    model = torch.nn.Linear(6, 6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # not capturable: reads its step on the host

    def step():
        noise = torch.randn(6, generator=declared)
        x = torch.where(_MASK, _X, 0.0) + noise
        x = x[torch.randint(6, (6,), generator=declared)]  # integer indexing has a static shape
        x = torch.repeat_interleave(x, torch.ones(6, dtype=torch.long), output_size=6)
        model(x).square().mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        torch.nn.functional.dropout(x, 0.0) + torch.nn.functional.dropout(x, 0.5, training=False)
        optimizer.step()

    assert _audited(step, [declared]) == []
    assert _audited(step, []) != []  # the same step without its generator declared


def test_same_generator_knows_a_generator_through_its_dispatched_wrapper():
    """Dispatch hands over a new wrapper; an identically seeded twin (same state bytes) is another
    generator, and asking leaves both streams as they were."""
    declared, twin, reference = (torch.Generator().manual_seed(1) for _ in range(3))
    handed_over = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            handed_over.append((kwargs or {}).get("generator"))
            return func(*args, **(kwargs or {}))

    with Record():
        torch.randn(2, generator=declared)
    wrapper = handed_over[0]
    assert wrapper is not declared and torch.equal(wrapper.get_state(), declared.get_state())
    torch.randn(2, generator=reference)
    assert same_generator(wrapper, declared) and not same_generator(wrapper, twin)
    assert torch.equal(torch.randn(5, generator=declared), torch.randn(5, generator=reference))
    assert declared.initial_seed() == twin.initial_seed() == 1
    # the audit flags a draw from a twin although its state equals the declared generator's
    one, other = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert "does not declare" in _audited(lambda: torch.randn(2, generator=other), [one])[0]
    assert _audited(lambda: torch.randn(2, generator=one), [one]) == []


def test_audit_capture_raises_naming_every_problem():
    def step():
        _X.sum().item()
        torch.randn(2)

    with pytest.raises(ValueError, match=r"training step of task y cannot be captured") as err:
        audit_capture(step, [], CPU, "task y")
    assert "host" in str(err.value) and "default generator" in str(err.value)
    assert str(err.value).count("test_graphed_step.py:") == 2
    audit_capture(lambda: _X * 2.0, [], CPU, "task y")  # nothing to report


def test_a_cpu_run_with_cuda_graph_refuses_a_step_a_graph_cannot_capture(tmp_path, monkeypatch):
    """The trainer audits the first step of a CPU run with cuda_graph on; no output is written."""
    from diffcomp.bumps import train as bumps_train

    render = bumps_train.render_torch

    def render_reading_the_host(labels, *args):
        if labels[0, 0] > -1:  # a Python branch on a tensor: a host read
            return render(labels, *args)
        return render(labels, *args)

    monkeypatch.setattr(bumps_train, "render_torch", render_reading_the_host)
    _, run, runtime, labels = tiny_run(tmp_path, device="cpu", cuda_graph=True)
    out = tmp_path / "graph" / "train"
    with pytest.raises(ValueError, match=r"cannot be captured in a CUDA graph:\n  reads a tensor's value on the host"):
        train_run(run, runtime, labels, out)
    assert not out.exists()
    train_run(run, {**runtime, "cuda_graph": False}, labels, out)  # eager training has no such constraint


def test_relational_interventions_and_pretraining_pass_the_capture_audit(tmp_path):
    """The projection, contrastive and pretraining steps are declared capturable: their real steps pass the audit."""
    from test_relational_contrastive import contrastive_section
    from test_relational_projection import projection_section

    section, runtime, icons = contrastive_section(tmp_path, fake_to_fake=0.5, fake_to_real=0.5)
    on = {**runtime, "cuda_graph": True}
    csv = {"train_csv": tmp_path / "train.csv"}
    contrastive = run_definition(section, "contrastive", "band", 0)
    train_relational_run(
        contrastive, on, icons, tmp_path / "c" / "train", image_encoder_dir=tmp_path / "encoder", **csv
    )

    section, runtime, icons = projection_section(tmp_path / "p", steps=4)
    base, base_dir = run_definition(section, "baseline", "band", 0), tmp_path / "p" / "base" / "train"
    train_relational_run(base, on, icons, base_dir, train_csv=tmp_path / "p" / "train.csv")
    projection = run_definition(section, "wiclp", "band", 0)
    out = tmp_path / "p" / "wiclp" / "train"
    train_relational_run(projection, on, icons, out, train_csv=tmp_path / "p" / "train.csv", init_dir=base_dir)
    assert (out / "train.json").exists() and (tmp_path / "c" / "train" / "train.json").exists()

    # a single-object pretraining run (its batches place one icon in the top or the bottom half)

    from diffcomp.relational.config import pretrain_definition

    (tmp_path / "pre").mkdir()
    section, runtime, icons = tiny_section(tmp_path / "pre", single_object_pretraining_steps=4)
    pretrain = pretrain_definition(section, "baseline", "band", 0)
    train_relational_run(
        pretrain,
        {**runtime, "cuda_graph": True},
        icons,
        tmp_path / "pre" / "train",
        train_csv=tmp_path / "pre" / "train.csv",
    )
    assert (tmp_path / "pre" / "train" / "train.json").exists()


def test_graphed_step_needs_cuda_a_capturable_optimizer_and_device_generators():
    model = torch.nn.Linear(2, 2)
    plain = make_optimizer(model.parameters(), {"learning_rate": 1e-3, "weight_decay": 0.0}, {"fused_optimizer": False})
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GraphedStep(lambda: None, plain, [], CPU)
    with pytest.raises(ValueError, match="capturable=True"):
        GraphedStep(lambda: None, plain, [], CUDA)
    with pytest.raises(ValueError, match=r"training\.cuda_graph: the training step draws from a generator on cpu"):
        check_generators([torch.Generator()], CUDA)
    check_generators([torch.Generator()], CPU)


def test_graphed_step_warms_up_captures_once_and_replays(monkeypatch):
    """The capture bookkeeping, with torch.cuda replaced by fakes: eager warm-ups, one capture that
    reads the lr from a device tensor, then replays that see the schedule's lr; generators registered."""
    fake = FakeCudaApi().patch(monkeypatch)
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, capturable=True)
    calls = []

    def step():
        lr = optimizer.param_groups[0]["lr"]
        calls.append((fake.capturing, lr if isinstance(lr, float) else "tensor", model.weight.grad is None))

    generators = [types.SimpleNamespace(device=CUDA), types.SimpleNamespace(device=CUDA)]  # "CUDA generators"
    graphed = GraphedStep(step, optimizer, generators, CUDA, name="fake")
    for _ in range(3):
        graphed()
    assert calls == [(False, 1e-3, False)] * 3 and fake.replays == 0 and graphed.graph is None
    graphed()  # captures (grads cleared first, lr read from the tensor), then replays
    assert calls[3] == (True, "tensor", True) and len(calls) == 4
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the schedule keeps its float
    assert fake.replays == 1 and fake.registered == generators
    assert graphed.lrs[0].item() == pytest.approx(1e-3)
    optimizer.param_groups[0]["lr"] = 5e-4  # what the LR schedule does between steps
    graphed()
    graphed()
    assert len(calls) == 4 and fake.replays == 3
    assert graphed.lrs[0].item() == pytest.approx(5e-4)


def test_graphed_step_names_a_failed_capture(monkeypatch):
    fake = FakeCudaApi().patch(monkeypatch)
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3, capturable=True)

    def step():
        if fake.capturing:
            raise RuntimeError("operation not permitted when stream is capturing")

    graphed = GraphedStep(step, optimizer, [], CUDA, name="task x", warmup=1)
    graphed()
    with pytest.raises(RuntimeError, match=r"training\.cuda_graph: capturing the training step of task x failed"):
        graphed()
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the float is put back


def test_graphed_step_audits_its_last_warm_up_before_capturing(monkeypatch):
    """On a GPU the last eager warm-up step is audited: a host read is named before any capture."""
    FakeCudaApi().patch(monkeypatch)
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3, capturable=True)
    counter = torch.zeros(())

    def step():
        counter.add_(1)
        if counter > 100:  # a Python branch on a tensor: fine eagerly, frozen in a graph
            pass

    graphed = GraphedStep(step, optimizer, [], CUDA, name="task z")
    graphed()
    graphed()
    with pytest.raises(ValueError, match=r"training step of task z cannot be captured in a CUDA graph") as err:
        graphed()  # the last of the 3 warm-ups
    assert "test_graphed_step.py:" in str(err.value) and graphed.graph is None and graphed.warmups_done == 2
    # copies between the host and another device are named too (the meta device stands in for a GPU)
    assert "between the host and the device" in " ".join(_audited(lambda: counter.to("meta"), device=CUDA))
    assert _audited(lambda: counter.double(), device=CUDA) == []  # a cast on one device copies nothing across


def test_make_optimizer_capturable_flag():
    model = torch.nn.Linear(2, 2)
    cfg, settings = {"learning_rate": 1e-3, "weight_decay": 0.0}, {"fused_optimizer": False}
    assert make_optimizer(model.parameters(), cfg, settings, capturable=True).param_groups[0]["capturable"]
    assert not make_optimizer(model.parameters(), cfg, settings).param_groups[0]["capturable"]


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------
def test_cuda_graph_is_a_boolean_runtime_key_off_by_default():
    from test_bumps_train import TINY

    config = validate_config(TINY)
    assert config["bumps"]["training"]["cuda_graph"] is False
    assert "cuda_graph" in RUNTIME_KEYS
    bad = copy.deepcopy(TINY)
    bad["bumps"]["training"]["cuda_graph"] = "yes"
    with pytest.raises(ConfigError, match=r"bumps\.training\.cuda_graph: 'yes' is not of type 'boolean'"):
        validate_config(bad)


def test_cuda_graph_leaves_the_fingerprint_alone(tmp_path):
    _, run, _, _ = tiny_run(tmp_path)
    _, run_on, _, _ = tiny_run(tmp_path, cuda_graph=True)
    assert "cuda_graph" not in run["training"]
    assert fingerprint(run_on) == fingerprint(run)

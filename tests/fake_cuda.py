"""A CUDA device on a CPU-only machine, for checking the code paths only a GPU would take.

No GPU runs these tests, so code behind ``device.type == "cuda"`` (autocast's CUDA rules, the
foreach EMA, fused and capturable AdamW, channels-last weights, TF32, the CUDA-graph step) would
otherwise first run on somebody's GPU allocation. :func:`fake_cuda` runs it here on PyTorch's
fake tensors (``torch._subclasses.fake_tensor``): tensors that carry a device, a shape and a dtype
but no data, computed by PyTorch's meta kernels. The CPU wheel can make fake tensors on
``cuda:0``, and an operation that mixes devices fails exactly as on a GPU ("Expected all tensors
to be on the same device"). What a fake tensor cannot show is any number: this checks where
tensors live and what type they have, never what they hold.

Two things the CPU wheel lacks are supplied. CUDA's device guard (which indexing, ``.to("cuda")``
and autograd's graph ask for) is registered by a small C++ library compiled with the system's g++
on first use (:func:`load_cuda_device_guard`: a guard that does nothing, for one device,
``cuda:0``); without a compiler the tests that need it are skipped. And a meta kernel for fused
AdamW with a tensor learning rate (:func:`_meta_kernels`). What the context replaces, all
restored on exit:

- ``torch.cuda.is_available`` and ``torch.cuda.is_bf16_supported`` say yes;
- ``torch.Generator(device="cuda...")`` makes a CPU generator that reports the CUDA device
  (the CPU wheel cannot make CUDA generators); every random operation is checked to draw from a
  generator on its own device, as CUDA's kernels insist;
- ``nn.Module._apply`` (behind ``.to()``, ``.float()``...) puts converted tensors in new
  parameters: the stock one swaps tensors in place, which fake tensors refuse;
- ``Tensor.backward`` gives zero gradients (:class:`_Gradients`);
- safetensors files load as real CPU tensors (the weights on disk are real);
- ``copy.deepcopy`` of a fake tensor gives a fake clone (the stock one copies bytes it has not);
- ``Tensor.tolist`` and ``.numpy()`` of a fake tensor give zeros (the trainer's loss log, a
  sampler's images) and ``.item()`` 1 (step counters), and the stand-ins for
  ``torch.cuda``'s streams and graphs record what GraphedStep does (:class:`FakeCudaApi`);
- TF32 flags are put back as they were;
- t5-scratch's caption pretraining runs at most two steps (on fake tensors with zero gradients
  more steps compute nothing) and, cached per process, is forgotten on exit: its result must not
  reach a later real encoder.

Use the device ``cuda:0``: resolving a bare ``cuda`` needs a real CUDA runtime.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from diffcomp import training
from diffcomp.graphed_step import same_generator
from diffcomp.relational.text import pretraining as caption_pretraining

FAKE_CUDA = torch.device("cuda:0")
_RealGenerator = torch.Generator
_SAFE_OPEN = safetensors.torch.safe_open


_DEVICE_GUARD = """
#include <c10/core/impl/DeviceGuardImplInterface.h>
namespace {
// One CUDA device, cuda:0, that does nothing: what fake tensors on cuda:0 ask of a device guard.
struct FakeCudaGuard final : c10::impl::DeviceGuardImplInterface {
  static constexpr c10::DeviceType kType = c10::DeviceType::CUDA;
  c10::DeviceType type() const override { return kType; }
  c10::Device exchangeDevice(c10::Device) const override { return c10::Device(kType, 0); }
  c10::Device getDevice() const override { return c10::Device(kType, 0); }
  void setDevice(c10::Device) const override {}
  void uncheckedSetDevice(c10::Device) const noexcept override {}
  c10::Stream getStream(c10::Device) const override { return c10::Stream(c10::Stream::DEFAULT, getDevice()); }
  c10::Stream exchangeStream(c10::Stream) const override { return getStream(getDevice()); }
  c10::DeviceIndex deviceCount() const noexcept override { return 1; }
};
FakeCudaGuard guard;
c10::impl::DeviceGuardImplRegistrar registrar(c10::DeviceType::CUDA, &guard);
}  // namespace
"""


@functools.cache
def load_cuda_device_guard() -> str | None:
    """Register a no-op CUDA device guard in this process (once); returns None, or why it could not."""
    if torch.cuda.is_available():
        return "a real CUDA device is present"
    compiler = shutil.which("g++")
    if compiler is None:
        return "no g++ to compile the fake CUDA device guard"
    torch_dir = Path(torch.__file__).parent
    build = Path(tempfile.mkdtemp(prefix="diffcomp-fake-cuda-"))
    (build / "guard.cpp").write_text(_DEVICE_GUARD)
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    command = [compiler, "-shared", "-fPIC", "-std=c++17", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
    command += [f"-I{torch_dir / 'include'}", str(build / "guard.cpp"), f"-L{torch_dir / 'lib'}", "-lc10"]
    command += ["-o", str(build / "guard.so")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"compiling the fake CUDA device guard failed: {result.stderr.strip()[-500:]}"
    ctypes.CDLL(str(build / "guard.so"), mode=ctypes.RTLD_GLOBAL)
    return None


@functools.cache
def _meta_kernels() -> torch.library.Library:
    """Meta kernels PyTorch lacks: fused AdamW with a tensor learning rate (what GraphedStep passes a
    fused optimizer). Like PyTorch's own for a float rate, it updates in place and changes no shape,
    so there is nothing to compute."""
    library = torch.library.Library("aten", "IMPL")
    library.impl("_fused_adamw_.tensor_lr", lambda *args, **kwargs: None, "Meta")
    return library


class FakeCudaApi:
    """Stand-ins for the torch.cuda calls GraphedStep makes, recording them (no GPU here).

    ``torch.cuda.graph(g)`` runs the captured code once (so the step's code runs during the
    capture, as on a GPU); ``replay()`` only counts, since a fake tensor holds nothing to replay on.
    """

    NAMES = ("Stream", "CUDAGraph", "graph", "stream", "device", "current_stream", "synchronize", "get_device_name")
    DEVICE_NAME = "NVIDIA H100 80GB HBM3"  # what the benches look their peak up by

    def __init__(self):
        self.events, self.capturing, self.registered, self.replays = [], False, [], 0
        fake = self

        class Stream:
            def __init__(self, device=None):
                pass

            def wait_stream(self, other):
                fake.events.append("wait")

        class Graph:
            def register_generator_state(self, generator):
                fake.registered.append(generator)

            def replay(self):
                fake.replays += 1

        class Capture:
            def __init__(self, graph):
                pass

            def __enter__(self):
                fake.capturing = True

            def __exit__(self, *exc):
                fake.capturing = False

        self.Stream, self.CUDAGraph, self.graph = Stream, Graph, Capture

    @staticmethod
    def stream(_stream):
        return contextlib.nullcontext()

    @staticmethod
    def device(_device):
        return contextlib.nullcontext()

    def current_stream(self, _device=None):
        return self.Stream()

    def synchronize(self, _device=None):
        self.events.append("sync")

    def get_device_name(self, _device=None):
        return self.DEVICE_NAME

    def patch(self, monkeypatch) -> FakeCudaApi:
        """Put the stand-ins into ``torch.cuda`` (``monkeypatch``: pytest's fixture, or anything with
        its ``setattr``); returns this object."""
        for name in self.NAMES:
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        return self


class _Generators:
    """CPU generators standing in for CUDA ones, and which device each stands for."""

    def __init__(self):
        self.made: list[torch.Generator] = []
        registry = self

        class Generator(_RealGenerator):
            def __new__(cls, device="cpu"):
                generator = super().__new__(cls)
                generator._device = torch.device(device)
                registry.made.append(generator)
                return generator

            def __init__(self, device="cpu"):
                pass

            @property
            def device(self):
                return self._device

        self.Generator = Generator

    def device_of(self, generator: torch.Generator) -> torch.device:
        """The device ``generator`` stands for (in a dispatched call it is a new Python object for
        the C++ generator: diffcomp.graphed_step.same_generator tells which)."""
        for made in self.made:
            if same_generator(generator, made):
                return made.device
        return generator.device  # not one of ours: torch's own (a CPU generator)


class _GeneratorDeviceCheck(TorchDispatchMode):
    """Random operations must draw from a generator on their own device (CUDA raises otherwise);
    a host read of a fake tensor (``.item()``, e.g. the EMA's step counter in a checkpoint) gives 1."""

    def __init__(self, generators: _Generators):
        super().__init__()
        self.generators = generators

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default and isinstance(args[0], FakeTensor):
            # a host read (.item()) of a fake tensor: 1 (AdamW divides by 1 - beta ** step), False for a flag
            return False if args[0].dtype == torch.bool else 1
        out = func(*args, **kwargs)
        generator = kwargs.get("generator")
        if generator is not None:
            wanted = self.generators.device_of(generator).type
            devices = {t.device.type for t in tree_leaves(out) if isinstance(t, torch.Tensor)}
            if devices and devices != {wanted}:
                raise RuntimeError(
                    f"{func}: draws from a generator on {wanted} into a tensor on {', '.join(sorted(devices))}"
                )
        return out


def _apply_into_new_parameters(self, fn, recurse=True):
    """``nn.Module._apply`` that stores ``fn``'s results as new parameters and buffers (tied
    parameters stay tied); fake tensors cannot be swapped in place as the stock method does."""
    converted: dict[int, torch.Tensor] = {}
    for module in self.modules() if recurse else [self]:
        for key, parameter in module._parameters.items():
            if parameter is not None:
                if id(parameter) not in converted:
                    with torch.no_grad():
                        applied = fn(parameter)
                    converted[id(parameter)] = torch.nn.Parameter(applied, requires_grad=parameter.requires_grad)
                module._parameters[key] = converted[id(parameter)]
        for key, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[key] = fn(buffer)
    return self


def _deepcopy(self, memo):
    """``copy.deepcopy`` of a fake tensor: a fake clone. (The stock method copies the storage's
    bytes, which a fake tensor does not have: it corrupts the heap. EMAModel.load_state_dict
    deep-copies the state it loads.)"""
    if id(self) not in memo:
        with torch.no_grad():
            memo[id(self)] = self.clone().requires_grad_(self.requires_grad)
    return memo[id(self)]


class _RealSafeOpen:
    """``safetensors.safe_open`` that reads real tensors inside the fake context: files on disk hold
    real weights, loaded onto the CPU as a GPU job loads them, then copied to the device."""

    def __init__(self, *args, **kwargs):
        with unset_fake_temporarily():
            self.file = _SAFE_OPEN(*args, **kwargs)

    def __enter__(self):
        with unset_fake_temporarily():
            self.file.__enter__()
        return self

    def __exit__(self, *exc):
        return self.file.__exit__(*exc)

    def __getattr__(self, name):
        method = getattr(self.file, name)

        def real(*args, **kwargs):
            with unset_fake_temporarily():
                return method(*args, **kwargs)

        return real


def _zeros_list(self):
    return np.zeros(self.shape).tolist()


_NUMPY_TYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}
_NUMPY_TYPES |= {torch.int64: np.int64, torch.int32: np.int32, torch.uint8: np.uint8, torch.bool: np.bool_}


def _zeros_array(self, *, force=False):
    if self.device.type != "cpu":  # as for a real tensor: .cpu() first
        raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() first.")
    return np.zeros(self.shape, _NUMPY_TYPES[self.dtype])


class _Gradients:
    """``loss.backward()`` without autograd: every parameter an optimizer made in the context trains
    gets a zero gradient of its own type, device and layout.

    The forward pass records its graph as usual, but autograd's engine cannot run it on fake CUDA
    tensors in the CPU wheel ("Cannot access accelerator device when none is available"), so this
    stands in for the backward pass. Backward kernels are derived from the forward's, so the
    devices and types they would see are the forward's, which is what is checked.
    """

    def __init__(self):
        self.optimizers: list[torch.optim.Optimizer] = []
        real_init = torch.optim.Optimizer.__init__
        gradients = self

        def init(optimizer, *args, **kwargs):
            real_init(optimizer, *args, **kwargs)
            gradients.optimizers.append(optimizer)

        self.optimizer_init = init

    def backward(self, *_args, **_kwargs):
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    if parameter.requires_grad:
                        parameter.grad = torch.zeros_like(parameter)


_real_pretraining_state = caption_pretraining._pretraining_state


def _two_pretraining_steps(config, tokenizer, nouns, roles, seed, steps):
    """t5-scratch's caption pretraining for at most two steps: on fake tensors with zero gradients it
    computes nothing, and its 400 steps of the quick config took minutes of dispatch."""
    return _real_pretraining_state(config, tokenizer, nouns, roles, seed, min(steps, 2))


@contextlib.contextmanager
def fake_cuda():
    """Run the body with fake tensors on ``cuda:0`` (see the module's docstring); yields the
    :class:`FakeCudaApi` that GraphedStep's torch.cuda calls go to."""
    problem = load_cuda_device_guard()
    if problem is not None:
        raise RuntimeError(f"fake_cuda: {problem}")
    _meta_kernels()
    api, generators, gradients = FakeCudaApi(), _Generators(), _Gradients()
    with contextlib.ExitStack() as stack:
        stack.callback(caption_pretraining._cached_pretraining_state.cache_clear)
        stack.enter_context(mock.patch.object(caption_pretraining, "_pretraining_state", _two_pretraining_steps))
        stack.enter_context(training.preserved_tf32())
        stack.enter_context(mock.patch.object(torch.cuda, "is_available", lambda: True))
        stack.enter_context(mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: True))
        stack.enter_context(mock.patch.object(torch, "Generator", generators.Generator))
        stack.enter_context(mock.patch.object(torch.nn.Module, "_apply", _apply_into_new_parameters))
        stack.enter_context(mock.patch.object(safetensors.torch, "safe_open", _RealSafeOpen))
        stack.enter_context(mock.patch.object(FakeTensor, "__deepcopy__", _deepcopy, create=True))
        stack.enter_context(mock.patch.object(FakeTensor, "tolist", _zeros_list, create=True))
        stack.enter_context(mock.patch.object(FakeTensor, "numpy", _zeros_array, create=True))
        stack.enter_context(mock.patch.object(torch.optim.Optimizer, "__init__", gradients.optimizer_init))
        stack.enter_context(mock.patch.object(torch.Tensor, "backward", gradients.backward))
        api.patch(stack.enter_context(pytest.MonkeyPatch.context()))
        stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        stack.enter_context(_GeneratorDeviceCheck(generators))
        yield api


def _loaded(value):
    """``value`` as ``torch.load(map_location="cpu")`` returns it: a new CPU tensor of its type and
    shape (fake for a fake one: a real one could not move to the fake device; real for a real one,
    e.g. a generator's state), anything else as it is."""
    if isinstance(value, FakeTensor):
        return torch.zeros(value.shape, dtype=value.dtype)
    if isinstance(value, torch.Tensor):
        with unset_fake_temporarily():
            return value.clone()
    return value


class MemoryCheckpoints:
    """The trainer's resume states and snapshots (diffcomp.training) kept in memory, as handed over
    (a fake tensor holds nothing to write); a resume gets the newest state of its fingerprint with
    its tensors on the CPU, as ``torch.load(map_location="cpu")`` gives it."""

    def __init__(self, monkeypatch):
        self.states: dict[int, dict] = {}  # by step, of every run (the tests' runs differ in steps)
        self.snapshots: dict[int, dict] = {}
        self._by_folder: dict[str, dict[int, dict]] = {}
        monkeypatch.setattr(training, "save_state", self.save_state)
        monkeypatch.setattr(training, "save_snapshot", self.save_snapshot)
        monkeypatch.setattr(training, "load_latest_state", self.load_latest_state)

    def save_state(self, state_dir, state, keep):
        self.states[state["step"]] = state
        self._by_folder.setdefault(str(state_dir), {})[state["step"]] = state

    def save_snapshot(self, state_dir, step, weights):
        """Kept as handed over; on disk, zeros of their types and shapes, so that sampling can load them."""
        self.snapshots[step] = weights
        path = training._snapshot_path(state_dir, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        with unset_fake_temporarily():
            save_file({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in weights.items()}, str(path))

    def load_latest_state(self, state_dir, expected_fingerprint):
        saved = self._by_folder.get(str(state_dir), {})
        ours = [step for step, state in saved.items() if state["fingerprint"] == expected_fingerprint]
        return tree_map(_loaded, saved[max(ours)]) if ours else None


def devices(tree) -> set[str]:
    """The devices of the tensors in ``tree`` (nested dicts, lists, tuples)."""
    return {str(t.device) for t in tree_leaves(tree) if isinstance(t, torch.Tensor)}

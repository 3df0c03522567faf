"""What one training step of an NDM prior costs: wall time and peak memory, several models side by side.

A step is forward + backward + optimizer step of the loss the trainer minimises (`latent_step`: the NDM stage's
`NDMTrainingLoss` on a `LatentModel`, a learned noise scale included; `prior_step`: an NDM prior's objective on latents
z (B, C, H, W), for a benchmark without a VAE). Timings alternate
between the models (step 1 of every model, then step 2 of every model, ...) so that all see the same machine state.
Peak memory: on CUDA the `max_memory_allocated` of the step, net of every other model's tensors (so models may
share one process); on CPU, where no allocator statistics exist, the bytes of the distinct tensors autograd saves
for backward in one step (the activation memory). FLOPs (`step_flops`): those of forward + backward on one batch, as
`torch.utils.flop_counter` counts them (matrix products and convolutions, forward-mode tangents included). Where the
time goes (`profile_parts`): torch.profiler's record_function ranges around the loss, the backward pass, the optimizer
and named calls inside the loss (the denoiser, F at x, F at x_hat), the calls wrapped only while the profile runs.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function, schedule
from torch.utils.flop_counter import FlopCounterMode

from latent_ndm.model import LatentModel, NDMPrior
from latent_ndm.model.latent import Batch, ndm_parameters
from latent_ndm.progress import progress
from latent_ndm.training.ndm_loss import NDMTrainingLoss

CPU_MEMORY = "saved activations (CPU)"
CUDA_MEMORY = "peak allocated (CUDA)"


@dataclass
class TrainStep:
    """One model's training step: `loss()` the scalar minimised, an `optimizer` over `params`, and `inputs`, the
    batch tensors it trains on (counted as resident memory)."""

    loss: Callable[[], torch.Tensor]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    inputs: list[torch.Tensor]

    def __call__(self) -> None:
        self.forward_backward()
        self.optimizer.step()

    def forward_backward(self) -> None:
        """The loss and its gradients (fresh: the previous ones are dropped first)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.loss().backward()

    def resident_bytes(self) -> int:
        """Parameters, optimizer state and inputs: what stays allocated between steps (gradients excluded)."""
        params = {id(p): p for p in self.params}
        state = [t for s in self.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        return sum(t.numel() * t.element_size() for t in [*params.values(), *state, *self.inputs])


def latent_step(model: LatentModel, batch: Batch, optimizer: torch.optim.Optimizer, num_dims: int,
                mode: str = "disjoint", seed: int = 0) -> TrainStep:
    """The step `stage=ndm` takes: `NDMTrainingLoss(mode, num_dims)` (D = `num_dims` image dimensions) of `model` on
    `batch` (images, or pre-encoded {"mean", "logvar"} latents), its noise drawn from a generator seeded by `seed` at
    every call; `optimizer` over the NDM prior's parameters (and the VAE's in joint mode)."""
    loss = NDMTrainingLoss(mode, num_dims)
    inputs = list(batch.values()) if isinstance(batch, Mapping) else [batch]
    device = inputs[0].device
    params = [p for part in ndm_parameters(model).values() for p in part]
    if mode == "joint":
        params += list(model.vae.parameters())

    def run() -> torch.Tensor:
        return loss(model, batch, torch.Generator(device=device).manual_seed(seed)).loss

    return TrainStep(run, params, optimizer, inputs)


def prior_step(prior: NDMPrior, z: torch.Tensor, optimizer: torch.optim.Optimizer) -> TrainStep:
    """An NDM prior's training objective (its forward process whole: F and a learned noise scale) on normalised
    latents z, mean over the batch: the step of a benchmark that has no VAE."""
    return TrainStep(lambda: prior.objective_terms(z).total.mean(), list(prior.parameters()), optimizer, [z])


@dataclass
class StepCost:
    """Median step time (s), every timed step (s), peak memory (MiB) and what that memory is (`memory_kind`)."""

    median_s: float
    times_s: list[float]
    memory_mib: float
    memory_kind: str


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(steps: Mapping[str, Callable[[], None]], repeats: int, warmup: int = 1,
                     device: torch.device | str = "cpu", show: bool = True) -> dict[str, list[float]]:
    """Seconds of each of `repeats` calls of every step (after `warmup` untimed rounds), the models interleaved
    (`show`: progress over the calls)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    with progress(total=(warmup + repeats) * len(steps), desc="step cost", unit="steps", enabled=show) as bar:
        for i in range(warmup + repeats):
            for name, step in steps.items():
                sync(device)
                start = time.perf_counter()
                step()
                sync(device)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
                bar.update(1)
    return times


def saved_activation_bytes(step: Callable[[], None]) -> int:
    """Bytes of the distinct storages autograd saves for backward during one call of `step`."""
    saved: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:  # distinct storages, so views of one tensor count once
            storage = t.untyped_storage()
            saved[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # wrapper tensors (forward-mode duals) have no plain storage
            saved[("tensor", id(t))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(saved.values())


def cuda_peak_bytes(step: Callable[[], None], device: torch.device | str, resident_bytes: int = 0,
                    repeats: int = 3, release: Iterable[torch.optim.Optimizer] = ()) -> int:
    """`max_memory_allocated` over `repeats` calls of `step`, counting only what the step adds to what was allocated
    before it, plus `resident_bytes` (the model's own parameters and optimizer state). `release`: optimizers whose
    gradients are freed first, so that they are not counted as already allocated."""
    for optimizer in release:
        optimizer.zero_grad(set_to_none=True)
    gc.collect()
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    for _ in range(repeats):
        step()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - before + resident_bytes


def measure_memory(step: TrainStep, device: torch.device | str) -> tuple[float, str]:
    """(peak memory of one model's step in MiB, its kind: CUDA_MEMORY or CPU_MEMORY)."""
    if torch.device(device).type == "cuda":
        peak = cuda_peak_bytes(step, device, step.resident_bytes(), release=[step.optimizer])
        return peak / 2**20, CUDA_MEMORY
    return saved_activation_bytes(step) / 2**20, CPU_MEMORY


def step_costs(steps: Mapping[str, TrainStep], repeats: int, warmup: int = 1,
               device: torch.device | str = "cpu", show: bool = True) -> dict[str, StepCost]:
    """Step time (alternating, in one process) and peak memory of every model (`show`: progress of the timing)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    times = time_alternating(steps, repeats, warmup, device, show)
    out = {}
    for name, step in steps.items():
        memory, kind = measure_memory(step, device)
        out[name] = StepCost(statistics.median(times[name]), times[name], memory, kind)
    return out


def step_flops(step: TrainStep) -> int:
    """Floating-point operations of one training step's forward + backward on its batch, as
    `torch.utils.flop_counter.FlopCounterMode` counts them: a (b, m) x (m, n) product is 2 b m n, its backward 2 b m n
    for the weight's gradient and 2 b m n more for the input's when the input needs one; convolutions and attention
    likewise; the jvp of F (forward-mode tangents) and activation checkpointing's recomputation are executed, so
    counted. Elementwise work (activations, norms, the optimizer's update) is not counted. The gradients are dropped
    after, the weights untouched."""
    with FlopCounterMode(display=False) as counter:
        step.forward_backward()
    step.optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def interquartile(values: Sequence[float]) -> tuple[float, float]:
    """(first quartile, third quartile) of `values` (`statistics.quantiles`, inclusive method; one value: itself)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


@dataclass
class CallRanges:
    """Named calls inside a step: while `wrapped()` is open, every call of `getattr(obj, attr)` for (obj, attr) in
    `targets` runs in a record_function range; the k-th such call since `reset()` (k = 0, 1, ...) is named
    labels[min(k, len(labels) - 1)] (e.g. ["F at x", "F at x_hat"]: the process's first call evaluates F at x, the
    later ones at x_hat). On CUDA the range waits for the call's kernels, so that it holds their time."""

    targets: Sequence[tuple[object, str]]
    labels: Sequence[str]
    calls: int = 0

    def reset(self) -> None:
        self.calls = 0

    def _wrap(self, method: Callable[..., object], device: torch.device | str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            name = self.labels[min(self.calls, len(self.labels) - 1)]
            self.calls += 1
            with record_function(name):
                out = method(*args, **kwargs)
                sync(device)
            return out
        return call

    @contextlib.contextmanager
    def wrapped(self, device: torch.device | str = "cpu") -> Iterator[None]:
        """The targets wrapped (as instance attributes, removed on exit: the objects are left as they were)."""
        own = [(obj, attr, vars(obj).get(attr)) for obj, attr in self.targets]  # an instance attribute already there
        for obj, attr in self.targets:
            setattr(obj, attr, self._wrap(getattr(obj, attr), device))
        try:
            yield
        finally:
            for obj, attr, before in own:
                if before is None:
                    delattr(obj, attr)
                else:
                    setattr(obj, attr, before)


STEP_RANGES = ("loss", "backward", "optimizer")


def profile_parts(step: TrainStep, ranges: Sequence[CallRanges], repeats: int = 3, device: torch.device | str = "cpu",
                  context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
                  ) -> dict[str, float]:
    """Mean seconds per step of each part of `repeats` steps (after one more, profiled but not recorded: the
    profiler's own start-up), from torch.profiler's record_function ranges (CPU wall time; on CUDA each range waits
    for its kernels): every label of `ranges` (calls inside the loss), "loss
    (rest)" (the loss's time outside them: the objective's own arithmetic), "backward", "optimizer" (zero_grad and
    step) and "total" (their sum). `context`: entered around the loss (an autocast). Numbers the step computes are
    unchanged; the profiler's own overhead is in every part."""
    if repeats < 1:
        raise ValueError(f"profile_parts needs repeats >= 1, got {repeats}")
    with contextlib.ExitStack() as stack:
        for r in ranges:
            stack.enter_context(r.wrapped(device))
        plan = schedule(wait=0, warmup=1, active=repeats, repeat=1)
        with profile(activities=[ProfilerActivity.CPU], schedule=plan) as prof:
            for _ in range(repeats + 1):
                for r in ranges:
                    r.reset()
                with record_function("optimizer"):
                    step.optimizer.zero_grad(set_to_none=True)
                with record_function("loss"), context():
                    loss = step.loss()
                    sync(device)
                with record_function("backward"):
                    loss.backward()
                    sync(device)
                with record_function("optimizer"):
                    step.optimizer.step()
                    sync(device)
                prof.step()
    labels = list(dict.fromkeys(label for r in ranges for label in r.labels))
    seconds = {name: 0.0 for name in [*labels, *STEP_RANGES]}
    for event in prof.key_averages():
        if event.key in seconds:
            seconds[event.key] += event.cpu_time_total / 1e6 / repeats
    parts = {label: seconds[label] for label in labels}
    parts["loss (rest)"] = seconds["loss"] - sum(parts.values())
    parts.update(backward=seconds["backward"], optimizer=seconds["optimizer"])
    parts["total"] = seconds["loss"] + seconds["backward"] + seconds["optimizer"]
    return parts

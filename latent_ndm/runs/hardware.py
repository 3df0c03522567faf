"""The hardware of a run: accelerator and precision selection (bf16-mixed on GPUs that support it, 16-mixed on older
GPUs, fp32 on CPU), CPU threads, TF32, and a one-line description for reports."""

from __future__ import annotations

import os
import platform

import torch


def select_accelerator(accelerator: str) -> str:
    """'auto' -> 'gpu' when CUDA is available, else 'cpu'; anything else is returned unchanged."""
    if accelerator != "auto":
        return accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def select_precision(precision: str | int, accelerator: str) -> str:
    """'auto' -> 'bf16-mixed' (CUDA with bf16), '16-mixed' (older CUDA GPUs) or '32-true' (CPU)."""
    if str(precision) != "auto":
        return str(precision)
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def configure_backends(accelerator: str) -> None:
    """Once per run, before the trainer is built: TF32 matmuls on GPUs (the fp32 parts of a mixed-precision run)."""
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a container's cpuset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # platforms without sched_getaffinity
        return os.cpu_count() or 2


def auto_cpu_threads(cores: int) -> int:
    """cpu_threads=auto: half the usable cores, at least 1 and at most 8 (1 on a 2-core machine)."""
    return max(1, min(8, cores // 2))


def configure_cpu_threads(threads: int | str | None, accelerator: str) -> int:
    """Intra-op threads of CPU runs: 'auto' = half the usable cores (`auto_cpu_threads`), which avoids OpenMP
    threads spin-waiting on each other when the machine is shared; None keeps torch's default. The thread count
    sets the order of float32 sums in the kernels, so a run repeats to the last digit only with the same count (and
    the same CPU kernels: README, "How far the numbers repeat"). GPU runs are left alone. Returns the number of
    threads in use."""
    if accelerator != "cpu" or threads is None:
        return torch.get_num_threads()
    n = auto_cpu_threads(usable_cores()) if threads == "auto" else int(threads)
    torch.set_num_threads(n)
    return n


def describe(device: torch.device, world: int = 1) -> str:
    """e.g. '1x NVIDIA H100 80GB HBM3' or 'CPU (1 threads, x86_64)'."""
    if device.type == "cuda":
        return f"{world}x {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads, {platform.machine()})" + (f" x{world}" if world > 1 else "")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)

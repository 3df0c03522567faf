"""CPU threads of a run: cpu_threads=auto counts the cores the process may use (its affinity), not the host's."""

from __future__ import annotations

import os

import pytest
import torch

from latent_ndm.runs import hardware


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 2), (16, 8), (64, 8)])
def test_auto_threads_are_half_the_usable_cores_between_1_and_8(cores: int, threads: int) -> None:
    assert hardware.auto_cpu_threads(cores) == threads


def test_auto_follows_the_affinity_not_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `taskset -c 0` (or a 2-CPU cpuset on a 64-core host) auto must give 1 thread, whatever cpu_count says."""
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    try:
        assert hardware.usable_cores() == 2
        assert hardware.configure_cpu_threads("auto", "cpu") == 1 == torch.get_num_threads()
        assert hardware.configure_cpu_threads(3, "cpu") == 3 == torch.get_num_threads()
        assert hardware.configure_cpu_threads(None, "cpu") == 3  # None keeps what is set
    finally:
        torch.set_num_threads(before)

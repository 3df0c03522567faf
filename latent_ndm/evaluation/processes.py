"""Processes for evaluation: one, or N GPUs / nodes through Lightning Fabric (torchrun and SLURM are detected).

Every reduction is a sum over processes of float64 tensors; FID moments are gathered and merged exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric import Fabric

from latent_ndm.evaluation.fid import RunningMoments
from latent_ndm.runs.hardware import select_accelerator


class Processes:
    """rank, world size and device of this process; `sum` and `merge_moments` across all processes."""

    def __init__(self, accelerator: str = "auto", devices: int | str = 1, num_nodes: int = 1) -> None:
        accelerator = select_accelerator(accelerator)
        multi = num_nodes > 1 or (devices not in (1, "1") and not (accelerator == "cpu" and devices == "auto"))
        self.fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                             strategy="ddp" if multi else "auto")
        self.fabric.launch()
        self.rank, self.world = self.fabric.global_rank, self.fabric.world_size
        self.device = self.fabric.device

    def close(self) -> None:
        """End a multi-process group cleanly: wait for every process, then tear the group down together, so that no
        process exits while another still talks to it (gloo aborts a process whose peer vanished mid-teardown)."""
        if self.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            self.fabric.barrier()
            torch.distributed.destroy_process_group()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        return self.fabric.all_reduce(t.to(self.device), reduce_op="sum").cpu()

    def merge_moments(self, moments: RunningMoments) -> RunningMoments:
        """The moments of every process's features together."""
        if self.world == 1:
            return moments
        if moments.mean is None or moments.m2 is None:
            raise ValueError("a process generated no FID samples; use num >= the number of processes")
        parts: Any = self.fabric.all_gather({"n": torch.tensor(float(moments.n), dtype=torch.float64),
                                             "mean": moments.mean, "m2": moments.m2})
        merged = RunningMoments()
        for r in range(self.world):
            merged.merge(int(parts["n"][r].item()), parts["mean"][r].double().cpu(), parts["m2"][r].double().cpu())
        return merged

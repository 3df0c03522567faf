"""An out-of-memory during training, said in one sentence: the step, the batch size per device, the memory the failed
allocation asked for, and the switches of this toolkit that lower the memory of a step."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

ASKED = re.compile(r"[Tt]ried to allocate ([0-9.]+ ?[KMGT]i?B)")


def memory_switches(cfg: DictConfig) -> list[str]:
    """Overrides that lower the memory of a training step, among those the config does not already use."""
    switches = []
    batch, accumulate = int(cfg.data.batch_size), int(cfg.trainer.get("accumulate_grad_batches") or 1)
    if batch > 1:
        switches.append(f"data.batch_size={batch // 2} trainer.accumulate_grad_batches={accumulate * 2} (the same "
                        "effective batch)")
    ndm = cfg.get("ndm")
    if cfg.stage.name == "ndm" and ndm is not None and not ndm.denoiser.get("checkpointing", False):
        switches.append("ndm.denoiser.checkpointing=true (activation checkpointing of the U-Nets)")
    if str(cfg.trainer.get("precision")) in ("32-true", "32"):
        switches.append("trainer.precision=bf16-mixed")
    return switches


def out_of_memory_message(err: BaseException, cfg: DictConfig, step: Any) -> str:
    """The one sentence for an out-of-memory error `err` raised at optimizer step `step` of the run `cfg`."""
    found = ASKED.search(str(err))
    asked = f", asking for {found.group(1)}" if found else ""
    switches = memory_switches(cfg)
    fix = "; to fit, try " + ", or ".join(switches) if switches else "; use a device with more memory"
    last = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    kept = f"{last} is kept (a rerun resumes from it)" if last.is_file() else "no checkpoint was written yet"
    batch = int(cfg.data.batch_size)
    return f"out of memory at step {step} with data.batch_size={batch} per device{asked}{fix}; {kept}"

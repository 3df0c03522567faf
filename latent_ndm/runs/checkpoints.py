"""The resume points of a run: `<run>/checkpoints/last.ckpt` and the one before it, `previous.ckpt`.

Writing (`save_checkpoint`): the checkpoint is serialised into a temporary file of its own beside them
(`.last.ckpt.<random>.tmp`) and flushed to disk; only then is the old `last.ckpt` renamed to `previous.ckpt` and the
new file renamed into place (`data_tools.files.atomic_write`). A write that fails or is killed leaves both older
files as they were; a full disk stops with one sentence naming the folder and the bytes needed (torch's writer turns
the operating system's "no space left" into an opaque RuntimeError; the file below keeps the original error).

Reading (`find_resume_point`): the newest intact one of `last.ckpt`, `previous.ckpt` and a SLURM requeue's
`hpc_ckpt_<n>.ckpt`; each one that does not load is reported with its cause and moved aside to `<name>.damaged` (so
that the next save does not keep it as `previous.ckpt`), and a damaged latest checkpoint falls back to the one
before it.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from data_tools.files import atomic_write
from latent_ndm.runs.export import LAST_CKPT, UnsafeFileError, read_checkpoint

PREVIOUS_CKPT = "previous.ckpt"
DAMAGED_SUFFIX = ".damaged"
log = logging.getLogger(__name__)


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in a nested checkpoint (a lower bound on its file size)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


class _WriteErrors(io.RawIOBase):
    """A writable file that remembers the first OSError its writes raised (torch.save reports it as a RuntimeError
    "unexpected pos ..." without the cause)."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self.file, self.error = file, None

    @property
    def name(self) -> str:
        return self.file.name

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.file.flush()


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write `checkpoint` to `path` atomically; a `last.ckpt` being replaced is kept as `previous.ckpt`."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a Python file object, so that a full disk raises OSError(ENOSPC)
            out = _WriteErrors(f)
            try:
                torch.save(checkpoint, out)
                out.flush()
            except RuntimeError as err:
                if out.error is not None:
                    raise out.error from err
                raise

    previous = path.with_name(PREVIOUS_CKPT) if path.name == LAST_CKPT else None
    return atomic_write(path, write, previous=previous, size_hint=tensor_bytes(checkpoint))


def _cause(err: BaseException) -> str:
    """The first sentence of an error, on one line."""
    text = " ".join(str(err).split()) or type(err).__name__
    text = text.split(". ")[0]
    return text if len(text) <= 160 else text[:157] + "..."


@dataclass
class ResumePoint:
    """The checkpoint to resume from (None: none found), its contents, and the damaged files passed over."""

    path: Path | None
    checkpoint: dict[str, Any] | None
    damaged: list[tuple[Path, str]] = field(default_factory=list)


def find_resume_point(ckpt_dir: Path, requeue_dir: Path | None = None) -> ResumePoint:
    """The newest intact checkpoint of a run, by training step: `last.ckpt`, `previous.ckpt`, and the
    `hpc_ckpt_<n>.ckpt` that Lightning writes into `requeue_dir` (the run folder) when SLURM preempts and requeues a
    job. Each damaged one is logged in one line (file, cause), listed, and moved aside to `<name>.damaged`. One that
holds Python objects besides tensors (`UnsafeFileError`) is not loaded and not passed over: it is raised."""
    candidates = [ckpt_dir / LAST_CKPT, ckpt_dir / PREVIOUS_CKPT]
    candidates += requeue_checkpoints(requeue_dir) if requeue_dir is not None else []
    damaged: list[tuple[Path, str]] = []
    best: tuple[Path, dict[str, Any]] | None = None
    for path in candidates:
        if not path.is_file():
            continue
        try:
            checkpoint = read_checkpoint(path)
        except UnsafeFileError:
            raise  # not damage: a file that holds code stops the run, it is not passed over
        except Exception as err:  # noqa: BLE001 - a damaged file may fail in many ways; each is reported alike
            damaged.append((path, _cause(err)))
            log.warning("the checkpoint %s does not load (%s); it is kept aside as %s", path, _cause(err),
                        path.name + DAMAGED_SUFFIX)
            _move_aside(path, DAMAGED_SUFFIX)
            continue
        if best is None or int(checkpoint.get("global_step", -1)) > int(best[1].get("global_step", -1)):
            best = (path, checkpoint)
    if best is None:
        return ResumePoint(None, None, damaged)
    if damaged:
        log.warning("resuming from %s (step %s) instead of the damaged %s", best[0], best[1].get("global_step"),
                    ", ".join(p.name for p, _ in damaged))
    return ResumePoint(best[0], best[1], damaged)


def requeue_checkpoints(run_dir: Path) -> list[Path]:
    """The `hpc_ckpt_<n>.ckpt` files Lightning's SLURM auto-requeue wrote into a run folder, oldest first."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("hpc_ckpt_*.ckpt")
             if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))]
    return [p for _, p in sorted(found)]


def set_aside_requeue_checkpoints(run_dir: Path) -> list[Path]:
    """Rename SLURM requeue checkpoints to `<name>.unused`, so that a run started over does not pick them up."""
    moved = requeue_checkpoints(run_dir)
    for path in moved:
        _move_aside(path, ".unused")
        log.warning("starting over: the requeue checkpoint %s is kept aside as %s.unused", path, path.name)
    return moved


def _move_aside(path: Path, suffix: str) -> None:
    """`path` -> `<path><suffix>` (another process of the run may have moved it already)."""
    try:
        os.replace(path, path.with_name(path.name + suffix))
    except FileNotFoundError:
        pass

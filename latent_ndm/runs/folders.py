"""Run folders: where a run lives, its one writer, its record of how it was started, and the throwaway folder of a
smoke test.

A run folder is written only once the run really starts (its checkpoint, if any, accepted): `.hydra/config.yaml` (the
composed config) and `.hydra/overrides.yaml` (the command line's overrides) then describe what is in it, and
`train.log` collects the run's log. A start that fails leaves nothing behind; `trainer.fast_dev_run` never touches a
run folder at all: it trains in a fresh folder of the system's temporary folder.

A run folder has one writer: the training process holds the lock `<run>/.lock` (`data_tools.locks.sole_writer`)
from before it looks for a checkpoint until it ends, and a second process on the same folder stops at once in one
line naming the holder's pid. A run's name is a relative folder name (`check_run_name`): it never reaches outside
`runs/<stage>/`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from data_tools.files import atomic_write_text, remove_temporaries
from data_tools.locks import sole_writer
from latent_ndm.errors import TrainingError
from latent_ndm.runs.export import CHECKPOINT_DIR, EXPORT_DIR, NDM_VAE_DIR

RECORD_DIR = ".hydra"
LOG_NAME = "train.log"
LOCK_NAME = ".lock"
NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,=+-]*")
log = logging.getLogger(__name__)


def check_run_name(name: object, key: str = "name") -> str:
    """`name` when it is a relative folder name (parts of letters, digits and ``_ . , = + -`` separated by ``/``,
    each starting with a letter or digit: no ``..``, no absolute path); else a one-sentence TrainingError."""
    text = str(name)
    if not all(NAME_PART.fullmatch(part) for part in text.split("/")):
        raise TrainingError(f"{key}={text!r} is not a run name: a run name is a folder under runs/<stage>/, made of "
                            "letters, digits and _ . , = + - (sub-folders separated by /), each part starting with a "
                            "letter or digit; no '..' and no absolute path (to put a run elsewhere, give run_dir=)")
    return text


def is_main_process() -> bool:
    """Rank 0 of a torchrun/SLURM launch, or a single process."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def use_throwaway_folder(cfg: DictConfig) -> Path | None:
    """With `trainer.fast_dev_run`, point `cfg.run_dir` at a new, empty folder of the system's temporary folder
    (`tempfile.mkdtemp`: nothing that exists is emptied or reused) and never resume; the run folder itself is not
    touched. None otherwise."""
    if not cfg.trainer.get("fast_dev_run"):
        return None
    folder = Path(tempfile.mkdtemp(prefix=f"latent-ndm-fast-dev-run-{cfg.stage.name}-"))
    log.info("fast_dev_run: a throwaway run in %s; %s is not touched", folder, cfg.run_dir)
    with open_dict(cfg):
        cfg.run_dir, cfg.resume = str(folder), "never"
    return folder


def is_launching_process() -> bool:
    """The process that owns a run: rank 0, and not a process Lightning launched for another local device."""
    return is_main_process() and int(os.environ.get("LOCAL_RANK", "0")) == 0


@contextmanager
def sole_writer_of_run(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock while the block runs (the launching process only; the other processes of a
    distributed run are its own). Stale temporary files of a killed writer are removed from the folders training
    writes, now that no other process can be writing them."""
    if not is_launching_process():
        yield
        return
    with sole_writer(run_dir / LOCK_NAME, f"the run folder {run_dir}",
                     "wait for that run to end, or give this one another name=<run name>"):
        for folder in (run_dir / CHECKPOINT_DIR, run_dir / EXPORT_DIR, run_dir / EXPORT_DIR / NDM_VAE_DIR,
                       run_dir / RECORD_DIR):
            if folder.is_dir():
                remove_temporaries(folder)
        yield


def record_run(run_dir: Path, cfg: DictConfig, overrides: Sequence[str]) -> Path:
    """`<run_dir>/.hydra/config.yaml` and `overrides.yaml`, written when the run really starts (rank 0)."""
    record = run_dir / RECORD_DIR
    if is_main_process():
        atomic_write_text(record / "config.yaml", OmegaConf.to_yaml(cfg))
        atomic_write_text(record / "overrides.yaml", yaml.safe_dump(list(overrides)))
    return record


LOGGERS = ("", "lightning.pytorch", "lightning.fabric")  # the root, and Lightning's (which do not propagate)


@contextmanager
def run_log(run_dir: Path) -> Iterator[Path]:
    """Everything logged while the run trains (ours and Lightning's) also goes to `<run_dir>/train.log` (appended;
    rank 0)."""
    path = run_dir / LOG_NAME
    if not is_main_process():
        yield path
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    loggers = [logging.getLogger(name) for name in LOGGERS]
    attached = [lg for lg in loggers if lg is logging.getLogger() or not lg.propagate]
    for lg in attached:
        lg.addHandler(handler)
    try:
        yield path
    finally:
        for lg in attached:
            lg.removeHandler(handler)
        handler.close()


def remove_if_empty(folder: Path) -> None:
    """Remove `folder` when nothing was written into it (a start that failed)."""
    try:
        folder.rmdir()
    except OSError:
        pass

"""Run folders: where a run lives, its record of how it was started, and the throwaway folder of a smoke test.

A run folder is written only once the run really starts (its checkpoint, if any, accepted): `.hydra/config.yaml` (the
composed config) and `.hydra/overrides.yaml` (the command line's overrides) then describe what is in it, and
`train.log` collects the run's log. A start that fails leaves nothing behind; `trainer.fast_dev_run` never touches a
run folder at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from data_tools.files import atomic_write_text

RECORD_DIR = ".hydra"
LOG_NAME = "train.log"
log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """Rank 0 of a torchrun/SLURM launch, or a single process."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def use_throwaway_folder(cfg: DictConfig) -> Path | None:
    """With `trainer.fast_dev_run`, point `cfg.run_dir` at an emptied folder in the system temp folder (the same one
    for every process of the run) and never resume; the run folder itself is not touched. None otherwise."""
    if not cfg.trainer.get("fast_dev_run"):
        return None
    folder = Path(tempfile.gettempdir()) / f"latent-ndm-fast-dev-run-{os.getuid()}" / cfg.stage.name / str(cfg.name)
    if is_main_process():
        shutil.rmtree(folder, ignore_errors=True)
    log.info("fast_dev_run: a throwaway run in %s; %s is not touched", folder, cfg.run_dir)
    with open_dict(cfg):
        cfg.run_dir, cfg.resume = str(folder), "never"
    return folder


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

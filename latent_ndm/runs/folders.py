"""Run folders: where a run lives, its one writer, its record of how it was started, and the throwaway folder of a
smoke test.

A run folder is written only once the run really starts (its checkpoint, if any, accepted): the run marker
`.latent-ndm-run` first, then `.hydra/config.yaml` (the composed config) and `.hydra/overrides.yaml` (the command
line's overrides) describe what is in it, and `train.log` collects the run's log. A start that fails leaves nothing
behind; `trainer.fast_dev_run` never touches a run folder at all: it trains in a fresh folder of the system's
temporary folder.

A run folder has one writer: the training process holds the lock `<run>/.lock` (`data_tools.locks.sole_writer`)
from before it looks for a checkpoint until it ends, and a second process on the same folder stops at once in one
line naming the holder's pid. A run's place is checked before anything is written (`check_run_name`, one validation
for `name=` and `run_dir=`): a name never reaches outside `runs/<stage>/`, and no `run_dir=` takes a `..` detour.

A run never adopts a folder that is not a run (`check_run_folder`, before the lock is taken, so that not even a
`.lock` of the folder is touched): an existing `run_dir` must be missing, empty (a `.lock` of a killed run aside),
or a latent-ndm run: it holds the marker `.latent-ndm-run` (a regular file), or it was made by a version before the
marker, recognised by its shape: a regular `.hydra/config.yaml` whose top-level keys include `stage`, `run_dir`,
`resume` and `seed` (read as text, not parsed), beside a `checkpoints/` folder or a `train.log`. Any other folder is
refused in one sentence unless the user says `run_dir_reuse=true`. And a run never writes through a link: under the
lock, before anything is deleted, every entry a run writes (`RUN_FILES`, `RUN_FOLDERS` and everything below those
folders, SLURM's `hpc_ckpt_<n>.ckpt`) is checked and a symbolic link among them is refused in one sentence naming
it (`refuse_links`); the lock file is opened without following a link, `train.log` is appended to without
following one, and `data_tools.files` refuses a linked destination folder or temporary file.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from data_tools.files import atomic_write_text, link_refused, refuse_link, remove_temporaries
from data_tools.locks import sole_writer
from latent_ndm.errors import TrainingError
from latent_ndm.runs.export import CHECKPOINT_DIR, EXPORT_DIR, NDM_VAE_DIR

RECORD_DIR = ".hydra"
LOG_NAME = "train.log"
LOCK_NAME = ".lock"
MARKER_NAME = ".latent-ndm-run"
CURVE_FILE = "curve.json"
RUN_FILES = (LOCK_NAME, MARKER_NAME, LOG_NAME, CURVE_FILE)
RUN_FOLDERS = (CHECKPOINT_DIR, EXPORT_DIR, RECORD_DIR, "images", "tensorboard", "csv", "wandb", "lightning_logs")
LEGACY_KEYS = ("stage", "run_dir", "resume", "seed")  # top-level keys of a run's .hydra/config.yaml
NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,=+-]*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
log = logging.getLogger(__name__)


def check_run_name(name: object, key: str = "name") -> str:
    """The one validation of a run's place, for `name=` and `run_dir=` (`key`): `name` unchanged when it is a path
    of folder names separated by ``/``, none of them ``..`` nor holding a control character; a `name=` is moreover
    relative and each part is made of letters, digits and ``_ . , = + -``, starting with a letter or digit (it never
    leaves `runs/<stage>/`), while a `run_dir=` may be absolute and name any folder. Else a one-sentence
    TrainingError."""
    text = str(name)
    parts = text.split("/")
    if key != "name":
        if text and ".." not in parts and not CONTROL.search(text):
            return text
        raise TrainingError(f"{key}={text!r} is not a run folder: give the folder's path without '..' parts and "
                            "without control characters (an absolute path if the run lives elsewhere)")
    if not all(NAME_PART.fullmatch(part) for part in parts):
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


def _is_regular(path: Path) -> bool:
    """A regular file, not a link to one."""
    return path.is_file() and not path.is_symlink()


def _is_our_lock(path: Path) -> bool:
    """A `.lock` that `sole_writer` wrote (empty, or with a `pid=` line): a killed run's, never a reason to refuse."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:4096] if _is_regular(path) else None
    except OSError:
        return False
    return text is not None and (not text.strip() or any(line.startswith("pid=") for line in text.splitlines()))


def is_run_folder(run_dir: Path) -> bool:
    """Whether `run_dir` is a latent-ndm run: it holds the marker `.latent-ndm-run`, or it is a run of a version
    before the marker (see the module doc: `.hydra/config.yaml` with the `LEGACY_KEYS`, and `checkpoints/` or
    `train.log`)."""
    if _is_regular(run_dir / MARKER_NAME):
        return True
    record = run_dir / RECORD_DIR / "config.yaml"
    if (run_dir / RECORD_DIR).is_symlink() or not _is_regular(record):
        return False
    try:
        with open(record, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return False
    keys = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*):", text, flags=re.MULTILINE))
    kept = (run_dir / CHECKPOINT_DIR).is_dir() and not (run_dir / CHECKPOINT_DIR).is_symlink()
    return set(LEGACY_KEYS) <= keys and (kept or _is_regular(run_dir / LOG_NAME))


def check_run_folder(run_dir: Path, reuse: bool = False) -> None:
    """Refuse, in one sentence and before anything is written, a `run_dir` that exists and is not a latent-ndm run
    (`is_run_folder`) unless `reuse` (`run_dir_reuse=true`): a folder that holds nothing but a `.lock` that
    `sole_writer` wrote (a start that was killed) counts as empty, and an empty folder is adopted."""
    if not os.path.lexists(run_dir):
        return
    if not run_dir.is_dir():
        raise TrainingError(f"run_dir={run_dir} exists and is not a folder; give another run_dir= (or name=)")
    if reuse or is_run_folder(run_dir):
        return
    held = sorted(p.name for p in run_dir.iterdir() if not (p.name == LOCK_NAME and _is_our_lock(p)))
    if held:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise TrainingError(f"run_dir={run_dir} is a folder that holds files ({shown}) but is not a latent-ndm run "
                            f"(no {MARKER_NAME}); "
                            "nothing in it was changed: give a new or empty folder, or say run_dir_reuse=true to "
                            "train in it anyway")


def run_entries(run_dir: Path) -> Iterator[Path]:
    """The entries a run writes that exist: `RUN_FILES`, `RUN_FOLDERS` and everything below them (links are listed,
    not followed), and SLURM's `hpc_ckpt_<n>.ckpt`."""
    for name in RUN_FILES:
        if os.path.lexists(run_dir / name):
            yield run_dir / name
    for name in RUN_FOLDERS:
        yield from _tree(run_dir / name)
    yield from run_dir.glob("hpc_ckpt_*.ckpt")


def refuse_links(run_dir: Path, folders: Sequence[Path] = ()) -> None:
    """Raise `data_tools.files.LinkRefused`, naming it, for the first symbolic link among the entries a run writes
    (`run_entries`) and in `folders` (e.g. the loggers' folders) and below them: images, logs, checkpoints, exports
    and records then never go through a planted link."""
    for path in (*run_entries(run_dir), *(p for f in folders for p in _tree(Path(f)))):
        if path.is_symlink():
            raise link_refused(path, f"use the run folder {run_dir}")


def _tree(folder: Path) -> Iterator[Path]:
    """`folder`, if it exists, and everything below it (links listed, not followed)."""
    if os.path.lexists(folder):
        yield folder
    if folder.is_dir() and not folder.is_symlink():
        for root, dirs, files in os.walk(folder):
            yield from (Path(root) / n for n in (*dirs, *files))


@contextmanager
def sole_writer_of_run(run_dir: Path, reuse: bool = False) -> Iterator[None]:
    """Hold the run folder's lock while the block runs (the launching process only; the other processes of a
    distributed run are its own). Before the lock, a folder that is not a run is refused (`check_run_folder`;
    `reuse`: `run_dir_reuse`); under it, a link among the entries a run writes (`refuse_links`); then stale
    temporary files of a killed writer are removed from the folders training writes, now that no other process can
    be writing them."""
    if not is_launching_process():
        yield
        return
    check_run_folder(run_dir, reuse)
    with sole_writer(run_dir / LOCK_NAME, f"the run folder {run_dir}",
                     "wait for that run to end, or give this one another name=<run name>"):
        refuse_links(run_dir)
        for folder in (run_dir / CHECKPOINT_DIR, run_dir / EXPORT_DIR, run_dir / EXPORT_DIR / NDM_VAE_DIR,
                       run_dir / RECORD_DIR):
            if folder.is_dir():
                remove_temporaries(folder)
        yield


def record_run(run_dir: Path, cfg: DictConfig, overrides: Sequence[str]) -> Path:
    """The run marker `<run_dir>/.latent-ndm-run` (from now on the folder is a run), then `.hydra/config.yaml` and
    `overrides.yaml`, written when the run really starts (rank 0)."""
    record = run_dir / RECORD_DIR
    if is_main_process():
        atomic_write_text(run_dir / MARKER_NAME, f"latent-ndm run: stage={cfg.stage.name}\n")
        atomic_write_text(record / "config.yaml", OmegaConf.to_yaml(cfg))
        atomic_write_text(record / "overrides.yaml", yaml.safe_dump(list(overrides)))
    return record


LOGGERS = ("", "lightning.pytorch", "lightning.fabric")  # the root, and Lightning's (which do not propagate)


class _NoFollowFileHandler(logging.FileHandler):
    """A FileHandler that appends to its file without following a link (`O_NOFOLLOW`): a linked log is refused."""

    def _open(self) -> TextIO:
        path = Path(self.baseFilename)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as err:
            if os.path.islink(path):
                raise link_refused(path, "append the run's log") from err
            raise
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


@contextmanager
def run_log(run_dir: Path) -> Iterator[Path]:
    """Everything logged while the run trains (ours and Lightning's) also goes to `<run_dir>/train.log` (appended,
    never through a link; rank 0)."""
    path = run_dir / LOG_NAME
    if not is_main_process():
        yield path
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    refuse_link(path, "append the run's log")
    handler = _NoFollowFileHandler(path)
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

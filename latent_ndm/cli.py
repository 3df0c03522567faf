"""What every `python -m latent_ndm.<command>` shares: a Hydra entry point over `configs/<command>.yaml`, and user
errors as one line on stderr with exit status 1. The command line is composed and checked before anything heavy is
imported (`latent_ndm.runs.validate`): this module imports Hydra and OmegaConf only, and each command imports torch
and Lightning inside its `run`."""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from data_tools.errors import DataToolError
from data_tools.http_stream import ShardReadError
from latent_ndm.errors import UserError
from latent_ndm.runs.config import CONFIG_DIR
from latent_ndm.runs.validate import check_command_line

USER_ERRORS = (UserError, DataToolError, ValueError, FileNotFoundError, ShardReadError, HydraException,
               OmegaConfBaseException)
T = TypeVar("T")


def user_errors() -> tuple[type[BaseException], ...]:
    """`USER_ERRORS`, and Lightning's configuration errors (e.g. a budget a checkpoint exceeds) once Lightning is
    imported (only then can one be raised)."""
    if "lightning.fabric" not in sys.modules:
        return USER_ERRORS
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    return (*USER_ERRORS, MisconfigurationException)


def one_line(err: BaseException) -> str:
    """The message of a user-facing error on one line (DataLoader workers wrap it in a traceback)."""
    if isinstance(err, MissingMandatoryValue) and getattr(err, "full_key", None):
        return f"{err.full_key} is required: give {err.full_key}=... on the command line"
    text = str(err).strip() or type(err).__name__
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def quiet_known_warnings() -> None:
    """Two harmless Lightning warnings a user cannot act on (torch 2.14's pytree API; the shard streams split their
    work per DataLoader worker themselves, which is what the `__len__` warning asks for)."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*Your `IterableDataset` has `__len__` defined")
    warnings.filterwarnings("ignore", message=r".*torch.jit.script.*is deprecated")


PEER_SIGNS = ("gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe", "timed out", "Timed out",
              "ProcessGroup", "TCPStore")


def peer_failure(err: BaseException) -> bool:
    """Whether `err` says that another process of a distributed run died or stopped answering."""
    if "torch" not in sys.modules:
        return False
    import torch

    if isinstance(err, torch.distributed.DistError):
        return True
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return distributed and isinstance(err, RuntimeError) and any(sign in str(err) for sign in PEER_SIGNS)


def _exit(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def run_or_exit(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args); a user error prints `error: <one line>` and exits 1, as does the failure of another process of a
    distributed run (a dead rank stops the others instead of hanging them). HYDRA_FULL_ERROR=1 keeps the traceback."""
    try:
        return fn(*args)
    except user_errors() as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _exit(one_line(err))
    except RuntimeError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not peer_failure(err):
            raise
        cause = re.sub(r"^\[[^\]]*\]\s*", "", one_line(err)).split(". ")[0]  # without gloo's source location
        _exit(f"another process of this distributed run stopped or stopped answering ({cause}); this process stops "
              "too. The last checkpoint is kept: rerun the same command on every node to resume from it")


def hydra_command(config_name: str, run: Callable[[DictConfig], Any], readonly: bool = False) -> Callable[[], None]:
    """The `main()` of a command: the command line is composed and checked first (`check_command_line`: a
    misspelled key, an unknown option, a missing folder is one line and exit 1, before any heavy import); then Hydra
    composes `configs/<config_name>.yaml` with the overrides and `run(cfg)` runs under `run_or_exit`; `readonly`
    freezes the config first."""

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    def hydra_main(cfg: DictConfig) -> None:
        quiet_known_warnings()
        if readonly:
            OmegaConf.set_readonly(cfg, True)
        run_or_exit(run, cfg)

    def main() -> None:
        run_or_exit(check_command_line, config_name, sys.argv[1:])
        hydra_main()

    return main

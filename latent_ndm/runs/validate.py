"""A command line checked before anything heavy is imported: the overrides are parsed and composed with Hydra's
compose API (Hydra and OmegaConf only: no torch, no Lightning), and the folders a command reads are looked at. A
mistake becomes one sentence naming the key or folder, the cause and the fix (`CommandLineError`); the commands
print it and exit 1 within a second or two instead of after the heavy imports."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from latent_ndm.errors import UserError
from latent_ndm.runs.config import (
    CONFIG_DIR,
    VAE_EXPORT_ALIAS,
    compose_config,
    register_sampler_schemas,
    vae_export_of,
)

# Hydra flags that take a value (`--cfg job`); any other argument that starts with "-" is a flag alone
VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--experimental-rerun"}
# flags that point Hydra at another config: then the command line is left to Hydra alone
OTHER_CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
VAE_FILES = ("ema.safetensors", "vae_config.yaml")  # a VAE export (latent_ndm.runs.export)
NDM_FILE = "ndm.safetensors"
VAE_HINT = "train one with `python -m latent_ndm.train stage=vae` (it writes runs/vae/default/export)"


class CommandLineError(UserError):
    """A command line that cannot run: a misspelled key, an unknown option of a config group, a missing folder."""


def overrides_of(argv: Sequence[str]) -> list[str] | None:
    """The `key=value` overrides of a command's arguments (Hydra's flags and their values left out); None when a
    flag names another config, which only Hydra can compose."""
    overrides, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in OTHER_CONFIG_FLAGS:
            return None
        elif arg.startswith("-"):
            skip = arg in VALUED_FLAGS
        else:
            overrides.append(arg)
    return overrides


def first_of_sweeps(overrides: Sequence[str], multirun: bool) -> list[str]:
    """`overrides` with each sweep (`a=1,2`, `a=range(3)`) of a multirun (`-m`) replaced by its first value: a
    sweep's job composes the way its first job does. Unreadable overrides raise `CommandLineError`."""
    parser = OverridesParser.create()
    out = []
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except HydraException as err:  # the parser raises a plain HydraException for a syntax error
            raise CommandLineError(f"cannot read the override {text!r} ({first_line(err)}); write key=value, and quote "
                                   "a value with spaces, commas or brackets, e.g. 'key=[a,b]'") from err
        if multirun and override.is_sweep_override():
            out.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        else:
            out.append(text)
    return out


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")


def dotted_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every key of `cfg`, nested ones dotted (`trainer`, `trainer.max_steps`), without resolving anything."""
    keys = []
    if isinstance(cfg, DictConfig):
        for key in cfg.keys():
            name = f"{prefix}{key}"
            keys.append(name)
            keys += dotted_keys(cfg._get_node(key), f"{name}.")
    return keys


def config_groups() -> list[str]:
    """The config groups of `configs/` (`stage`, `ndm/transform`, ...): the folders that hold YAML files."""
    root = Path(CONFIG_DIR)
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("*.yaml") if p.parent != root)


def nearest(key: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to `key`, compared whole and by its last dotted part; None if none is close."""
    found = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if found:
        return found[0]
    tail = key.rsplit(".", 1)[-1]
    found = difflib.get_close_matches(tail, [c.rsplit(".", 1)[-1] for c in candidates], n=1, cutoff=0.75)
    return next((c for c in candidates if found and c.rsplit(".", 1)[-1] == found[0]), None)


def unknown_key(name: str, key: str, value: str, overrides: Sequence[str]) -> CommandLineError:
    """The sentence for `key=value` where `configs/<name>.yaml` has no `key`, with the nearest valid key."""
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        base = compose_config(name, rest)
    except HydraException:
        base = compose_config(name, [])
    close = nearest(key, dotted_keys(base) + config_groups())
    hint = f"did you mean {close}? Give {close}={value}" if close else f"see `python -m latent_ndm.{name} --help`"
    return CommandLineError(f"{key} is not a key of configs/{name}.yaml (with these overrides); {hint}, or "
                            f"+{key}={value} to add a new key on purpose")


def composition_error(name: str, err: HydraException, overrides: Sequence[str]) -> CommandLineError:
    """One sentence for a failed composition: an unknown key, an unknown option of a group, or Hydra's first line."""
    text = str(err)
    missing = re.search(r"Could not find '(.+)/([^/']+)'\s+Available options in '(.+?)':\n((?:\t.*\n?)*)", text)
    if isinstance(err, MissingConfigException) and missing:
        group, option = missing.group(1), missing.group(2)
        options = [o.strip() for o in missing.group(4).splitlines() if o.strip()]
        close = difflib.get_close_matches(option, options, n=1)
        guess = f"did you mean {group}={close[0]}? " if close else ""
        return CommandLineError(f"{group}={option} is not an option of the config group {group} (configs/{group}/); "
                                f"{guess}choose one of {', '.join(options)}")
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        key = override.group(1)
        given = next((o for o in overrides if o.split("=", 1)[0].lstrip("+") == key), f"{key}=...")
        return unknown_key(name, key, given.split("=", 1)[-1], overrides)
    if "An item is already at" in text:
        key = re.search(r"already at '([^']+)'", text)
        shown = key.group(1) if key else "the key"
        return CommandLineError(f"{shown} is already a key of configs/{name}.yaml; drop the + in front of it "
                                f"({shown}=...), or write ++{shown}=... to set it either way")
    merging = re.search(r"Error merging override (\S+)", text)
    if merging and err.__cause__ is not None:  # a value of the wrong type for a typed key (a sampler's setting)
        return CommandLineError(f"{merging.group(1)} is refused: {first_line(err.__cause__)}; give a value of that "
                                f"type (see `python -m latent_ndm.{name} --help`)")
    if "Ambiguous value" in text:
        arg = re.search(r"argument '([^']+)'", text)
        shown = arg.group(1) if arg else "a value with commas"
        return CommandLineError(f"{shown} has commas: write a list as key=[a,b], a string as key='a,b', or add -m to "
                                "sweep over the values")
    message = " ".join(line.strip() for line in text.splitlines() if line.strip() and "provider=" not in line
                       and not line.startswith("Config search path"))
    return CommandLineError(f"{message} (configs/{name}.yaml); see `python -m latent_ndm.{name} --help`")


def compose_command_line(name: str, argv: Sequence[str]) -> DictConfig | None:
    """`configs/<name>.yaml` composed with the overrides of `argv` as the command will compose it (a sweep with its
    first values); None when a flag names another config. A mistake raises `CommandLineError`."""
    overrides = overrides_of(argv)
    if overrides is None:
        register_sampler_schemas()  # Hydra composes the other config alone: its sampler settings must be there
        return None
    overrides = first_of_sweeps(overrides, multirun=any(a in ("-m", "--multirun") for a in argv))
    try:
        return compose_config(name, overrides)
    except (ConfigCompositionException, OverrideParseException) as err:
        raise composition_error(name, err, overrides) from err


def _value(cfg: DictConfig, key: str) -> Any:
    """`cfg`'s value at the dotted `key` as given (interpolations unresolved), None where absent or `???`."""
    node = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)
    return None if node is None or OmegaConf.is_missing(cfg, key) else node


def is_remote(location: str) -> bool:
    return "://" in location or location.startswith("pipe:")


def check_folder(key: str, location: Any, fix: str) -> None:
    """`key` names a local file or folder that exists (remote locations are checked when read)."""
    text = "" if location is None else str(location)
    if not text.strip():
        raise CommandLineError(f"{key} is empty; {fix}")
    if not is_remote(text) and not Path(text).exists():
        raise CommandLineError(f"{key}={text} does not exist; {fix}")


def check_vae_export(key: str, location: Any) -> None:
    """`key` names a VAE export: a folder with ema.safetensors and vae_config.yaml (or one of those files, or a
    torch.save'd .pt/.ckpt file). An NDM run, a VAE run folder or another folder is named as such, with the fix."""
    check_folder(key, location, f"{VAE_HINT}, or give {key}=<a VAE export folder>")
    path = Path(str(location))
    folder = path if path.is_dir() else path.parent if path.suffix in (".safetensors", ".yaml", ".yml") else None
    if folder is None or all((folder / name).is_file() for name in VAE_FILES):
        return
    for export in (folder, folder / "export"):
        if (export / NDM_FILE).is_file():
            raise CommandLineError(f"{key}={path} is an NDM run, not a VAE export; give the VAE it was trained on, "
                                   f"e.g. {key}={export / 'vae'} (the copy inside its export)")
    if all((folder / "export" / name).is_file() for name in VAE_FILES):
        raise CommandLineError(f"{key}={path} is a VAE run folder; give its export: {key}={folder / 'export'}")
    raise CommandLineError(f"{key}={path} holds no VAE export (ema.safetensors and vae_config.yaml); {VAE_HINT}, "
                           f"or give {key}=<a VAE export folder>")


def check_run(key: str, location: Any) -> None:
    """`key` names a trained run (a run folder, its export/ or a .ckpt file) that exists."""
    check_folder(key, location, "train one with `python -m latent_ndm.train stage=ndm` (or stage=vae), then give "
                 f"{key}=<its run folder, e.g. runs/ndm/default>")


def check_data_root(cfg: DictConfig) -> None:
    """`data.root` is given (`data=shards` and `data=latents` have no default) and not empty."""
    if "data" not in cfg or "root" not in cfg.data.keys():  # `in` alone is False for a `???` value
        return
    if OmegaConf.is_missing(cfg.data, "root"):
        raise CommandLineError("data.root is required with this data config: give data.root=<a shard folder or URL> "
                               "(`python -m data_tools.shard SRC OUT` makes one)")
    root = _value(cfg, "data.root")
    if root is None or not str(root).strip():
        raise CommandLineError("data.root is empty; give data.root=<a shard folder or URL> (`python -m "
                               "data_tools.shard SRC OUT` makes one), or leave data.root out for the data config's "
                               "default")


def given_vae_export(cfg: DictConfig, has_default: bool = False) -> tuple[str, str | None]:
    """(the key, the VAE export) a command line names: `vae_export`, or `vae_ckpt` where the deprecated alias is
    used; None where it names none yet (a `vae_export: ???` is left to the command, which says that it is
    required)."""
    try:
        export = vae_export_of(cfg, has_default)
    except MissingMandatoryValue:
        return "vae_export", None
    except ValueError as err:
        raise CommandLineError(str(err)) from err
    return ("vae_export" if _value(cfg, VAE_EXPORT_ALIAS) is None else VAE_EXPORT_ALIAS), export


def check_paths(name: str, cfg: DictConfig) -> None:
    """The folders `python -m latent_ndm.<name>` reads, looked at before any heavy import."""
    if name == "train":
        check_data_root(cfg)
    if (name == "train" and _value(cfg, "stage.name") == "ndm") or name == "encode":
        key, export = given_vae_export(cfg, has_default=name == "train")
        if export is not None:
            check_vae_export(key, export)
    elif name in ("sample", "evaluate"):
        check_run("ckpt", _value(cfg, "ckpt"))


def check_command_line(name: str, argv: Sequence[str]) -> DictConfig | None:
    """Compose `python -m latent_ndm.<name> <argv>` and look at the folders it reads; `CommandLineError` on a
    mistake. Hydra's own flags (`--help`, `--cfg job`, `-m`) pass; the composed config (None: left to Hydra)."""
    cfg = compose_command_line(name, argv)
    if cfg is not None and not any(a in ("--help", "-h", "--hydra-help") for a in argv):
        check_paths(name, cfg)
    return cfg

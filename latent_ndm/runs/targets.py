"""What a config may build: Hydra `_target_`s from a fixed allow-list, checked before anything is imported or built.

Every object the project builds from a config goes through `instantiate_trusted` (a test holds that no other module
calls Hydra's `instantiate`). A config is a tree of plain values; each `_target_` in it, nested ones included, must be
one of latent-ndm's own classes, factories, optimizers, loggers or trainer (`ALLOWED_TARGETS`), compared as a string,
so that a name from a file never reaches an import. Hydra's own filtering of targets is best-effort, not a security
boundary, hence this list.

The allow-list is split by role (`ROLES`: VAEs, networks, the NDM math, data modules, optimizers, ...): a config read
from a file someone else made (an export's YAML, a checkpoint's run config) is plain data checked by
`latent_ndm.runs.file_config`, where a file of each kind names only its roles' classes; `check_file_config` adds that
no value of such a file may be a ``pipe:`` command, which is run only when the user types it. Your own classes are
built when you name them yourself, in the environment variable `LATENT_NDM_TRUSTED_TARGETS` (comma-separated dotted
names; ``package.*`` names a whole package), and only those the named package defines (not what it imports, such as
``package.shutil.copyfile``); no file can add to the list. docs/SECURITY.md says what else is treated as data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

TRUST_ENV = "LATENT_NDM_TRUSTED_TARGETS"

# What each kind of config may build, by role: a file of one kind names only its role's classes (`file_config`).
ROLES: dict[str, frozenset[str]] = {
    # the first stage, and its parts in a run config's `vae` group
    "vae": frozenset({"vae.model.VAE", "vae.VAE",
                      "vae.pixel_shuffle.PixelShuffleVAE",  # the bring-your-own-VAE example (docs/BYO_VAE.md)
                      "vae.sd_vae.AutoencoderKLVAE"}),  # a pretrained diffusers AutoencoderKL (SD-VAE)
    "vae_part": frozenset({"vae.networks.Encoder", "vae.networks.Decoder"}),
    "network": frozenset({"latent_ndm.networks.UNet", "latent_ndm.networks.unet.UNet",
                          "latent_ndm.networks.TimeMLP", "latent_ndm.networks.mlp.TimeMLP"}),
    # the forward process family of an NDM config (`ndm.process`); a new family is a user-trusted subclass
    "process": frozenset({"latent_ndm.diffusion.forward_process.ForwardProcess"}),
    # the NDM math
    "ndm": frozenset({
        "latent_ndm.diffusion.schedule.VPSchedule",
        "latent_ndm.diffusion.transforms.IdentityTransform", "latent_ndm.diffusion.transforms.NeuralTransform",
        "latent_ndm.diffusion.transforms.SeparableTransform",
        "latent_ndm.diffusion.transforms.SeparableTransform.from_factory",
        "latent_ndm.diffusion.noise.NoiseScale",
        "latent_ndm.diffusion.parameterisation.DataPrediction",
        "latent_ndm.diffusion.parameterisation.EpsilonPrediction",
        "latent_ndm.diffusion.parameterisation.SkipPrediction",
        "latent_ndm.diffusion.time_sampling.UniformTime", "latent_ndm.diffusion.time_sampling.LikelihoodISTime",
        "latent_ndm.diffusion.time_sampling.InverseG2Time",
        "latent_ndm.diffusion.objectives.ContinuousNDMObjective",
        "latent_ndm.diffusion.objectives.DiscreteNDMObjective",
        "latent_ndm.diffusion.objectives.StraightFlowObjective",
    }),
    "data": frozenset({"latent_ndm.data.datasets.synthetic_datamodule", "latent_ndm.data.datasets.shard_datamodule",
                       "latent_ndm.data.datasets.latent_datamodule"}),
    "optimizer": frozenset({"torch.optim.Adam", "torch.optim.AdamW", "torch.optim.Adamax", "torch.optim.SGD",
                            "torch.optim.RMSprop"}),
    "scheduler": frozenset({"latent_ndm.optim.lr.warmup_cosine"}),
    "trainer": frozenset({"lightning.pytorch.Trainer"}),
    "logger": frozenset({"lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.TensorBoardLogger",
                         "lightning.pytorch.loggers.WandbLogger"}),
}
ALLOWED_TARGETS = frozenset().union(*ROLES.values())


class UnsafeConfigError(ValueError):
    """A config that asks to build something outside the allow-list, or (read from a file) to run a command."""


def trusted_by_user() -> tuple[str, ...]:
    """The dotted names (or ``package.*`` prefixes) the user added in `LATENT_NDM_TRUSTED_TARGETS`."""
    return tuple(name.strip() for name in os.environ.get(TRUST_ENV, "").split(",") if name.strip())


def _trusting_package(target: str) -> str | None:
    """The package whose own names `LATENT_NDM_TRUSTED_TARGETS` trusts `target` as (``pkg`` of ``pkg.*``, the top
    package of an exact name), or None when the user does not name it."""
    for name in trusted_by_user():
        if name.endswith(".*") and target.startswith(name[:-1]):
            return name[:-2]
        if target == name:
            return name.split(".", 1)[0]
    return None


def is_allowed(target: str) -> bool:
    """Whether `target` is on the allow-list or named by the user (`LATENT_NDM_TRUSTED_TARGETS`)."""
    return target in ALLOWED_TARGETS or _trusting_package(target) is not None


def has_role(target: str, roles: Iterable[str]) -> bool:
    """Whether `target` is one of the classes of `roles` (`ROLES`), or one the user trusts (their own classes may
    stand in any role)."""
    return any(target in ROLES[role] for role in roles) or _trusting_package(target) is not None


def check_defined_where_trusted(target: str, source: str) -> None:
    """Raise `UnsafeConfigError` unless a target the user trusts is defined in the package they named: ``my_lab.*``
    trusts ``my_lab``'s own classes and functions, not what it imports (``my_lab.shutil.copyfile``). Imports the
    user's package (their code, which they named); allow-listed targets are not imported here."""
    package = None if target in ALLOWED_TARGETS else _trusting_package(target)
    if package is None:
        return
    try:
        found = get_object(target)
    except Exception as err:  # noqa: BLE001 - the user's package may raise anything on import
        cause = " ".join(str(err).split())[:120]
        raise UnsafeConfigError(f"{source} names {target!r}, which cannot be imported ({cause})") from err
    module = getattr(found, "__module__", None)
    if not isinstance(module, str) or not (module == package or module.startswith(package + ".")):
        raise UnsafeConfigError(
            f"{source} names {target!r}, which is defined in {module or 'no module'}, not in {package}; {TRUST_ENV} "
            f"trusts the classes and functions {package} defines, not those it imports: name them where they are "
            "defined")


def _plain(cfg: Any) -> Any:
    """A config as plain containers, interpolations resolved (what Hydra would build from)."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _nodes(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every node of a plain config tree, depth first."""
    yield path, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _nodes(value, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from _nodes(value, f"{path}[{i}]")


def check_targets(cfg: Any, source: str) -> None:
    """Raise `UnsafeConfigError` (one sentence naming `source`, the key and the target) unless every `_target_` in
    `cfg` is allowed."""
    for key, node in _nodes(_plain(cfg)):
        if not isinstance(node, dict) or "_target_" not in node:
            continue
        target = node["_target_"]
        where = f"{key}._target_" if key else "_target_"
        if not isinstance(target, str) or not is_allowed(target):
            raise UnsafeConfigError(
                f"{source} asks to build {target!r} ({where}), which is not one of latent-ndm's own classes; a config "
                f"builds only those (docs/SECURITY.md). If it is your own code, name it in {TRUST_ENV}")


def check_file_config(cfg: Any, source: str) -> None:
    """`check_targets`, and no ``pipe:`` command anywhere in a config read from a file (commands run only when the
    user types them)."""
    check_targets(cfg, source)
    for key, node in _nodes(_plain(cfg)):
        if isinstance(node, str) and node.strip().startswith("pipe:"):
            raise UnsafeConfigError(
                f"{source} names the command {node[:60]!r} ({key}); latent-ndm runs a pipe: command only when you type "
                "it, never from a file: give the data on the command line (e.g. shards=...)")


def trusted_class(target: str, source: str = "the config") -> type:
    """The class a `_target_` names (or whose factory classmethod it names), imported only when the target is
    allowed; nothing is built."""
    check_targets({"_target_": target}, source)
    check_defined_where_trusted(target, source)
    found = get_object(target)
    cls = found if isinstance(found, type) else getattr(found, "__self__", None)
    if not isinstance(cls, type):
        raise UnsafeConfigError(f"{source}: {target} names neither a class nor a class's factory method")
    return cls


def instantiate_trusted(cfg: Any, source: str = "the config", **kwargs: Any) -> Any:
    """Hydra's `instantiate(cfg, **kwargs)` once `check_targets` has passed and every target the user trusts is
    defined in the package they named (`check_defined_where_trusted`)."""
    check_targets(cfg, source)
    for _, node in _nodes(_plain(cfg)):
        if isinstance(node, dict) and isinstance(node.get("_target_"), str):
            check_defined_where_trusted(node["_target_"], source)
    return instantiate(cfg, **kwargs)

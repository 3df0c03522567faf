"""Configs read back from files are plain data: the one place that reads and checks them before anything is built.

A config someone else wrote (an export's `train_config.yaml`, `ndm_config.yaml`, `vae_config.yaml`, a checkpoint's
stored run and VAE configs) is checked here against the schema of its kind (`RUN_SCHEMA`, `NDM_SCHEMA`, `VAE_SCHEMA`,
`DATA_SCHEMA`), in order:

1. plain values only (mappings with text keys, lists, text, numbers, booleans, null), at most `NODE_BUDGET` of them
   counting every alias expansion, so a YAML alias bomb is refused while it is read; no ``${...}`` anywhere, escaped
   or not (OmegaConf would resolve it: build objects, read the environment), and no ``pipe:`` command;
2. the keys the kind may hold, and the values the readers use of the right type (`stage.name`, `data.resolution`,
   `ndm.t_eps`, ...);
3. Hydra's special keys: ``_args_``, ``_recursive_`` and ``_convert_`` never, ``_partial_`` only where latent-ndm
   writes it (the optimizer, the LR schedule, the network handed to `SeparableTransform.from_factory`);
4. every ``_target_`` by role: a VAE config names only VAEs, an NDM config only networks and the math layer's classes,
   a data config only data modules, an optimizer entry only optimizers (`latent_ndm.runs.targets.ROLES`), or a class
   the user trusts in `LATENT_NDM_TRUSTED_TARGETS`; and its arguments are parameters of that class.

The project's own configs (composed by Hydra from `configs/`) may interpolate; stored configs were resolved before
they were written, so they never need to. `build_from_file` builds a checked config without side effects on disk
(the synthetic data module reads its set and never renders one into a folder a file names).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import get_object

from latent_ndm.runs.targets import (
    ROLES,
    UnsafeConfigError,
    check_defined_where_trusted,
    check_file_config,
    has_role,
    instantiate_trusted,
)

NODE_BUDGET = 20_000  # values in one config file, aliases expanded; a run config holds a few hundred
NEVER_FROM_FILES = ("_args_", "_recursive_", "_convert_")
# arguments a file may not set, and the value a built object gets instead: building writes nothing
NO_SIDE_EFFECTS: dict[str, dict[str, Any]] = {"latent_ndm.data.datasets.synthetic_datamodule": {"create": False}}
# the roles whose classes are built from files, so whose arguments are checked against their signatures
BUILT_ROLES = ("vae", "vae_part", "network", "ndm", "process", "data", "optimizer", "scheduler")
NDM_ROLES = frozenset({"network", "ndm"})
PROCESS_ROLES = frozenset({"process"})  # `ndm.process`: the forward process family


class _TooLarge(yaml.YAMLError):
    """A YAML document whose expansion (aliases counted each time they are used) exceeds `NODE_BUDGET`."""


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that weighs every composed node as its expanded size (an alias weighs what it stands for)
    and stops once the document outweighs `NODE_BUDGET`: a few hundred bytes of nested aliases cannot expand into
    billions of values, in the loader, its merge keys or the code that walks the result."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._weights: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        node = super().compose_node(parent, index)
        weight = self._weights.get(id(node))
        if weight is None:
            children: list[Any] = []
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            weight = 1 + sum(self._weights.get(id(child), 1) for child in children)
            self._weights[id(node)] = weight
        if weight > NODE_BUDGET:
            raise _TooLarge(f"it expands to more than {NODE_BUDGET} values (YAML aliases counted each time they are "
                            "used)")
        return node


def load_yaml(path: Path) -> Any:
    """The plain data of a YAML file, read with `yaml.safe_load`'s rules (no Python tags) and at most `NODE_BUDGET`
    values once aliases are expanded; anything else is a one-sentence ValueError naming the file."""
    try:
        loader = _BoundedLoader(path.read_text(encoding="utf-8"))
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        cause = " ".join(str(err).split())
        raise ValueError(f"{path} is not plain YAML ({cause[:160]}); latent-ndm reads no Python tags, interpolations "
                         f"or alias bombs from files") from err


@dataclass(frozen=True)
class Check:
    """What a value must be: `what` (for the message) and a test."""

    what: str
    test: Callable[[Any], bool]
    required: bool = True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


MAPPING = Check("a mapping", lambda v: isinstance(v, dict))
NUMBER = Check("a number", _is_number)
INT_OR_NULL = Check("an integer or null", lambda v: v is None or _is_int(v))


@dataclass(frozen=True)
class Schema:
    """The kind of a config file: `sections` maps a dotted key ("" the whole file) to the roles its `_target_`s (at
    any depth) may have, the longest matching key deciding; `partial` the dotted keys that may say ``_partial_``;
    `keys` the keys the file may hold at its top (None: any); `checks` the values its readers use."""

    name: str
    sections: Mapping[str, frozenset[str]]
    partial: frozenset[str] = frozenset()
    keys: frozenset[str] | None = None
    checks: Mapping[str, Check] = field(default_factory=dict)


NDM_KEYS = frozenset({"transform", "objective", "time_sampler", "parameterisation", "denoiser", "noise", "schedule",
                      "process", "F_size", "mode", "mixing", "mixing_init", "t_eps", "eval_t_eps", "latent"})
NDM_CHECKS = {
    **{part: MAPPING for part in ("transform", "objective", "parameterisation", "denoiser", "schedule", "latent")},
    "noise": Check("a mapping or null", lambda v: v is None or isinstance(v, dict), required=False),
    "process": Check("a mapping", lambda v: isinstance(v, dict), required=False),  # absent: ForwardProcess
    "latent.channels": INT_OR_NULL, "latent.resolution": INT_OR_NULL,
    "t_eps": NUMBER, "eval_t_eps": Check("a number", _is_number, required=False),
    "mixing": Check("true or false", lambda v: isinstance(v, bool)), "mixing_init": NUMBER,
}
NDM_SCHEMA = Schema("ndm config", {"": NDM_ROLES, "process": PROCESS_ROLES}, frozenset({"transform.net"}), NDM_KEYS,
                    NDM_CHECKS)
RUN_SCHEMA = Schema(
    "run config",
    {"": frozenset(), "data": frozenset({"data"}), "vae": frozenset({"vae", "vae_part"}), "ndm": NDM_ROLES,
     "ndm.process": PROCESS_ROLES,
     "optim.optimizer": frozenset({"optimizer"}), "optim.scheduler": frozenset({"scheduler"}),
     "trainer": frozenset({"trainer"}), "logger": frozenset({"logger"})},
    frozenset({"optim.optimizer", "optim.scheduler", "ndm.transform.net"}),
    None,
    {"stage": Check("a mapping", lambda v: isinstance(v, dict), required=False),  # absent: `export_vae`'s
     "stage.name": Check("vae or ndm", lambda v: v in ("vae", "ndm")), "data": MAPPING,
     "data.resolution": INT_OR_NULL, "data.batch_size": Check("an integer", _is_int, required=False),
     "data.read": Check("a mapping or null", lambda v: v is None or isinstance(v, dict), required=False),
     "vae_export": Check("text or null", lambda v: v is None or isinstance(v, str), required=False),
     "vae_ckpt": Check("text or null", lambda v: v is None or isinstance(v, str), required=False),
     "trainer.max_steps": Check("an integer", _is_int, required=False)},
)
DATA_SCHEMA = Schema("data config", {"": frozenset({"data"})})
VAE_KEYS = frozenset({"encoder", "decoder", "likelihood", "likelihood_kwargs", "bits"})  # `VAE_SCHEMA.config()`
VAE_SCHEMA = Schema("VAE config", {"": frozenset({"vae", "vae_part"})})


def _walk(tree: Any, source: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every node of `tree`, depth first, refusing anything but plain values and more than
    `NODE_BUDGET` of them (a tree from a checkpoint may share nodes as YAML aliases do)."""
    stack: list[tuple[str, Any]] = [("", tree)]
    seen = 0
    while stack:
        key, node = stack.pop()
        seen += 1
        if seen > NODE_BUDGET:
            raise UnsafeConfigError(f"{source} holds more than {NODE_BUDGET} values (shared ones counted each time); "
                                    "latent-ndm reads no config that large from a file")
        yield key, node
        if isinstance(node, dict):
            for name, value in reversed(node.items()):
                if not isinstance(name, str):
                    raise ValueError(f"{source} has the key {name!r} under {key or 'its top'}, which is not text; "
                                     "the file is damaged or was not written by latent-ndm")
                stack.append((f"{key}.{name}" if key else name, value))
        elif isinstance(node, list):
            stack.extend((f"{key}[{i}]", value) for i, value in reversed(list(enumerate(node))))
        elif node is not None and not isinstance(node, str | int | float | bool):
            raise ValueError(f"{source} holds a {type(node).__name__} at {key or 'its top'}; a config file holds "
                             "only mappings, lists, text, numbers, booleans and null")


def _check_plain(tree: Any, source: str) -> list[tuple[str, Any]]:
    """Every (dotted key, value) of a plain tree with no interpolation in any key or text."""
    nodes = list(_walk(tree, source))
    for key, node in nodes:
        texts = [node] if isinstance(node, str) else list(node) if isinstance(node, dict) else []
        found = next((text for text in texts if "${" in text), None)
        if found is not None:
            raise UnsafeConfigError(
                f"{source} holds the interpolation {found[:60]!r} ({key or 'its top'}); a config read from a file is "
                "plain data and may hold no ${...} of any kind, escaped or not: write the value itself")
    return nodes


def _value(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


_MISSING = object()


def _check_values(tree: dict[str, Any], checks: Mapping[str, Check], source: str, prefix: str = "") -> None:
    for dotted, check in checks.items():
        value = _value(tree, dotted)
        if value is _MISSING:
            parent = _value(tree, dotted.rsplit(".", 1)[0]) if "." in dotted else tree
            if check.required and isinstance(parent, dict):
                raise ValueError(f"{source} lacks the key {prefix}{dotted}; the file is damaged or was not written by "
                                 "latent-ndm: re-export the run, or download it again")
        elif not check.test(value):
            raise ValueError(f"{source} has {prefix}{dotted}: {str(value)[:60]!r}, which is not {check.what}; the "
                             "file is damaged or was not written by latent-ndm: re-export the run, or download it "
                             "again")


def _check_keys(tree: dict[str, Any], schema: Schema, source: str) -> None:
    checks = [("", tree, schema.keys)]
    if schema is VAE_SCHEMA and "_target_" not in tree:
        checks = [("", tree, VAE_KEYS)]
    if schema is RUN_SCHEMA and isinstance(tree.get("ndm"), dict):
        checks.append(("ndm.", tree["ndm"], NDM_KEYS))
    for prefix, node, keys in checks:
        unknown = sorted(set(node) - keys) if keys is not None else []
        if unknown:
            raise ValueError(f"{source} holds the key {prefix}{unknown[0]}, which a {schema.name} does not have; the "
                             "file is damaged or was not written by latent-ndm")


def _roles(schema: Schema, key: str) -> frozenset[str]:
    """The roles of the section of `schema` that holds `key` (the longest section key that is a prefix of it)."""
    best = max((s for s in schema.sections if s == "" or key == s or key.startswith(s + ".") or
                key.startswith(s + "[")), key=len)
    return schema.sections[best]


def _check_node(key: str, node: dict[str, Any], schema: Schema, source: str) -> None:
    """Hydra's special keys and the `_target_` of one mapping of a file config."""
    where = key or "its top"
    for special in NEVER_FROM_FILES:
        if special in node:
            raise UnsafeConfigError(f"{source} sets {special} ({where}); latent-ndm builds a config read from a file "
                                    f"only from named arguments, so it never takes {special} from one")
    if "_partial_" in node and key not in schema.partial:
        raise UnsafeConfigError(f"{source} sets _partial_ ({where}), which a {schema.name} holds only at "
                                f"{', '.join(sorted(schema.partial)) or 'no key'}; a file may not hand over factories")
    if "_target_" not in node:
        return
    target, roles = node["_target_"], _roles(schema, key)
    if not isinstance(target, str) or not has_role(target, roles):
        kinds = " or ".join(sorted(roles)) or "nothing"
        raise UnsafeConfigError(
            f"{source} asks to build {str(target)[:80]!r} ({where}._target_) where a {schema.name} builds only "
            f"{kinds} classes of latent-ndm (or your own, named in LATENT_NDM_TRUSTED_TARGETS): refused before "
            "anything was built")
    check_defined_where_trusted(target, source)
    if any(target in ROLES[role] for role in BUILT_ROLES):
        _check_arguments(target, node, where, source)


def _check_arguments(target: str, node: dict[str, Any], where: str, source: str) -> None:
    """Refuse arguments that `target` does not take, or that a file may not set (`NO_SIDE_EFFECTS`)."""
    given = [k for k in node if not (k.startswith("_") and k.endswith("_"))]
    forced = [k for k in given if k in NO_SIDE_EFFECTS.get(target, {})]
    if forced:
        raise UnsafeConfigError(f"{source} sets {forced[0]} for {target} ({where}), which only you may set; a config "
                                "read from a file builds nothing that writes to disk")
    parameters = inspect.signature(get_object(target)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    names = {p.name for p in parameters}
    unknown = [k for k in given if k not in names]
    if unknown:
        raise ValueError(f"{source} gives {target} the argument {unknown[0]} ({where}), which it does not take; the "
                         "file is damaged or was not written by this version of latent-ndm")


def check_config(tree: Any, schema: Schema, source: str) -> dict[str, Any]:
    """`tree` (a config read from a file, described by `source` in messages) when it is plain data that fits
    `schema`; else one sentence (`UnsafeConfigError` for what could run code or write, ValueError for a bad value)
    naming the key. Nothing is built."""
    if not isinstance(tree, dict):
        raise ValueError(f"{source} holds a {type(tree).__name__}, not a mapping of settings")
    nodes = _check_plain(tree, source)
    check_file_config(tree, source)  # the allow-list, no pipe: command
    _check_keys(tree, schema, source)
    for key, node in nodes:
        if isinstance(node, dict):
            _check_node(key, node, schema, source)
    _check_values(tree, schema.checks, source)
    if schema is RUN_SCHEMA:
        if (tree.get("stage") or {}).get("name") == "ndm" and not isinstance(tree.get("ndm"), dict):
            raise ValueError(f"{source} is of an ndm run but has no ndm mapping; the file is damaged or was not "
                             "written by latent-ndm")
        if isinstance(tree.get("ndm"), dict):
            _check_values(tree["ndm"], NDM_CHECKS, source, "ndm.")
    return tree


def read_config_file(path: Path, schema: Schema) -> dict[str, Any]:
    """The config in the YAML file `path`, checked against `schema` (`check_config`)."""
    return check_config(load_yaml(path), schema, str(path))


def build_from_file(config: dict[str, Any], schema: Schema, source: str, **kwargs: Any) -> Any:
    """The object a config read from a file describes, once `check_config` has passed, built without side effects on
    disk (`NO_SIDE_EFFECTS`); `kwargs` are the caller's own arguments."""
    check_config(config, schema, source)
    safe = NO_SIDE_EFFECTS.get(str(config.get("_target_")), {})
    return instantiate_trusted(config, source, _convert_="all", **safe, **kwargs)

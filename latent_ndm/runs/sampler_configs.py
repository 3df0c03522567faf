"""The samplers' settings as Hydra structured configs, built from the `Sampler` dataclasses: the one source of each
default. Every registered sampler class (`Sampler.registry`) is stored in Hydra's ConfigStore as the node
`sampler_schema/<name>`: its `name` and its dataclass fields with their types and defaults.
`configs/sampler/<name>.yaml` extends that node (`defaults: [/sampler_schema/<name>@_here_, _self_]`) and holds
comments only, so that a new sampler is its class and its YAML file. A composed sampler group has the class's
defaults, typed: a misspelled setting, or a value of the wrong type, is refused when the command line is composed.

This module imports the samplers, hence torch: `latent_ndm.runs.config` registers the nodes only for a composition
that asks for one, so that a command line without a sampler is still checked before torch is imported.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, field, fields, make_dataclass
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore

from latent_ndm.diffusion.samplers import Sampler
from latent_ndm.runs.config import SAMPLER_SCHEMA_GROUP


def _default(spec: Field) -> Any:
    """A field of the settings class with `spec`'s default (a factory stays a factory)."""
    if spec.default is not MISSING:
        return field(default=spec.default)
    if spec.default_factory is not MISSING:
        return field(default_factory=spec.default_factory)
    return field()


def settings_class(cls: type[Sampler]) -> type:
    """A plain dataclass of `cls`'s settings as a config holds them: `name` (the config name), the class's own fields,
    then those every sampler has (`t_end`), each with its type and default."""
    hints = get_type_hints(cls)
    shared = {spec.name for spec in fields(Sampler)}
    ordered = sorted(fields(cls), key=lambda spec: spec.name in shared)  # stable: the class's order within each part
    specs = [("name", str, field(default=cls.name))]
    specs += [(spec.name, hints[spec.name], _default(spec)) for spec in ordered]
    return make_dataclass(f"{cls.__name__}Settings", specs)


def register_samplers() -> None:
    """Store `sampler_schema/<name>` in Hydra's ConfigStore for every sampler class registered by now (again for one
    stored before: the store keeps the newest)."""
    store = ConfigStore.instance()
    for name, cls in Sampler.registry.items():
        store.store(group=SAMPLER_SCHEMA_GROUP, name=name, node=settings_class(cls))

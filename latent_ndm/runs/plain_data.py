"""What may go into a checkpoint: tensors, plain containers, numbers, strings and None, nothing else.

A resumed run reads its checkpoint with `torch.load(weights_only=True)` (docs/SECURITY.md), which refuses every other
Python object: one OmegaConf `ListConfig` that reached an optimizer's `betas` made the project's own checkpoint
unloadable. `check_plain_data` finds such an object before the file is written, by its place in the checkpoint.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from latent_ndm.errors import TrainingError

__all__ = ["NotPlainDataError", "check_plain_data", "first_non_plain"]

LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)
CONTAINERS = (dict, OrderedDict, list, tuple, set)
TENSORS = (torch.Tensor, torch.nn.Parameter)


class NotPlainDataError(TrainingError):
    """A checkpoint about to be written holds a Python object that a weights-only load refuses."""


def _where(path: str, key: Any) -> str:
    return f"{path}[{key!r}]"


def first_non_plain(obj: Any, path: str = "checkpoint") -> tuple[str, type] | None:
    """The place (e.g. ``checkpoint['optimizer_states'][0]['param_groups'][0]['betas']``) and type of the first
    object in `obj`, depth first, that is not a tensor, a plain container (of exactly the built-in types), a number,
    a string, bytes, None, a dtype, a device or a torch.Size; None when everything is plain. Subclasses of the
    built-in types (a namedtuple, Lightning's AttributeDict) count as objects, as they do for the weights-only
    loader."""
    kind = type(obj)
    if kind in LEAVES or kind in TENSORS:
        return None
    if kind not in CONTAINERS:
        return path, kind
    if kind in (dict, OrderedDict):
        for key, value in obj.items():
            found = first_non_plain(key, f"{path} key") or first_non_plain(value, _where(path, key))
            if found:
                return found
        return None
    for i, value in enumerate(obj):
        found = first_non_plain(value, _where(path, i))
        if found:
            return found
    return None


def check_plain_data(checkpoint: Any, what: str = "checkpoint") -> None:
    """Raise `NotPlainDataError` (one sentence naming the place and the type) unless `checkpoint` is plain data."""
    found = first_non_plain(checkpoint, what)
    if found is None:
        return
    place, kind = found
    raise NotPlainDataError(
        f"{place} is a {kind.__module__}.{kind.__qualname__}, which a weights-only load (how a run resumes) refuses; "
        "a checkpoint holds only tensors, plain containers, numbers and strings: convert it where it is made "
        "(e.g. OmegaConf.to_container, or instantiate with _convert_='all')")

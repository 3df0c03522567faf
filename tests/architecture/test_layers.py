"""The layers of the project, held by a test rather than by habit.

Every module of `data_tools`, `vae` and `latent_ndm` is parsed (ast, not imported) and each of its imports, at any
depth (inside functions too), is checked against the layer the module belongs to:

    data_tools            shards: write, read, inspect         imports no other package of the project
    latent_ndm.common     parts shared across layers (running  torch only, no other module of the project: the
                          sums, the U-Net's and VAE's blocks)  neutral leaf every layer below may import
    vae                   the first stage, a pure torch model  + latent_ndm.common only
    latent_ndm.diffusion  the NDM mathematics                  torch, torchdiffeq, einops, the standard library
    latent_ndm.networks   time-conditioned networks            + the math package
    latent_ndm.model      the latent model (VAE + prior)       + vae (pure torch: no Lightning, Hydra or files)
    latent_ndm.stats / distance   seed statistics, the energy distance: the standard library / torch only
    latent_ndm.errors / progress  user errors; progress lines: the standard library (+ tqdm), used by every layer above
    latent_ndm.optim      EMA and learning-rate schedule       torch only (shared by the training stages and the toy)
    latent_ndm.data / runs / training / evaluation / comparison / toy, then the command-line modules on top.

Imports of the project's own packages sit at the top of a module (none inside a function), so that the arrows
between modules are visible where a reader looks for them; the one exception is the package's public API, which
`latent_ndm/__init__.py` imports on first use (`latent_ndm.load`), so that `import latent_ndm` stays light, the
samplers' Hydra configs, which `latent_ndm.runs.config` registers when a composition first asks for one (they import
torch), and the
command modules (`COMMANDS`), which import what they run inside their functions, so that a command line is checked
before torch and Lightning are imported (`latent_ndm.runs.validate`).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO

PROJECT = ("data_tools", "vae", "latent_ndm")
MATH_LIBS = ("torch", "torchdiffeq", "einops")
COMMON = "latent_ndm.common"  # the neutral leaf: torch parts that the VAE and the layers above it share
APP = ("latent_ndm.errors", "latent_ndm.progress", COMMON, "vae", "data_tools")
LAZY = {("latent_ndm", "latent_ndm.api"),  # (module, import): PEP 562 lazy attributes of a package
        # the samplers' settings (which import torch) registered for Hydra only when a composition asks for them
        ("latent_ndm.runs.config", "latent_ndm.runs.sampler_configs")}
COMMANDS = tuple(f"latent_ndm.{c}" for c in ("train", "sample", "evaluate", "benchmark", "encode", "fid_stats",
                                              "export_vae"))


@dataclass(frozen=True)
class Layer:
    """Which project modules (by dotted prefix) a layer may import; `third_party` None allows any library, else only
    these roots (the standard library is always allowed)."""

    may_import: tuple[str, ...]
    third_party: tuple[str, ...] | None = None


LAYERS: dict[str, Layer] = {
    "data_tools": Layer(("data_tools",)),
    "vae": Layer(("vae", COMMON), third_party=MATH_LIBS),
    "vae.sd_vae": Layer(("vae", COMMON), third_party=(*MATH_LIBS, "diffusers")),  # the optional SD-VAE adapter
    COMMON: Layer((COMMON,), third_party=MATH_LIBS),
    "latent_ndm.diffusion": Layer(("latent_ndm.diffusion",), third_party=MATH_LIBS),
    "latent_ndm.networks": Layer(("latent_ndm.networks", "latent_ndm.diffusion", COMMON), third_party=MATH_LIBS),
    "latent_ndm.model": Layer(("latent_ndm.model", "latent_ndm.diffusion", COMMON, "vae"), third_party=MATH_LIBS),
    "latent_ndm.optim": Layer(("latent_ndm.optim",), third_party=MATH_LIBS),
    "latent_ndm.errors": Layer(()),
    "latent_ndm.progress": Layer((), third_party=("tqdm",)),
    "latent_ndm.stats": Layer(()),
    "latent_ndm.distance": Layer((), third_party=MATH_LIBS),
    "latent_ndm.data": Layer(("latent_ndm.data", *APP)),
    "latent_ndm.runs": Layer(("latent_ndm.runs", "latent_ndm.model", "latent_ndm.diffusion", *APP)),
    "latent_ndm.training": Layer(("latent_ndm.training", "latent_ndm.runs", "latent_ndm.model", "latent_ndm.data",
                                  "latent_ndm.diffusion", "latent_ndm.networks", "latent_ndm.optim", *APP)),
    "latent_ndm.evaluation": Layer(("latent_ndm.evaluation", "latent_ndm.runs", "latent_ndm.model", "latent_ndm.data",
                                    "latent_ndm.diffusion", "latent_ndm.distance", *APP)),
    "latent_ndm.comparison": Layer(("latent_ndm.comparison", "latent_ndm.training", "latent_ndm.evaluation",
                                    "latent_ndm.runs", "latent_ndm.model", "latent_ndm.data", "latent_ndm.diffusion",
                                    "latent_ndm.stats", "latent_ndm.distance", *APP)),
    "latent_ndm.toy": Layer(("latent_ndm.toy", "latent_ndm.diffusion", "latent_ndm.networks", "latent_ndm.stats",
                             "latent_ndm.distance", "latent_ndm.optim")),
    "latent_ndm": Layer(("latent_ndm", "vae", "data_tools")),  # the command-line modules on top
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The most specific layer whose prefix names `module`."""
    matches = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return max(matches, key=len)


def imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int, bool]]:
    """(imported module, line, at the top level of the module) for every import statement; relative imports are
    resolved against `module`."""
    top = {id(node) for node in getattr(tree, "body", [])}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names = [f"{base}.{alias.name}" for alias in node.names] if base in PROJECT else [base]
            found += [(name, node.lineno, id(node) in top) for name in names]
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import of `source` (the module `module`) that leaves its layer, as readable lines."""
    layer = LAYERS[layer_of(module)]
    out = []
    for name, line, at_top in imports(ast.parse(source), module, is_package):
        root = name.split(".")[0]
        where = f"{module}:{line} imports {name}"
        if root in PROJECT:
            if not _within(name, layer.may_import):
                out.append(f"{where}, outside its layer {layer_of(module)} (may import {layer.may_import})")
            elif not at_top and (module, name) not in LAZY and module not in COMMANDS:
                out.append(f"{where} inside a function; project imports belong at the top of the module")
        elif layer.third_party is not None and root not in sys.stdlib_module_names and root != "__future__" \
                and root not in layer.third_party:
            out.append(f"{where}: the {layer_of(module)} layer imports only {layer.third_party} and the standard "
                       "library")
    return out


def project_modules() -> list[Path]:
    return sorted(p for package in PROJECT for p in (REPO / package).rglob("*.py"))


def test_every_module_imports_downward_only() -> None:
    problems = [v for path in project_modules()
                for v in violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")]
    assert not problems, "\n".join(problems)


def test_every_module_belongs_to_a_layer_and_no_module_is_too_long() -> None:
    long = []
    for path in project_modules():
        assert layer_of(module_name(path)) in LAYERS
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > 400:
            long.append(f"{path.relative_to(REPO)}: {lines} lines")
    assert not long, "modules over ~400 lines: " + ", ".join(long)


@pytest.mark.parametrize(("module", "source"), [
    # the crossings that once existed (issue "Layers you can see"), each of which must fail again
    ("vae.model", "from latent_ndm.units import nats_to_bpd"),
    ("vae.networks", "from latent_ndm.networks.unet_blocks import Upsample"),
    ("latent_ndm.networks.unet", "from vae.networks import Upsample"),
    ("latent_ndm.common.blocks", "from vae.networks import Decoder"),
    ("vae.diagnostics", "from latent_ndm.stats import mean_and_sem"),
    ("data_tools.encode", "def encode_images():\n    from latent_ndm.data_streams import SampleDecoder"),
    ("data_tools.encode", "def encode_shards():\n    from vae import VAE"),
    ("latent_ndm.diffusion.samplers", "from latent_ndm.training.ndm_loss import encoder_posterior"),
    ("latent_ndm.diffusion.transforms", "import lightning as L"),
    ("latent_ndm.diffusion.likelihood", "from omegaconf import DictConfig"),
    ("latent_ndm.model.latent", "from hydra.utils import instantiate"),
    ("latent_ndm.evaluation.runs", "from latent_ndm.training.export import TRAIN_CONFIG_NAME"),
    ("latent_ndm.evaluation.runner", "from ..training import ndm_stage"),
    ("latent_ndm.training.ndm_stage", "from latent_ndm.evaluation.runner import evaluate"),
    ("latent_ndm.data.module", "from latent_ndm.training.builders import build_trainer"),
    ("latent_ndm.runs.load", "def load_run():\n    from latent_ndm.model import LatentModel"),
    ("latent_ndm.toy.train", "from latent_ndm.training.ema import EMA"),
    ("latent_ndm.diffusion.schedule", "from tests.support.oracle import GaussianOracleDenoiser"),
])
def test_the_old_crossings_would_fail(module: str, source: str) -> None:
    assert violations(source, module), f"{source!r} in {module} passed the layer check"


def test_allowed_imports_pass() -> None:
    assert not violations("import math\nimport torch\nfrom einops import rearrange\nfrom torchdiffeq import odeint\n"
                          "from latent_ndm.diffusion.checks import append_dims", "latent_ndm.diffusion.ode")
    assert not violations("from . import terms\nfrom .terms import NDMLoss", "latent_ndm.diffusion.objectives",
                          is_package=True)
    assert not violations("import lightning\nfrom latent_ndm.model import LatentModel\nfrom vae import VAE",
                          "latent_ndm.training.ndm_module")


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Every call of `<something>.name(...)` or `name(...)` in a parsed module."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) == name or getattr(node.func, "id", None) == name)]


def test_files_from_others_reach_only_the_data_loaders() -> None:
    """Hydra's `instantiate` is called in one module, behind the allow-list (`latent_ndm/runs/targets.py`), and every
    `torch.load` reads with weights_only=True (docs/SECURITY.md)."""
    problems = []
    for path in project_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = module_name(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "hydra.utils" \
                    and module != "latent_ndm.runs.targets" and any(a.name == "instantiate" for a in node.names):
                problems.append(f"{module}:{node.lineno} imports hydra's instantiate; use instantiate_trusted")
        for call in _calls(tree, "load"):
            if getattr(call.func, "value", None) is not None and getattr(call.func.value, "id", None) == "torch":
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords)
                if not safe:
                    problems.append(f"{module}:{call.lineno} calls torch.load without weights_only=True")
    assert not problems, "\n".join(problems)

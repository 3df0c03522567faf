"""Offline LPIPS: the perceptual distance of Zhang et al. (2018) built without any download.

LPIPS = a torchvision backbone (ImageNet weights, e.g. `alexnet-owt-7be5be79.pth`) + linear layers shipped inside
the `lpips` package (`lpips/weights/v0.1/<net>.pth`). The backbone file is read from `backbone_path` (the file or
a folder holding it) or from the torch hub cache (`$TORCH_HOME/hub/checkpoints`, default
`~/.cache/torch/hub/checkpoints`); it is never downloaded. `random_backbone=True` (tests) skips it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latent_ndm.errors import TrainingError
from latent_ndm.runs.export import UnsafeFileError, load_torch_file

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}  # torchvision IMAGENET1K_V1
MIN_SIDE = 64  # AlexNet's pooling needs at least ~32 px; smaller images are upsampled to this side


class LPIPSWeightsMissing(TrainingError, FileNotFoundError):
    """The backbone or linear-layer weights of LPIPS are not on disk."""


def backbone_file(net: str, backbone_path: str | Path | None = None) -> Path:
    """Where the backbone weights of `net` are expected: `backbone_path` (file or folder) or the hub cache."""
    if net not in BACKBONE_FILES:
        raise TrainingError(f"LPIPS net must be one of {sorted(BACKBONE_FILES)}, got {net!r}")
    name = BACKBONE_FILES[net]
    if backbone_path is None:
        return Path(torch.hub.get_dir()) / "checkpoints" / name
    path = Path(backbone_path).expanduser()
    return path / name if path.is_dir() or not path.suffix else path


def lpips_available(net: str = "alex", backbone_path: str | Path | None = None) -> bool:
    """True when `load_lpips(net, backbone_path)` will find its weights."""
    return backbone_file(net, backbone_path).is_file() and _linear_file(net).is_file()


def _linear_file(net: str) -> Path:
    import lpips  # lazily: importing it pulls in torchvision

    return Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"


class LPIPS(nn.Module):
    """d(x, y) per image, shape (B,), for images in [-1, 1]; frozen, eval mode, no gradients to its weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIDE:
            size = [MIN_SIDE * s // min(x.shape[-2:]) for s in x.shape[-2:]]
            x, y = (F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in (x, y))
        return self.model(x, y).flatten()

    def train(self, mode: bool = True) -> LPIPS:
        super().train(mode)
        self.model.eval()
        return self


def load_lpips(net: str = "alex", backbone_path: str | Path | None = None, random_backbone: bool = False) -> LPIPS:
    """Build LPIPS offline; raise `LPIPSWeightsMissing` (one sentence naming the file) when weights are absent."""
    import lpips

    path = backbone_file(net, backbone_path)
    if not random_backbone and not path.is_file():
        raise LPIPSWeightsMissing(
            f"LPIPS needs the {net} backbone weights {path.name}, which are not at {path}: copy that file "
            f"(torchvision's ImageNet weights) into {path.parent} or set stage.lpips.backbone_path=/path/to/{path.name}"
            f", or set stage.lpips.weight=0 to train without LPIPS."
        )
    if not _linear_file(net).is_file():
        raise LPIPSWeightsMissing(f"the lpips package lacks its linear weights {_linear_file(net)}; reinstall lpips.")
    model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # linear layers from the package, no download
    if not random_backbone:
        try:
            state = load_torch_file(path)
        except UnsafeFileError as err:
            raise LPIPSWeightsMissing(str(err)) from err
        _load_backbone(model.net, state)
    return LPIPS(model)


def _load_backbone(trunk: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy torchvision `features.<i>.*` weights into lpips' slices (`slice<k>.<i>.*`)."""
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    mapped = {}
    for slice_name, block in trunk.named_children():
        for index, _ in block.named_children():
            mapped.update({f"{slice_name}.{k}": v for k, v in features.items() if k.split(".")[0] == index})
    trunk.load_state_dict(mapped, strict=True)

"""A small deterministic feature extractor registered with torch-fidelity's extension API (no downloads).

A fixed random 3x3 convolution (seed 0, or a state_dict from ``feature_extractor_weights_path``) on images resized
to 32x32, then ReLU and per-channel mean ("8") or mean and standard deviation ("16") over space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_fidelity import FeatureExtractorBase, register_feature_extractor

STAND_IN = "fid-stand-in"


class StandInExtractor(FeatureExtractorBase):
    INPUT_IMAGE_SIZE = 32

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: object) -> None:
        super().__init__(name, features_list)
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.5)
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=generator) * 0.1)
        if feature_extractor_weights_path is not None:
            self.load_state_dict(torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True))
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("8", "16")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "16"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W) images, got {x.dtype} {tuple(x.shape)}")
        size = (self.INPUT_IMAGE_SIZE, self.INPUT_IMAGE_SIZE)
        h = F.interpolate(x.float() / 127.5 - 1.0, size=size, mode="bilinear", align_corners=False)
        h = torch.relu(self.conv(h))
        mean, std = h.mean(dim=(2, 3)), h.std(dim=(2, 3))
        features = {"8": mean, "16": torch.cat([mean, std], dim=1)}
        return tuple(features[name] for name in self.features_list)


def register(name: str = STAND_IN) -> str:
    """Register the stand-in under `name` once per process (torch-fidelity refuses a second registration)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, StandInExtractor)
    return name

"""benchmarks/ndm_step_time: every variant is the prior `stage=ndm` builds, one JSON line with a ratio per variant.
No timing is asserted (speed is measured on demand, not tested)."""

from __future__ import annotations

import json

import pytest

from benchmarks import ndm_step_time
from latent_ndm.runs.build import build_ndm_prior
from latent_ndm.runs.config import compose_config


def test_default_is_exactly_the_prior_of_stage_ndm_and_the_json_has_a_ratio_per_variant(
        capsys: pytest.CaptureFixture[str]) -> None:
    result = ndm_step_time.main(["--steps", "1", "--warmup", "0", "--batch", "2", "--threads", "1",
                                 "--only", "separable_w0.5", "--variant", "jvp_tiny=ndm/transform=neural,"
                                 "ndm.F_size.width=0.25"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line["time_ratio"]) == {"lsgm", "default", "separable_w0.5", "jvp_tiny"}
    assert line["time_ratio"]["lsgm"] == 1.0
    assert all(r > 0 for r in line["time_ratio"].values())
    assert line["variants"]["lsgm"]["F_params"] == 0
    assert line["variants"]["jvp_tiny"]["transform"] == "neural"
    assert line["memory_mib"]["default"] > line["memory_mib"]["lsgm"] > 0      # F's passes save activations
    # `default` is the prior of `python -m latent_ndm.train stage=ndm` with no override, on the default VAE's latents
    cfg = compose_config("train", ["stage=ndm", "ndm.latent.channels=4", "ndm.latent.resolution=16"])
    prior = build_ndm_prior(cfg.ndm)
    info = result["variants"]["default"]
    assert info["F_params"] == sum(p.numel() for p in prior.transform.parameters())
    assert info["denoiser_params"] == sum(p.numel() for p in prior.denoiser.parameters())
    assert info["latent_shape"] == [4, 16, 16]
    assert info["F_params"] < result["variants"]["separable_w0.5"]["F_params"]   # the default F is a quarter wide


def test_a_malformed_variant_is_refused() -> None:
    with pytest.raises(SystemExit):
        ndm_step_time.main(["--variant", "no-overrides-here"])

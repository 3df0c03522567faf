"""benchmarks/ndm_step_time: every variant is the prior `stage=ndm` builds, one JSON line with a ratio per variant.
No timing is asserted (speed is measured on demand, not tested): the report's fields (time with its interquartile
range, FLOPs, their ratios, the per-part split, the baseline's repeat), and that profiling changes no number."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmarks import ndm_step_time
from latent_ndm.comparison.step_cost import CallRanges, TrainStep, profile_parts
from latent_ndm.runs.build import build_ndm_prior
from latent_ndm.runs.config import compose_config


def test_default_is_exactly_the_prior_of_stage_ndm_and_the_json_has_a_ratio_per_variant(
        capsys: pytest.CaptureFixture[str]) -> None:
    result = ndm_step_time.main(["--steps", "1", "--warmup", "0", "--batch", "2", "--threads", "1",
                                 "--profile-steps", "0", "--only", "separable_w0.5", "--variant",
                                 "jvp_tiny=ndm/transform=neural,ndm.F_size.width=0.25"])
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


def test_the_report_has_time_flops_their_ratios_a_per_part_split_and_a_repeat_of_the_baseline(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The fields, not the timings: at the tiniest size (1 timed step, 1 profiled step, batch 2, no memory)."""
    result = ndm_step_time.main(["--steps", "1", "--warmup", "0", "--batch", "2", "--threads", "1", "--no-memory",
                                 "--profile-steps", "1", "--only", "neural_w0.5"])
    out = capsys.readouterr().out
    line = json.loads(out.strip().splitlines()[-1])
    names = {"lsgm", "default", "neural_w0.5"}
    assert set(line["flops"]) == set(line["flop_ratio"]) == set(line["time_over_flop_ratio"]) == names
    assert line["flop_ratio"]["lsgm"] == 1.0 and line["flops"]["lsgm"] < line["flops"]["default"]
    for name in names:
        q1, q3 = line["iqr_step_s"][name]
        assert q1 <= line["median_step_s"][name] <= q3
        assert line["time_over_flop_ratio"][name] == pytest.approx(line["time_ratio"][name] / line["flop_ratio"][name])
        parts = line["parts_s"][name]
        assert list(parts) == ["denoiser", "F at x", "F at x_hat", "loss (rest)", "backward", "optimizer", "total"]
        assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
        assert parts["denoiser"] > 0 and parts["backward"] > 0 and parts["optimizer"] > 0
    assert line["parts_s"]["default"]["F at x"] > 0 and line["parts_s"]["default"]["F at x_hat"] > 0
    repeat = line["repeat"]
    assert repeat["variant"] == "lsgm" and len(repeat["step_s"]) == 1
    assert repeat["ratio"] == pytest.approx(repeat["median_step_s"] / line["median_step_s"]["lsgm"])
    assert repeat["within_5pct"] == (abs(repeat["ratio"] - 1) <= 0.05)
    assert "second median / first" in out and "per part, ms per step" in out
    assert result["variants"]["lsgm"]["F_params"] == 0


def test_profiling_a_step_changes_no_number_and_leaves_the_model_as_it_was() -> None:
    """Two identical models, two steps each: plain, and under `profile_parts` (one start-up step + one recorded);
    the weights after are bit-identical and the wrapped forward is gone."""
    def make() -> tuple[TrainStep, nn.Module]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 1))
        x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
        return TrainStep(lambda: model(x).square().mean(), list(model.parameters()),
                         torch.optim.Adam(model.parameters(), lr=1e-2), [x]), model

    plain, a = make()
    plain()
    plain()
    profiled, b = make()
    parts = profile_parts(profiled, [CallRanges([(b[0], "forward"), (b[2], "forward")], ["first", "second"])],
                          repeats=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert "forward" not in vars(b[0]) and "forward" not in vars(b[2])
    assert set(parts) == {"first", "second", "loss (rest)", "backward", "optimizer", "total"}
    assert parts["first"] > 0 and parts["second"] > 0
    with pytest.raises(ValueError, match="repeats >= 1"):
        profile_parts(profiled, [], repeats=0)

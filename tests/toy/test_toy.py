"""The 2D checkerboard demo: the data sampler, the figure's arrow scale,
F's own learning rate, and a smoke run of `python -m latent_ndm.toy` (four models) over two seeds."""

import json
import math

import torch

from latent_ndm.toy.__main__ import main
from latent_ndm.toy.data import (
    CHECKERBOARD_ENTROPY_NATS,
    filled_squares,
    fraction_on_board,
    sample_checkerboard,
    square_id,
)
from latent_ndm.toy.plot import magnification


def test_checkerboard_points_lie_in_filled_squares_and_are_seeded():
    x, square = sample_checkerboard(5000, seed=3)
    assert x.shape == (5000, 2) and square.shape == (5000,)
    corners = filled_squares()[square].float()
    assert ((x >= corners) & (x <= corners + 1)).all()
    assert torch.equal(square_id(x), square)
    assert fraction_on_board(x) == 1.0
    assert set(square.tolist()) == set(range(8))
    corners_ij = filled_squares() + 2
    assert ((corners_ij.sum(1) % 2) == 0).all() and len(set(map(tuple, corners_ij.tolist()))) == 8
    x2, square2 = sample_checkerboard(5000, seed=3)
    assert torch.equal(x, x2) and torch.equal(square, square2)
    assert not torch.equal(x, sample_checkerboard(5000, seed=4)[0])
    assert math.isclose(CHECKERBOARD_ENTROPY_NATS, math.log(8))


def test_square_id_marks_empty_squares_and_off_board_points():
    pts = torch.tensor([[-1.5, -1.5], [-0.5, -1.5], [0.5, 0.5], [2.5, 0.0], [-2.2, 1.0]])
    ids = square_id(pts)
    assert ids[0] >= 0 and ids[2] >= 0  # (i, j) = (0, 0) and (2, 2): filled
    assert ids[1] == -1 and ids[3] == -1 and ids[4] == -1  # (1, 0) is empty; the last two are off the board


def test_toy_cli_smoke(tmp_path, monkeypatch):
    import latent_ndm.toy.__main__ as toy_main
    import latent_ndm.toy.plot as toy_plot

    drawn = {}
    real_arrows = toy_plot._arrows

    def arrows(ax, x, F, square, k, n=250):  # record the F-over-t panels' arrows
        drawn.setdefault("k", []).append(k)
        real_arrows(ax, x, F, square, k, n)

    monkeypatch.setattr(toy_plot, "_arrows", arrows)
    argv = ["--steps", "30", "--batch", "128", "--out", str(tmp_path), "--eval-points", "64",
            "--nelbo-repeats", "2", "--samples", "256", "--trajectories", "4", "--seeds", "2", "--seed", "5",
            "--transform-lr", "1e-2", "--transform-hidden", "32", "--transform-depth", "1"]
    assert main(argv) == 0
    assert (tmp_path / "toy.png").stat().st_size > 10_000
    assert len(drawn["k"]) == len(toy_main.F_TIMES) - 1  # one arrow panel per t > 0, one magnification
    assert len(set(drawn["k"])) == 1
    report = json.loads((tmp_path / "toy.json").read_text())
    assert report["seeds"] == [5, 6] and report["config"]["transform_lr"] == 1e-2
    assert report["model_spec"]["transform_hidden"] == 32 and report["model_spec"]["transform_depth"] == 1
    assert [set(s) for s in report["per_seed"]] == [{"ndm", "baseline", "nfdm", "nfdm-straight"}] * 2
    for per_model in report["per_seed"]:
        for name, r in per_model.items():
            assert r["is_bound"] == (name != "nfdm-straight")
            if r["is_bound"]:
                values = [r["nelbo"]["total"]["mean"], r["nelbo"]["total"]["se"], r["nelbo"]["rec"],
                          r["nelbo"]["diff"]["mean"], r["nelbo"]["prior"], r["ode_nll_bound"]["mean"],
                          r["ode_nll_bound"]["se"], r["train_seconds"]]
                assert all(math.isfinite(v) for v in values), r
                assert r["ode_nll_nfe"] > 0
            else:
                assert "nelbo" not in r and "ode_nll_bound" not in r  # a regression is never reported as a bound
            assert r["sample_nfe"] > 0 and 0.0 <= r["samples_on_board"] <= 1.0
            assert set(r["energy_distance"]) == {"ode", "1", "2", "4", "8"}
            assert all(math.isfinite(v) and v > -0.05 for v in r["energy_distance"].values())
    summary = report["summary"]
    assert summary["n_seeds"] == 2
    for name in ("ndm", "baseline", "nfdm"):
        for metric in ("nelbo", "ode_nll_bound"):
            est = summary["models"][name][metric]
            per_seed = [s[name]["nelbo"]["total"]["mean"] if metric == "nelbo" else s[name][metric]["mean"]
                        for s in report["per_seed"]]
            assert est["values"] == per_seed and est["n"] == 2 and est["se"] >= 0
            assert math.isclose(est["mean"], sum(per_seed) / 2)
    assert "nelbo" not in summary["models"]["nfdm-straight"]
    for (a, b), label in ((("ndm", "baseline"), "NDM - baseline"), (("nfdm", "ndm"), "NFDM - ndm")):
        for metric in ("nelbo", "ode_nll_bound"):
            paired = summary["paired_difference"][f"{a} - {b}"][metric]
            first, second = summary["models"][a][metric]["values"], summary["models"][b][metric]["values"]
            assert paired["differences"] == [x - y for x, y in zip(first, second, strict=True)]
            assert paired["verdict"].startswith(label)
    straight = summary["paired_difference"]["nfdm-straight - nfdm"]
    assert set(straight) == {f"energy_distance_{k}" for k in ("ode", "1", "2", "4", "8")}
    assert straight["energy_distance_1"]["verdict"].startswith("NFDM-straight - NFDM")
    assert set(summary["F_displacement"]) == {f"{t:g}" for t in toy_main.F_TIMES}
    assert summary["F_displacement"]["0"]["mean"] == 0.0


def test_magnification_is_round_and_makes_arrows_visible():
    assert magnification(0.0) == 1.0
    assert magnification(0.5) == 1.0
    for d in (0.001, 0.011, 0.045, 0.1):
        k = magnification(d)
        assert k * d >= 0.175 and k * d < 0.9
        assert k in {1, 2, 5, 10, 20, 50, 100, 200, 500}


def test_transform_learning_rate_applies_to_phi_only():
    from latent_ndm.diffusion.schedule import VPSchedule
    from latent_ndm.toy.data import CHECKERBOARD_STD
    from latent_ndm.toy.train import ModelSpec, build_objective, build_process, train

    schedule = VPSchedule()
    process = build_process(True, CHECKERBOARD_STD, ModelSpec(hidden=16, depth=1, transform_hidden=8), schedule, 0)
    phi0 = [p.detach().clone() for p in process.transform.parameters()]

    def data(batch, step):
        return sample_checkerboard(batch, seed=step)[0]

    # a zero learning rate for phi keeps F = identity while the denoiser trains
    out = train(process, build_objective(schedule, 1e-3), data, steps=3, batch=32, transform_lr=0.0, ema_decay=0.0)
    assert all(torch.equal(a, b) for a, b in zip(phi0, out.process.transform.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(
        build_process(True, CHECKERBOARD_STD, ModelSpec(hidden=16, depth=1, transform_hidden=8), schedule, 0)
        .denoiser.parameters(), out.process.denoiser.parameters(), strict=True))


def test_models_default_to_the_four_and_ndm_straight_is_an_extra() -> None:
    """`--models` defaults to baseline, NDM, NFDM, NFDM-straight; NDM-straight (the straight regression on NDM's
    forward process, the schedule's noise) is chosen by name; an unknown name is refused."""
    import pytest

    from latent_ndm.toy.__main__ import MODELS, parse_args

    assert sorted(parse_args([]).models) == ["baseline", "ndm", "nfdm", "nfdm-straight"]
    assert parse_args(["--models", "ndm,ndm-straight"]).models == ["ndm", "ndm-straight"]
    m = MODELS["ndm-straight"]
    assert m.learn_transform and not m.learn_noise and m.straight and not m.is_bound
    with pytest.raises(SystemExit):
        parse_args(["--models", "ndm,lsgm"])

"""The 2D checkerboard demo: the data sampler, and a smoke run of `python -m latent_ndm.toy`."""

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


def test_toy_cli_smoke(tmp_path):
    argv = ["--steps", "30", "--batch", "128", "--out", str(tmp_path), "--eval-points", "64",
            "--nelbo-repeats", "2", "--samples", "256", "--trajectories", "4"]
    assert main(argv) == 0
    assert (tmp_path / "toy.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "toy.json").read_text())
    assert set(report["models"]) == {"ndm", "baseline"}
    for r in report["models"].values():
        values = [r["nelbo"]["total"]["mean"], r["nelbo"]["total"]["se"], r["nelbo"]["rec"],
                  r["nelbo"]["diff"]["mean"], r["nelbo"]["prior"], r["ode_nll_bound"]["mean"],
                  r["ode_nll_bound"]["se"], r["train_seconds"]]
        assert all(math.isfinite(v) for v in values), r
        assert r["ode_nll_nfe"] > 0 and r["sample_nfe"] > 0
        assert 0.0 <= r["samples_on_board"] <= 1.0

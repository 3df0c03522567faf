"""Time-conditioned networks: shapes, initialisation, input checks, and derivatives in t.

The transform F(x, t) = x + t G(x, t) is differentiated in t with forward-mode AD and the loss is then
back-propagated through dF/dt (reverse-over-forward), so the derivative tests are the important ones:
jvp in t against central differences, parameter / input gradients of the tangent against finite
differences, the double-vjp jvp against torch.func.jvp, and checkpointing against no checkpointing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.autograd import forward_ad as fwAD
from torch.nn import functional as F

from latent_ndm.networks import SinusoidalTimeEmbedding, TimeMLP, UNet
from latent_ndm.networks.mlp import LayerNorm
from latent_ndm.networks.unet_blocks import AttentionBlock, group_count, softmax

H_FD = 1e-4  # central-difference step in t (float64)


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    """Seed, and use one thread: these tiny networks only lose time to thread contention."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_(net: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter (the init is partly zero) with seeded generic random values, in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if p.ndim > 1:
                p.copy_(noise / math.sqrt(p[0].numel()))
            else:  # 1-D weights belong to norms: keep them near 1
                p.copy_(0.1 * noise + (1.0 if name.endswith("weight") else 0.0))
    return net


def tiny_unet(**kw: object) -> UNet:
    args: dict = dict(in_channels=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                      attn_resolutions=(4,), resolution=8, num_groups=4, num_heads=2, time_scale=5.0)
    args.update(kw)
    return UNet(**args)


def tiny_mlp(**kw: object) -> TimeMLP:
    args: dict = dict(dim=3, hidden=16, depth=2, time_dim=8, time_scale=5.0)
    args.update(kw)
    return TimeMLP(**args)


def make_case(kind: str, batch: int = 3) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A randomised float64 network and inputs (x, t) of batch size `batch`."""
    if kind == "mlp":
        net, x = tiny_mlp(), torch.randn(batch, 3, dtype=torch.float64)
    else:
        net, x = tiny_unet(), torch.randn(batch, 2, 8, 8, dtype=torch.float64)
    net = randomize_(net.double())
    t = torch.rand(batch, dtype=torch.float64) * 0.8 + 0.1
    return net, x, t


def dF_dt(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, dF/dt) for F(x, t) = x + t G(x, t) via torch.func.jvp, tangent 1 per example."""

    def F_of_t(s: torch.Tensor) -> torch.Tensor:
        return x + s.reshape(-1, *([1] * (x.ndim - 1))) * net(x, s)

    return torch.func.jvp(F_of_t, (t,), (torch.ones_like(t),))


def central_difference(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    def F_of_t(s: torch.Tensor) -> torch.Tensor:
        return x + s.reshape(-1, *([1] * (x.ndim - 1))) * net(x, s)

    with torch.no_grad():
        return (F_of_t(t + H_FD) - F_of_t(t - H_FD)) / (2 * H_FD)


# ----------------------------------------------------------------------------- time embedding
def test_time_embedding_values_and_shape() -> None:
    emb = SinusoidalTimeEmbedding(6, scale=10.0, max_period=100.0)
    t = torch.tensor([0.0, 0.25, 1.0, 0.5, 0.75])
    e = emb(t)
    assert e.shape == (5, 6) and e.dtype == torch.float32
    torch.testing.assert_close(e[0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    omega = torch.tensor([1.0, 100.0 ** (-1 / 3), 100.0 ** (-2 / 3)])
    torch.testing.assert_close(e[2], torch.cat([torch.cos(10 * omega), torch.sin(10 * omega)]))
    assert emb(t.double()).dtype == torch.float64
    assert len(emb.state_dict()) == 0
    for bad in (0, 5):
        with pytest.raises(ValueError, match="even"):
            SinusoidalTimeEmbedding(bad)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        emb(t[:, None])


def test_time_embedding_is_smooth() -> None:
    """jvp of e(t) = central differences = the analytic derivative s omega [-sin, cos]."""
    emb = SinusoidalTimeEmbedding(16, scale=10.0)
    t = torch.rand(7, dtype=torch.float64)
    _, de = torch.func.jvp(emb, (t,), (torch.ones_like(t),))
    fd = (emb(t + H_FD) - emb(t - H_FD)) / (2 * H_FD)
    torch.testing.assert_close(de, fd, rtol=1e-6, atol=1e-7)
    s_omega = 10.0 * emb.frequencies(t.device, t.dtype)
    arg = 10.0 * t[:, None] * emb.frequencies(t.device, t.dtype)
    exact = torch.cat([-s_omega * torch.sin(arg), s_omega * torch.cos(arg)], dim=-1)
    torch.testing.assert_close(de, exact, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- shapes and init
@pytest.mark.parametrize("depth", [1, 3])
def test_mlp_shape_and_zero_init(depth: int) -> None:
    x, t = torch.randn(5, 3), torch.rand(5)
    net = tiny_mlp(depth=depth)
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0
    out = tiny_mlp(depth=depth, zero_init_output=False)(x, t)
    assert out.shape == x.shape and out.abs().min() > 0
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        net(torch.randn(5, 4), t)
    with pytest.raises(ValueError, match=r"t must have shape"):
        net(x, t[:4])


@pytest.mark.parametrize(
    "channel_mult, attn_resolutions, out_channels",
    [((1,), (), None), ((1, 2), (4,), 5), ((1, 2, 2), (8, 2), None), ((2, 1, 1), (), 1)],
)
def test_unet_shapes(channel_mult: tuple[int, ...], attn_resolutions: tuple[int, ...],
                     out_channels: int | None) -> None:
    net = tiny_unet(channel_mult=channel_mult, attn_resolutions=attn_resolutions, out_channels=out_channels,
                    num_res_blocks=2)
    x, t = torch.randn(3, 2, 8, 8), torch.rand(3)
    out = net(x, t)
    assert out.shape == (3, out_channels or 2, 8, 8)
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv
    n_attn = sum(isinstance(m, AttentionBlock) for m in net.modules())
    assert n_attn == 1 + 5 * len(attn_resolutions)  # middle + 2 down + 3 up per attention level
    out = randomize_(net)(x, t)
    assert torch.isfinite(out).all() and out.abs().mean() > 1e-3


def test_unet_no_zero_init_and_group_clamp() -> None:
    net = tiny_unet(base_channels=12, num_groups=32, zero_init_output=False)
    assert net.norm_out.num_groups == 12 and group_count(24, 32) == 24 and group_count(36, 32) == 18
    out = net(torch.randn(1, 2, 8, 8), torch.rand(1))
    assert out.abs().mean() > 1e-4


def test_unet_input_checks() -> None:
    net = tiny_unet()
    with pytest.raises(ValueError, match=r"built for 8x8 inputs, got 16x16"):
        net(torch.randn(2, 2, 16, 16), torch.rand(2))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        net(torch.randn(2, 2, 8, 8), torch.rand(3))
    with pytest.raises(ValueError, match="never reached"):
        tiny_unet(attn_resolutions=(16,))
    with pytest.raises(ValueError, match="multiple of"):
        tiny_unet(resolution=6, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="num_heads"):
        tiny_unet(num_heads=3)


def test_attention_matches_sdpa_reference() -> None:
    """The einsum attention equals torch's scaled_dot_product_attention on the same q, k, v."""
    block = randomize_(AttentionBlock(8, num_heads=2, num_groups=4).double())
    x = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    q, k, v = block.qkv(block.norm(x)).reshape(3, 3, 2, 4, 16).unbind(1)  # (B, heads, d, N)
    ref = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    ref = x + block.proj(ref.transpose(-1, -2).reshape(3, 8, 4, 4))
    torch.testing.assert_close(block(x), ref, rtol=1e-10, atol=1e-10)


def _grad_of_tangent(op, z0: torch.Tensor, a: torch.Tensor, w: torch.Tensor, forward_ad: bool) -> torch.Tensor:  # noqa: ANN001
    """d/dz0 of sum(w * d/ds op(z0 + s a)) at s = 0, reverse-over-forward with torch.func or forward_ad."""
    z0 = z0.clone().requires_grad_(True)
    s, one = torch.zeros((), dtype=z0.dtype), torch.ones((), dtype=z0.dtype)
    if forward_ad:
        with fwAD.dual_level():
            d_out = fwAD.unpack_dual(op(z0 + fwAD.make_dual(s, one) * a)).tangent
    else:
        d_out = torch.func.jvp(lambda u: op(z0 + u * a), (s,), (one,))[1]
    return torch.autograd.grad((w * d_out).sum(), z0)[0]


@pytest.mark.parametrize("forward_ad", [False, True])
@pytest.mark.parametrize("which", ["layer_norm", "softmax"])
def test_composite_norm_and_softmax(which: str, forward_ad: bool) -> None:
    """Same values as torch's fused ops, and exact reverse-over-forward gradients (checked by FD).

    torch's fused layer_norm gets this gradient wrong and its softmax fails under forward_ad: the reasons
    the networks use these composite versions.
    """
    z0, a, w = torch.randn(3, 3, 6, dtype=torch.float64).unbind(0)
    ln = LayerNorm(6).double()
    ours, ref = (ln, nn.LayerNorm(6).double()) if which == "layer_norm" else (softmax, nn.Softmax(-1))
    torch.testing.assert_close(ours(z0), ref(z0), rtol=1e-12, atol=1e-12)
    g = _grad_of_tangent(ours, z0, a, w, forward_ad)
    eps, fd = 1e-6, torch.zeros_like(z0)
    for idx in [(0, 0), (1, 3), (2, 5)]:
        e = torch.zeros_like(z0)
        e[idx] = eps
        d_plus = torch.func.jvp(lambda u, z=z0 + e: ours(z + u * a), (torch.zeros(()).double(),),
                                (torch.ones(()).double(),))[1]
        d_minus = torch.func.jvp(lambda u, z=z0 - e: ours(z + u * a), (torch.zeros(()).double(),),
                                 (torch.ones(()).double(),))[1]
        fd[idx] = (w * (d_plus - d_minus)).sum() / (2 * eps)
        assert g[idx].item() == pytest.approx(fd[idx].item(), rel=1e-6, abs=1e-9)


def test_unet_autocast_bfloat16() -> None:
    net, x = randomize_(tiny_unet()), torch.randn(2, 2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, torch.rand(2))
    assert out.shape == x.shape and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- derivatives in t
@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_jvp_in_t_matches_central_differences(kind: str) -> None:
    net, x, t = make_case(kind)
    F_t, dF = dF_dt(net, x, t)
    torch.testing.assert_close(F_t, x + t.reshape(-1, *([1] * (x.ndim - 1))) * net(x, t), rtol=0, atol=0)
    assert dF.abs().max() > 1e-2  # the test is not trivially satisfied
    # the O(h^2) truncation error of central differences is ~1e-8 |dF| here (it scales as h^2)
    torch.testing.assert_close(dF, central_difference(net, x, t), rtol=1e-6, atol=1e-6 * dF.abs().max().item())


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_gradients_flow_through_the_tangent(kind: str) -> None:
    """d/d theta and d/dx of L = sum(w * dF/dt): finite, non-zero, and equal to finite differences."""
    net, x, t = make_case(kind)
    x.requires_grad_(True)
    w = torch.randn_like(x)
    loss = (w * dF_dt(net, x, t)[1]).sum()
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(loss, [x, *params.values()])
    for name, g in zip(["x", *params], grads, strict=True):
        assert torch.isfinite(g).all(), name
    n_zero = [name for name, g in zip(params, grads[1:], strict=True) if g.abs().max() == 0]
    assert not n_zero, f"parameters without gradient through dF/dt: {n_zero}"

    def loss_at() -> float:
        with torch.no_grad():
            return (w * dF_dt(net, x.detach(), t)[1]).sum().item()

    probes = [("x", x, grads[0])]
    name = "time_mlp.0.weight"  # the first layer of the time branch, deepest from the output
    probes.append((name, params[name], grads[1 + list(params).index(name)]))
    for label, tensor, g in probes:
        idx = (0,) * tensor.ndim
        eps, saved = 1e-6, tensor.detach()[idx].item()
        with torch.no_grad():
            tensor[idx] = saved + eps
            up = loss_at()
            tensor[idx] = saved - eps
            down = loss_at()
            tensor[idx] = saved
        fd = (up - down) / (2 * eps)
        assert abs(g[idx].item()) > 1e-6, label
        assert fd == pytest.approx(g[idx].item(), rel=1e-5, abs=1e-9), label


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_double_vjp_jvp_agrees_with_func_jvp(kind: str) -> None:
    """torch.autograd.functional.jvp(create_graph=True) (the double-vjp trick) = torch.func.jvp, grads too."""
    net, x, t = make_case(kind)
    w = torch.randn_like(x)
    _, d_func = dF_dt(net, x, t)
    _, d_dvjp = torch.autograd.functional.jvp(
        lambda s: x + s.reshape(-1, *([1] * (x.ndim - 1))) * net(x, s), t, torch.ones_like(t), create_graph=True
    )
    torch.testing.assert_close(d_dvjp, d_func, rtol=1e-10, atol=1e-12)
    g_func = torch.autograd.grad((w * d_func).sum(), list(net.parameters()))
    g_dvjp = torch.autograd.grad((w * d_dvjp).sum(), list(net.parameters()))
    for a, b in zip(g_dvjp, g_func, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- checkpointing
def _loss_plain(net: nn.Module, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (w * net(x, t)).sum()


def _loss_func_jvp(net: nn.Module, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    out, d_out = torch.func.jvp(lambda s: net(x, s), (t,), (torch.ones_like(t),))
    return (w * out).sum() + (w * d_out).square().sum()


def _loss_forward_ad(net: nn.Module, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    with fwAD.dual_level():
        out = net(x, fwAD.make_dual(t, torch.ones_like(t)))
        primal, d_out = fwAD.unpack_dual(out)
    return (w * primal).sum() + (w * d_out).square().sum()


def _loss_double_vjp(net: nn.Module, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    out, d_out = torch.autograd.functional.jvp(lambda s: net(x, s), t, torch.ones_like(t), create_graph=True)
    return (w * out).sum() + (w * d_out).square().sum()


@pytest.mark.filterwarnings("ignore:activation checkpointing is skipped")
@pytest.mark.parametrize("loss_fn", [_loss_plain, _loss_func_jvp, _loss_forward_ad, _loss_double_vjp])
def test_checkpointing_matches_plain(loss_fn) -> None:  # noqa: ANN001
    """Same loss, same parameter and input gradients with and without checkpointing (dropout on)."""
    results = []
    for ckpt in (False, True):
        net = randomize_(tiny_unet(checkpointing=ckpt, dropout=0.2).double())
        x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_(True)
        t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
        w = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(2))
        torch.manual_seed(3)  # the same dropout masks in both runs
        loss = loss_fn(net, x, t, w)
        results.append((loss.detach(), torch.autograd.grad(loss, [x, *net.parameters()])))
    (loss0, g0), (loss1, g1) = results
    torch.testing.assert_close(loss1, loss0, rtol=1e-12, atol=0)
    assert all(torch.isfinite(g).all() for g in g1)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_fn", [_loss_plain, _loss_func_jvp])
def test_checkpointing_saves_activation_memory(loss_fn) -> None:  # noqa: ANN001
    """Fewer bytes are held for backward with checkpointing, also under torch.func.jvp."""
    saved_bytes = []
    for ckpt in (False, True):
        net = randomize_(tiny_unet(checkpointing=ckpt, base_channels=16))
        x, t, w = torch.randn(4, 2, 8, 8), torch.rand(4), torch.randn(4, 2, 8, 8)
        held: list[int] = []

        def pack(tensor: torch.Tensor, held: list[int] = held) -> torch.Tensor:
            held.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss_fn(net, x, t, w)
        saved_bytes.append(sum(held))
    assert saved_bytes[1] < 0.6 * saved_bytes[0], saved_bytes


def test_checkpointing_falls_back_where_torch_cannot_checkpoint() -> None:
    """Under torch.func.vjp (e.g. a divergence in x) and a user-level forward_ad level: same results, a warning."""
    plain, ckpt = (randomize_(tiny_unet(checkpointing=c).double()) for c in (False, True))
    x, t = torch.randn(2, 2, 8, 8, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    v = torch.randn_like(x)
    ref = torch.func.vjp(lambda xx: plain(xx, t), x)[1](v)[0]
    with pytest.warns(UserWarning, match="checkpointing is skipped"):
        got = torch.func.vjp(lambda xx: ckpt(xx, t), x)[1](v)[0]
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(x)
    with pytest.warns(UserWarning, match="checkpointing is skipped"):
        _loss_forward_ad(ckpt, x, t, w)

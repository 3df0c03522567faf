"""Bad input to the public math functions raises a clear ValueError, never a silent NaN."""

import pytest
import torch

from latent_ndm.diffusion.forward_process import ForwardProcess
from latent_ndm.diffusion.likelihood import ode_log_likelihood
from latent_ndm.diffusion.objectives import ContinuousNDMObjective, DiscreteNDMObjective
from latent_ndm.diffusion.ode import integrate
from latent_ndm.diffusion.parameterisation import Denoiser, SkipPrediction
from latent_ndm.diffusion.reverse_process import ReverseProcess
from latent_ndm.diffusion.samplers import sample_discrete, sample_ode
from latent_ndm.diffusion.schedule import VPSchedule
from latent_ndm.diffusion.terms import continuous_integrand, discrete_kl, prior_kl
from latent_ndm.diffusion.time_sampling import LikelihoodISTime, UniformTime
from latent_ndm.diffusion.transforms import IdentityTransform, NeuralTransform
from tests.support.oracle import GaussianOracleDenoiser

sch = VPSchedule()
den = GaussianOracleDenoiser(torch.zeros(3), torch.ones(3), sch)
objectives = [ContinuousNDMObjective(sch, LikelihoodISTime(sch, 1e-3)), DiscreteNDMObjective(sch, T=10)]


@pytest.mark.parametrize("objective", objectives)
@pytest.mark.parametrize("x, match", [
    (torch.tensor([[0.0, float("nan"), 1.0]]), "non-finite"),
    (torch.tensor([[0.0, float("inf"), 1.0]]), "non-finite"),
    (torch.zeros(3), "shape"),
    (torch.zeros(2, 3, dtype=torch.long), "floating"),
])
def test_objectives_reject_bad_data(objective, x, match):
    with pytest.raises(ValueError, match=match):
        objective(den, ForwardProcess(sch, IdentityTransform()), x)


@pytest.mark.parametrize("t, match", [
    (torch.tensor([1.2, 0.5]), r"\[0, 1\]"),
    (torch.tensor([-0.1, 0.5]), r"\[0, 1\]"),
    (torch.tensor([float("nan"), 0.5]), "non-finite"),
    (torch.tensor([0.5]), "batch size"),
    (torch.tensor([[0.5, 0.5]]), "shape"),
])
def test_time_is_checked(t, match):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=match):
        den_check(x, t)


def den_check(x, t):
    return Denoiser(_TwoArg(), sch, SkipPrediction())(x, t)


class _TwoArg(torch.nn.Module):
    def forward(self, z, t):
        return z


def test_mismatched_shapes_in_terms():
    s = sch(torch.tensor([0.3, 0.4]))
    a, b = torch.zeros(2, 3), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="shape"):
        continuous_integrand(a, a, b, b, s)
    with pytest.raises(ValueError, match="shape"):
        discrete_kl(a, a, a, torch.zeros(1, 3), s, s)
    with pytest.raises(ValueError, match="batch"):
        prior_kl(torch.zeros(3, 3), s)


def test_transform_network_with_wrong_output_shape():
    class Bad(torch.nn.Module):
        def forward(self, x, t):
            return x[:, :1]

    with pytest.raises(ValueError, match="shape"):
        NeuralTransform(Bad())(torch.zeros(2, 3), torch.rand(2))


def test_bad_solver_and_sampler_arguments():
    with pytest.raises(ValueError, match="unknown ODE method"):
        integrate(lambda t, z: z, torch.zeros(1, 1), 0.0, 1.0, method="rk45")
    with pytest.raises(ValueError, match="steps"):
        integrate(lambda t, z: z, torch.zeros(1, 1), 0.0, 1.0, method="euler")
    proc = ReverseProcess(den, ForwardProcess(sch, IdentityTransform()))
    with pytest.raises(ValueError, match="eta"):
        sample_discrete(proc, (2, 3), T=5, eta=-1.0)
    with pytest.raises(ValueError, match="T must"):
        sample_discrete(proc, (2, 3), T=0)
    with pytest.raises(ValueError, match="non-finite"):
        sample_ode(proc, z_1=torch.tensor([[float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="shape or an initial"):
        sample_ode(proc)
    with pytest.raises(ValueError, match="t_eps"):
        ode_log_likelihood(proc.velocity, torch.zeros(2, 3), t_eps=0.0)
    with pytest.raises(ValueError, match="t_eps"):
        UniformTime(sch, t_eps=1.5)

"""Ex-post priors: EM fits a Gaussian mixture correctly, and the distance test scores where samples land."""

import math

import pytest
import torch

from vaebook.models import ModelConfig, build_model
from vaebook.priors import (GaussianMixture, elbo_with_prior, fit_gaussian_mixture, nearest_code_distances,
                            nearest_code_score)

WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MEANS = torch.tensor([[-6.0, 0.0], [4.0, 4.0], [4.0, -5.0]], dtype=torch.float64)
COVS = torch.stack([torch.tensor([[1.0, 0.6], [0.6, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 0.5]]),
                    torch.tensor([[0.5, -0.3], [-0.3, 1.5]])]).double()


def _true(log_likelihood=()):
    return GaussianMixture(WEIGHTS, MEANS, COVS, log_likelihood)


def _data(n=20_000, seed=0):
    return _true().sample(n, torch.Generator().manual_seed(seed))


def _matched(m: GaussianMixture):
    """``m``'s parameters with its components in the order of the true ones (nearest mean)."""
    order = torch.cdist(MEANS, m.means).argmin(1)
    assert len(set(order.tolist())) == len(MEANS)
    return m.weights[order], m.means[order], m.covariances[order]


def test_em_recovers_the_parameters_of_a_known_mixture():
    fit = fit_gaussian_mixture(_data(), 3, ridge=0.0, seed=0)
    weights, means, covs = _matched(fit)
    torch.testing.assert_close(weights, WEIGHTS, atol=0.015, rtol=0)
    torch.testing.assert_close(means, MEANS, atol=0.06, rtol=0)
    torch.testing.assert_close(covs, COVS, atol=0.08, rtol=0)
    assert abs(float(fit.weights.sum()) - 1) < 1e-12


def test_the_average_log_likelihood_never_decreases_over_em_iterations():
    # Overlapping components and broad background noise leave EM work to do after the k-means start.
    x = _data(2_000, seed=1)
    x = torch.cat([x, torch.randn(1_000, 2, generator=torch.Generator().manual_seed(2)).double() * 4])
    fit = fit_gaussian_mixture(x, 5, iterations=40, tol=0.0, ridge=0.0, seed=3, restarts=1)
    ll = torch.tensor(fit.log_likelihood, dtype=torch.float64)
    assert len(ll) > 10
    steps = ll.diff()
    assert (steps >= -1e-10).all(), steps.min()
    assert ll[-1] - ll[0] > 0.01  # and EM did improve on the k-means start
    # The final parameters are no worse than the k-means start, measured independently of the recorded history.
    assert float(fit.log_prob(x).mean()) == pytest.approx(float(ll[-1]), abs=1e-9)


def test_log_prob_equals_torch_mixture_same_family():
    m = _true()
    reference = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=m.weights),
                                                      torch.distributions.MultivariateNormal(m.means, m.covariances))
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(4)).double() * 5
    torch.testing.assert_close(m.log_prob(z), reference.log_prob(z), atol=1e-10, rtol=0)


def test_samples_have_the_fitted_moments():
    m = fit_gaussian_mixture(_data(5_000), 3, seed=0)
    mean = (m.weights[:, None] * m.means).sum(0)
    second = (m.weights[:, None, None] * (m.covariances + m.means[:, :, None] * m.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    raw = m.sample(200_000, torch.Generator().manual_seed(5))
    assert raw.dtype == torch.float32 and raw.shape == (200_000, 2)  # codes, as a decoder takes them
    s = raw.double()
    torch.testing.assert_close(s.mean(0), mean, atol=0.04, rtol=0)
    torch.testing.assert_close(torch.cov(s.T), cov, atol=0.15, rtol=0.01)
    # each component is drawn as often as its weight says
    nearest = torch.cdist(s, m.means).argmin(1)
    torch.testing.assert_close(torch.bincount(nearest, minlength=3).double() / len(s), m.weights, atol=0.01, rtol=0)


def test_fits_and_samples_are_deterministic_given_the_seed_and_diagonal_covariances_are_diagonal():
    x = _data(3_000)
    a, b = fit_gaussian_mixture(x, 3, seed=7), fit_gaussian_mixture(x, 3, seed=7)
    assert torch.equal(a.means, b.means) and a.log_likelihood == b.log_likelihood
    assert torch.equal(a.sample(10, torch.Generator().manual_seed(0)), b.sample(10, torch.Generator().manual_seed(0)))
    d = fit_gaussian_mixture(x, 3, covariance="diagonal", seed=7)
    off = d.covariances - torch.diag_embed(d.covariances.diagonal(dim1=1, dim2=2))
    assert off.abs().max() == 0 and a.covariances[:, 0, 1].abs().max() > 0.1
    with pytest.raises(ValueError):
        fit_gaussian_mixture(x, 3, covariance="spherical")


def test_held_out_codes_score_one_and_the_quantile_they_were_cut_at():
    ref, held = torch.randn(2_000, 3), torch.randn(1_000, 3)
    score = nearest_code_score(held, ref, held)
    assert score.ratio == 1.0 and score.far == pytest.approx(0.01, abs=0.002)
    d = nearest_code_distances(held, ref, chunk=128)
    torch.testing.assert_close(d, torch.cdist(held, ref).min(1).values)
    assert score.median == pytest.approx(float(d.median()))


@pytest.mark.parametrize("shape", ["clusters", "ring"])
def test_mixture_samples_land_nearer_real_codes_than_standard_normal_samples(shape):
    gen = torch.Generator().manual_seed(8)
    if shape == "clusters":  # four tight clusters far from the origin, in 8 dimensions
        centres = torch.randn(4, 8, generator=gen) * 3 + 5
        codes = centres[torch.randint(4, (3_000,), generator=gen)] + 0.3 * torch.randn(3_000, 8, generator=gen)
    else:  # a thin ring of radius 3 in the plane of the first two of 4 dimensions
        angle = torch.rand(3_000, generator=gen) * 2 * math.pi
        codes = torch.stack([3 * angle.cos(), 3 * angle.sin(), torch.zeros(3_000), torch.zeros(3_000)], 1)
        codes = codes + 0.1 * torch.randn(3_000, 4, generator=gen)
    train, test = codes[:2_000], codes[2_000:]
    mixture = fit_gaussian_mixture(train, 4 if shape == "clusters" else 8, iterations=30, seed=0)
    mixed = nearest_code_score(mixture.sample(1_000, gen), train, test)
    normal = nearest_code_score(torch.randn(1_000, codes.shape[1], generator=gen), train, test)
    assert mixed.ratio < 1.5 and mixed.far < 0.1
    assert normal.ratio > 2 * mixed.ratio and normal.far > 0.5


def test_elbo_with_the_standard_normal_as_a_mixture_equals_the_models_own_elbo():
    torch.manual_seed(0)
    vae = build_model(ModelConfig(kind="vae", arch="mlp", latent_dim=3, hidden=16)).eval()
    x = torch.randint(0, 256, (20, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    standard = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                               torch.eye(3, dtype=torch.float64)[None])
    own = elbo_with_prior(vae, x, None, samples=3, generator=torch.Generator().manual_seed(1))
    as_mixture = elbo_with_prior(vae, x, standard, samples=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(own["elbo"], as_mixture["elbo"], atol=1e-4, rtol=0)
    torch.testing.assert_close(own["elbo"], own["recon"] - own["kl"])
    # With many draws the Monte Carlo KL approaches the closed form of KL(q(z|x) || N(0, I)).
    from vaebook.data import to_float
    from vaebook.losses import gaussian_kl

    mu, logvar = vae.encode(to_float(x))
    many = elbo_with_prior(vae, x, None, samples=2_000, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(many["kl"], gaussian_kl(mu, logvar).double().detach(), atol=0.05, rtol=0.02)
    shifted = GaussianMixture(standard.weights, standard.means + 5, standard.covariances)
    worse = elbo_with_prior(vae, x, shifted, samples=3, generator=torch.Generator().manual_seed(1))
    assert (worse["elbo"] < own["elbo"] - 10).all()  # a prior far from the codes costs nats

"""Probabilistic PCA, where log p(x) is exact: the ELBO and the IWAE bound checked to numerical precision."""

import math

import pytest
import torch

from vaebook.evaluate import log_likelihood_estimate
from vaebook.losses import gaussian_kl, log_likelihood
from vaebook.ppca import PPCA, gaussian_kl_full

D, K = 12, 3


@pytest.fixture
def model():
    return PPCA.random(D, K, sigma=0.7, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def data(model):
    return model.sample(50, generator=torch.Generator().manual_seed(1))


def test_log_marginal_is_the_gaussian_density_with_covariance_wwt_plus_noise(model, data):
    exact = torch.distributions.MultivariateNormal(model.bias, model.marginal_covariance()).log_prob(data)
    torch.testing.assert_close(model.log_marginal(data), exact, atol=1e-10, rtol=0)


def test_posterior_satisfies_bayes_rule_at_every_z(model, data):
    """log p(x, z) - log p(z|x) is the same number, log p(x), whatever z is."""
    mean, cov = model.posterior(data)
    post = torch.distributions.MultivariateNormal(mean, cov)
    for seed in range(3):
        z = torch.randn(len(data), K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
        torch.testing.assert_close(model.log_joint(data, z) - post.log_prob(z), model.log_marginal(data),
                                   atol=1e-9, rtol=0)


def test_elbo_is_below_log_px_with_gap_kl_to_the_posterior_and_tight_at_the_posterior(model, data):
    gen = torch.Generator().manual_seed(2)
    log_px = model.log_marginal(data)
    mean, cov = model.posterior(data)
    for _ in range(20):  # arbitrary Gaussian encoders: random means, random full covariances
        m = mean + torch.randn(mean.shape, generator=gen, dtype=torch.float64)
        a = torch.randn(len(data), K, K, generator=gen, dtype=torch.float64)
        s = a @ a.transpose(1, 2) + 0.05 * torch.eye(K, dtype=torch.float64)
        elbo = model.elbo(data, m, s)
        assert (elbo < log_px).all()
        gap = gaussian_kl_full(m, s, mean, cov.expand_as(s))
        torch.testing.assert_close(log_px - elbo, gap, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(model.elbo(data, mean, cov), log_px, atol=1e-9, rtol=0)


def test_full_covariance_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(3)
    a, b = (torch.randn(4, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    s0, s1 = a @ a.T + torch.eye(4, dtype=torch.float64), b @ b.T + 0.5 * torch.eye(4, dtype=torch.float64)
    m0, m1 = (torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(2))
    mvn = torch.distributions.MultivariateNormal
    expected = torch.distributions.kl_divergence(mvn(m0, s0), mvn(m1, s1))
    torch.testing.assert_close(gaussian_kl_full(m0, s0, m1, s1), expected, atol=1e-10, rtol=0)


def test_the_packages_vae_code_is_exact_when_its_encoder_is_the_true_posterior():
    """With orthogonal W the posterior is diagonal, so a VAE's encoder can equal it: then every single-sample
    ELBO estimate log p(x|z) + log p(z) - log q(z|x) equals log p(x), and so does the IWAE estimate at any K."""
    ppca = PPCA.random(D, K, sigma=0.5, generator=torch.Generator().manual_seed(4), orthogonal=True)
    x = ppca.sample(30, generator=torch.Generator().manual_seed(5))
    vae = ppca.as_vae()
    log_px = ppca.log_marginal(x)
    xi = x.view(-1, 1, 1, D)
    with torch.no_grad():
        mu, logvar = vae.encode(xi)
        mean, cov = ppca.posterior(x)
        torch.testing.assert_close(mu, mean, atol=1e-10, rtol=0)
        torch.testing.assert_close(logvar.exp()[0].diag_embed(), cov, atol=1e-10, rtol=0)
        gen = torch.Generator().manual_seed(6)
        for _ in range(3):
            z = vae.reparameterise(mu, logvar, generator=gen)
            log_q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(1)
            log_p_z = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
            single = log_likelihood(vae.decoder(z), xi, "gaussian", ppca.sigma) + log_p_z - log_q
            torch.testing.assert_close(single, log_px, atol=1e-9, rtol=0)
        # the analytic ELBO of the package's own loss pieces: E[log p(x|z)] by Monte Carlo - closed-form KL
        for k in (1, 7, 100):
            torch.testing.assert_close(log_likelihood_estimate(vae, xi, k, generator=gen), log_px, atol=1e-9, rtol=0)


def test_iwae_bound_rises_with_k_towards_log_px_and_equals_the_elbo_at_k_1():
    """A deliberately poor diagonal encoder: its ELBO is well below log p(x); IWAE closes the gap as K grows."""
    ppca = PPCA.random(D, K, sigma=0.5, generator=torch.Generator().manual_seed(7))
    x = ppca.sample(20, generator=torch.Generator().manual_seed(8))
    vae = ppca.as_vae()
    with torch.no_grad():
        vae.to_logvar.bias += math.log(4.0)  # q twice as wide as it should be
        vae.to_mu.bias += 0.3
    xi = x.view(-1, 1, 1, D)
    log_px = ppca.log_marginal(x)
    with torch.no_grad():
        mu, logvar = vae.encode(xi)
    elbo = ppca.elbo(x, mu, logvar.exp().diag_embed())
    assert (log_px - elbo).mean() > 1.0  # a gap worth closing
    gen = torch.Generator().manual_seed(9)
    gaps = []
    for k in (1, 10, 100, 1000):
        reps = max(4000 // k, 10)  # independent estimates, to average out the Monte Carlo noise
        est = log_likelihood_estimate(vae, xi.repeat(reps, 1, 1, 1), k, generator=gen).view(reps, len(x))
        gap = (log_px - est).mean(1)  # per repetition, averaged over the 20 images
        gaps.append(float(gap.mean()))
        stderr = float(gap.std()) / reps ** 0.5
        assert gaps[-1] > -4 * stderr  # a lower bound in expectation
        if k == 1:  # IWAE with one sample is the ELBO, in expectation
            assert abs(gaps[0] - float((log_px - elbo).mean())) < 4 * stderr
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3]
    assert gaps[3] < 0.05 * gaps[0]


def test_maximum_likelihood_fit_is_a_stationary_point_with_pca_structure():
    true = PPCA.random(D, K, sigma=0.3, generator=torch.Generator().manual_seed(10))
    x = true.sample(2000, generator=torch.Generator().manual_seed(11))
    fit = PPCA.fit(x, K)
    w = fit.weight.clone().requires_grad_(True)
    log_s = torch.tensor(math.log(fit.sigma), dtype=torch.float64, requires_grad=True)
    b = fit.bias.clone().requires_grad_(True)
    cov = w @ w.T + torch.exp(2 * log_s) * torch.eye(D, dtype=torch.float64)
    ll = torch.distributions.MultivariateNormal(b, cov).log_prob(x).mean()
    ll.backward()
    for g in (w.grad, log_s.grad, b.grad):
        assert g.abs().max() < 1e-8
    # sigma^2 is the mean of the discarded eigenvalues, and it recovers the truth from 2,000 samples
    evals = torch.linalg.eigvalsh(torch.cov(x.T, correction=0)).flip(0)
    assert fit.sigma ** 2 == pytest.approx(float(evals[K:].mean()), rel=1e-10)
    assert fit.sigma == pytest.approx(0.3, rel=0.05)
    assert fit.log_marginal(x).mean() >= true.log_marginal(x).mean()


def test_diagonal_closed_form_kl_is_the_full_kl_with_diagonal_covariances():
    gen = torch.Generator().manual_seed(12)
    mu = torch.randn(5, K, generator=gen, dtype=torch.float64)
    logvar = torch.randn(5, K, generator=gen, dtype=torch.float64)
    full = gaussian_kl_full(mu, logvar.exp().diag_embed(), torch.zeros_like(mu),
                            torch.eye(K, dtype=torch.float64).expand(5, K, K))
    torch.testing.assert_close(gaussian_kl(mu, logvar), full, atol=1e-12, rtol=0)

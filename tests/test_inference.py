"""The approximation and amortisation gaps, checked on probabilistic PCA, where every term is exact.

The PPCA model here has strongly correlated columns in ``W``, so its posterior has a full
covariance and the best *diagonal* Gaussian ``q*`` falls short of it by a known amount:
``q*`` has the posterior mean and variances ``1 / diag(posterior precision) = sigma^2 / M_jj``,
and its ELBO is `PPCA.elbo`. A deliberately perturbed encoder adds an amortisation gap.
"""

import pytest
import torch

from vaebook.inference import elbo_of, inference_gaps, optimise_posterior
from vaebook.ppca import PPCA

D, K, N = 8, 3, 64


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(D, K, generator=gen, dtype=torch.float64)
    ppca = PPCA(a + a[:, :1], torch.randn(D, generator=gen, dtype=torch.float64), 1.0)  # correlated columns
    data = ppca.sample(N, generator=gen)
    post_mean, post_cov = ppca.posterior(data)
    precision = torch.linalg.inv(post_cov)
    best_var = 1 / torch.diagonal(precision)  # the best diagonal Gaussian: KL(q || p(z|x)) is smallest
    best_elbo = ppca.elbo(data, post_mean, best_var.diag().expand(N, K, K))
    return ppca, data, post_mean, best_var, best_elbo


def perturbed_vae(ppca: PPCA) -> torch.nn.Module:
    """The best diagonal encoder (`PPCA.as_vae`), knocked off its optimum."""
    vae = ppca.as_vae()
    with torch.no_grad():
        vae.to_mu.bias.add_(torch.tensor([0.3, -0.2, 0.25], dtype=torch.float64))
        vae.to_logvar.bias.add_(0.5)
    return vae


def exact_elbo(ppca: PPCA, data: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return ppca.elbo(data, mu, logvar.exp().diag_embed())


def test_the_fixture_has_both_gaps(setup):
    ppca, data, _, _, best_elbo = setup
    with torch.no_grad():
        mu, logvar = perturbed_vae(ppca).encode(data.view(N, 1, 1, D))
    assert (ppca.log_marginal(data) - best_elbo).mean() > 0.5  # a diagonal q cannot match the posterior
    assert (best_elbo - exact_elbo(ppca, data, mu, logvar)).mean() > 0.3  # and the encoder is off q*


def test_optimise_posterior_finds_the_best_diagonal_gaussian_with_the_decoder_frozen(setup):
    ppca, data, post_mean, best_var, best_elbo = setup
    vae = perturbed_vae(ppca)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    mu, logvar, history = optimise_posterior(vae, data.view(N, 1, 1, D), steps=300, lr=0.02, samples=8,
                                             generator=torch.Generator().manual_seed(1))
    shortfall = best_elbo - exact_elbo(ppca, data, mu, logvar)
    assert (shortfall > -1e-9).all()  # the closed form is the optimum: nothing beats it
    assert shortfall.mean() < 0.02 and shortfall.max() < 0.05
    assert (mu - post_mean).abs().max() < 0.1
    assert ((logvar.exp() / best_var) - 1).abs().max() < 0.15
    assert history.shape == (300,) and history[-20:].mean() > history[:5].mean() + 0.2
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert all(p.grad is None for p in vae.parameters())
    assert not vae.training


def test_optimising_the_best_encoder_gains_nothing(setup):
    """``as_vae`` already outputs ``q*``: the amortisation gap of a linear encoder on PPCA is 0."""
    ppca, data, _, _, best_elbo = setup
    vae = ppca.as_vae()
    with torch.no_grad():
        mu, logvar = vae.encode(data.view(N, 1, 1, D))
    assert torch.allclose(exact_elbo(ppca, data, mu, logvar), best_elbo, atol=1e-9, rtol=0)
    mu, logvar, _ = optimise_posterior(vae, data.view(N, 1, 1, D), steps=100, lr=0.02, samples=8,
                                             generator=torch.Generator().manual_seed(2))
    assert 0 <= (best_elbo - exact_elbo(ppca, data, mu, logvar)).mean() < 0.02


def test_elbo_of_is_the_exact_elbo_up_to_monte_carlo_error(setup):
    ppca, data, _, _, _ = setup
    vae = perturbed_vae(ppca)
    with torch.no_grad():
        mu, logvar = vae.encode(data.view(N, 1, 1, D))
    estimate = elbo_of(vae, data.view(N, 1, 1, D), mu, logvar, samples=2000,
                       generator=torch.Generator().manual_seed(3))
    assert estimate.shape == (N,)
    error = estimate - exact_elbo(ppca, data, mu, logvar)
    assert error.mean().abs() < 0.03 and error.abs().max() < 0.3


def test_inference_gaps_split_the_exact_elbo_gap(setup):
    ppca, data, _, _, best_elbo = setup
    vae = perturbed_vae(ppca)
    with torch.no_grad():
        mu, logvar = vae.encode(data.view(N, 1, 1, D))
    enc_elbo = exact_elbo(ppca, data, mu, logvar).mean().item()
    log_px = ppca.log_marginal(data).mean().item()
    gaps = inference_gaps(vae, data.view(N, 1, 1, D), k=2000, steps=300, lr=0.02, samples=8,
                          eval_samples=1000, seed=4)
    tol = 0.03  # Monte Carlo error of the means over 64 images
    assert gaps.amortisation_gap > -tol
    assert gaps.amortisation_gap == pytest.approx(best_elbo.mean().item() - enc_elbo, abs=tol)
    assert gaps.encoder_elbo == pytest.approx(enc_elbo, abs=tol)
    assert gaps.optimised_elbo == pytest.approx(best_elbo.mean().item(), abs=tol)
    # with the exact log p(x), the two gaps add up to the encoder's whole shortfall
    approximation = log_px - gaps.optimised_elbo
    assert approximation == pytest.approx(log_px - best_elbo.mean().item(), abs=tol)
    assert approximation + gaps.amortisation_gap == pytest.approx(log_px - enc_elbo, abs=tol)
    # the IWAE estimate is a lower bound on log p(x) in expectation, close to it in 3 dimensions
    # (with the perturbed encoder as its proposal, not quite as close as the ELBOs)
    assert -0.3 < gaps.log_px - log_px < tol
    assert gaps.approximation_gap == pytest.approx(log_px - gaps.optimised_elbo, abs=0.3)
    assert gaps.log_px - gaps.encoder_elbo == pytest.approx(gaps.approximation_gap + gaps.amortisation_gap)

"""The losses against closed forms, torch.distributions and Monte Carlo."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vaebook.losses import (bernoulli_log_likelihood, elbo_terms, gaussian_kl, gaussian_log_likelihood, loss_terms,
                            mse_kl_equivalence, normal_log_density)

torch.manual_seed(0)


def test_bernoulli_log_likelihood_is_exact_log_pmf_for_binary_pixels():
    logits = torch.randn(4, 1, 5, 3, dtype=torch.float64)
    x = torch.bernoulli(torch.full_like(logits, 0.5))
    want = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), want)
    # and by hand: sum of log p for on pixels and log(1-p) for off pixels
    p = torch.sigmoid(logits)
    by_hand = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), by_hand)


def test_bernoulli_likelihood_of_grey_targets_peaks_at_the_target():
    # For x in (0, 1) the cross-entropy is maximised (over p) at p = x: the decoder's mean matches the pixel.
    x = torch.full((1, 1, 1, 1), 0.3, dtype=torch.float64)
    ps = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    values = torch.stack([bernoulli_log_likelihood(torch.logit(p).view(1, 1, 1, 1), x)[0] for p in ps])
    assert ps[values.argmax()].item() == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize("sigma", [0.1, 1 / math.sqrt(2), 1.0, 2.5])
def test_gaussian_log_likelihood_matches_normal_log_prob(sigma):
    mean = torch.rand(3, 2, 4, 4, dtype=torch.float64)
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64)
    want = Normal(mean, sigma).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_log_likelihood(mean, x, sigma), want)


def test_gaussian_kl_matches_torch_distributions():
    mu = torch.randn(6, 5, dtype=torch.float64)
    logvar = torch.randn(6, 5, dtype=torch.float64)
    q = Normal(mu, (0.5 * logvar).exp())
    want = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), want)


def test_gaussian_kl_matches_monte_carlo():
    mu = torch.tensor([[0.7, -1.2, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[-0.5, 0.3, 1.0]], dtype=torch.float64)
    q = Normal(mu, (0.5 * logvar).exp())
    gen = torch.Generator().manual_seed(0)
    z = mu + (0.5 * logvar).exp() * torch.randn(400_000, 3, generator=gen, dtype=torch.float64)
    mc = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(1)
    se = mc.std() / math.sqrt(len(mc))
    assert abs(mc.mean() - gaussian_kl(mu, logvar)[0]) < 4 * se


def test_gaussian_kl_is_zero_only_at_the_prior():
    assert gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0
    assert (gaussian_kl(torch.randn(100, 4) * 0.1, torch.randn(100, 4) * 0.1) > 0).all()


def test_normal_log_density_matches_torch_distributions_for_tensor_and_float_logvar():
    x, mean = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    logvar = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(normal_log_density(x, mean, logvar), Normal(mean, (0.5 * logvar).exp()).log_prob(x))
    torch.testing.assert_close(normal_log_density(x, mean, -1.5), Normal(mean, math.exp(-0.75)).log_prob(x))
    torch.testing.assert_close(normal_log_density(x), Normal(0.0, 1.0).log_prob(x))
    # a density: it integrates to 1 (trapezoid rule on a wide, fine grid)
    grid = torch.linspace(-30, 30, 60_001, dtype=torch.float64)
    assert torch.trapezoid(normal_log_density(grid, 1.3, math.log(4.0)).exp(), grid).item() == pytest.approx(1, abs=1e-9)


def test_elbo_terms_are_minus_log_likelihood_and_kl_per_image():
    out, x = torch.randn(2, 1, 3, 3), torch.rand(2, 1, 3, 3)
    mu, logvar = torch.randn(2, 4), torch.randn(2, 4)
    terms = elbo_terms({"out": out, "mu": mu, "logvar": logvar}, x, "bernoulli")
    torch.testing.assert_close(terms["recon"], -bernoulli_log_likelihood(out, x))
    torch.testing.assert_close(terms["kl"], gaussian_kl(mu, logvar))
    ae_terms = elbo_terms({"out": out}, x, "gaussian", sigma=0.5)  # an autoencoder: no KL
    torch.testing.assert_close(ae_terms["recon"], -gaussian_log_likelihood(out, x, 0.5))
    assert ae_terms["kl"].shape == (2,) and ae_terms["kl"].abs().max() == 0


def test_loss_terms_are_batch_means_of_per_image_sums():
    out, x = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    terms = loss_terms({"out": out, "mu": mu, "logvar": logvar}, x, "gaussian", sigma=0.5, beta=2.0)
    recon = -gaussian_log_likelihood(out, x, 0.5).mean()
    torch.testing.assert_close(terms["recon"], recon)
    torch.testing.assert_close(terms["loss"], recon + 2.0 * gaussian_kl(mu, logvar).mean())
    ae = loss_terms({"out": out, "z": mu}, x, "gaussian", sigma=0.5)
    assert ae["kl"].item() == 0 and torch.equal(ae["loss"], ae["recon"])


def test_mean_mse_plus_weighted_kl_is_a_scaled_gaussian_beta_elbo():
    """c * (mean MSE + w KL) equals the negative beta-ELBO minus a constant, for the (sigma, beta) given."""
    torch.manual_seed(1)
    n, shape, latent, w = 8, (3, 6, 5), 4, 1e-3
    d = math.prod(shape)
    x, x_hat = torch.rand(n, *shape, dtype=torch.float64), torch.rand(n, *shape, dtype=torch.float64)
    mu, logvar = torch.randn(n, latent, dtype=torch.float64), torch.randn(n, latent, dtype=torch.float64)
    kl = gaussian_kl(mu, logvar)
    for reduction in ("sum", "mean"):
        eq = mse_kl_equivalence(w, d, kl_reduction=reduction, latent_dim=latent)
        kl_term = kl.mean() if reduction == "sum" else (kl / latent).mean()
        blog_loss = torch.nn.functional.mse_loss(x_hat, x, reduction="mean") + w * kl_term
        for sigma in (0.1, 0.5, eq.sigma(beta=1.0)):
            beta = eq.beta(sigma)
            neg_elbo = -(gaussian_log_likelihood(x_hat, x, sigma) - beta * kl).mean()
            const = d * math.log(sigma) + 0.5 * d * math.log(2 * math.pi)
            torch.testing.assert_close(blog_loss * d / (2 * sigma**2), neg_elbo - const)
        assert eq.beta(eq.sigma(beta=1.0)) == pytest.approx(1.0)


def test_a_1e_5_weight_on_celeba_is_not_a_tiny_beta():
    eq = mse_kl_equivalence(1e-5, 3 * 218 * 178)
    assert eq.beta() == pytest.approx(1e-5 * 116_412)  # sum-of-squares convention, sigma = 1/sqrt(2)
    assert eq.sigma(beta=1.0) == pytest.approx(math.sqrt(1e-5 * 116_412 / 2))
    with pytest.raises(ValueError):
        mse_kl_equivalence(1e-5, 10, kl_reduction="mean")


def test_free_bits_charge_max_of_floor_and_batch_mean_kl_per_dimension():
    mu = torch.tensor([[0.1, 2.0, 0.0], [0.3, -1.0, 0.0]], requires_grad=True)
    logvar = torch.zeros(2, 3)
    x = torch.full((2, 1, 1, 1), 0.5)
    out = {"out": torch.zeros(2, 1, 1, 1), "mu": mu, "logvar": logvar}
    terms = loss_terms(out, x, "bernoulli", free_bits=0.5)
    kl_dims = 0.5 * mu.detach().pow(2).mean(0)  # KL of N(mu, 1) to N(0, 1) per dimension, batch mean
    expected = terms["recon"] + torch.clamp(kl_dims, min=0.5).sum()
    torch.testing.assert_close(terms["loss"], expected)
    torch.testing.assert_close(terms["kl"], kl_dims.sum())  # the reported KL is the true one
    terms["loss"].backward()
    assert mu.grad[:, 0].abs().max() == 0 and mu.grad[:, 2].abs().max() == 0  # below the floor: no push
    torch.testing.assert_close(mu.grad[:, 1], mu.detach()[:, 1] / 2)  # above it: the usual KL gradient

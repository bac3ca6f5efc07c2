"""A learned decoder standard deviation: the closed-form optimum of a shared sigma, and why a
per-pixel sigma needs a floor (the likelihood is unbounded without one)."""

import math

import pytest
import torch

from vaebook.checkpoints import load_model, save_model
from vaebook.experiments import QUANTISATION_SIGMA
from vaebook.losses import LOG_2PI, gaussian_log_likelihood, implied_mse, log_likelihood, loss_terms, optimal_sigma
from vaebook.models import ModelConfig, build_model

SMALL = dict(kind="vae", arch="mlp", in_shape=(1, 6, 5), latent_dim=3, hidden=16, likelihood="gaussian")


def test_optimal_sigma_maximises_the_gaussian_likelihood():
    gen = torch.Generator().manual_seed(0)
    x, mean = torch.rand(8, 1, 6, 5, generator=gen), torch.rand(8, 1, 6, 5, generator=gen)
    best = optimal_sigma(mean, x)
    assert float(best) ** 2 == pytest.approx(float((x - mean).pow(2).mean()), rel=1e-6)
    log_sigma = best.log().clone().requires_grad_()
    total = gaussian_log_likelihood(mean, x, log_sigma.exp()).sum()
    (grad,) = torch.autograd.grad(total, log_sigma)
    assert abs(float(grad)) < 1e-3 * x.numel()  # SSE / sigma^2 - D = 0 at the optimum
    d = x.numel()  # at the optimum the log-likelihood is -D/2 (1 + log(2 pi MSE))
    assert float(total.detach()) == pytest.approx(-0.5 * d * (1 + LOG_2PI + math.log(float(best) ** 2)), rel=1e-5)
    for factor in (0.8, 0.95, 1.05, 1.25):
        assert float(gaussian_log_likelihood(mean, x, float(best) * factor).sum()) < float(total.detach())


def test_a_learned_shared_sigma_converges_to_the_closed_form():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, sigma=0.5, decoder_sigma="shared"))
    x = torch.rand(32, 1, 6, 5)
    z = torch.randn(32, 3)
    optimizer = torch.optim.Adam([model.log_sigma], lr=0.05)  # the decoder's mean stays fixed
    for _ in range(400):
        loss = -model.log_likelihood(z, x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        target = float(optimal_sigma(model.decode(z), x))
    assert model.decoder_sigma() == pytest.approx(target, rel=1e-3)
    assert abs(target - 0.5) > 0.05  # it moved: the start was 0.5


def test_a_shared_sigma_trains_with_the_weights_and_is_saved(tmp_path):
    model = build_model(ModelConfig(**SMALL, sigma=0.5, decoder_sigma="shared"))
    assert "log_sigma" in dict(model.named_parameters())
    x = torch.rand(4, 1, 6, 5)
    output = model(x)
    assert output["x_logvar"].shape == ()
    loss_terms(output, x, "gaussian", 0.5)["loss"].backward()
    assert model.log_sigma.grad is not None and float(model.log_sigma.grad) != 0.0
    with torch.no_grad():
        model.log_sigma.fill_(math.log(0.123))
    save_model(tmp_path, model, {})
    assert load_model(tmp_path).decoder_sigma() == pytest.approx(0.123, rel=1e-6)


def _pixel_model(min_sigma: float, raw_logvar: float):
    """A per-pixel-sigma model whose log-variance output is the constant ``raw_logvar``."""
    model = build_model(ModelConfig(**SMALL, decoder_sigma="pixel", min_sigma=min_sigma))
    last = model.decoder[2]  # Linear(hidden, 2 * D): the mean's D outputs, then the log-variance's D
    d = last.out_features // 2
    with torch.no_grad():
        last.weight[d:] = 0.0
        last.bias[d:] = raw_logvar
    return model


def test_a_per_pixel_sigma_makes_the_likelihood_unbounded_without_a_floor():
    """Where the mean is exact (a constant background pixel), shrinking sigma raises the density without
    limit: log N(x; x, sigma^2) = -log sigma - log(2 pi) / 2 grows like -log sigma (Mattei & Frellsen 2018)."""
    x = torch.zeros(1, 1, 6, 5)
    values = [float(log_likelihood(x, x, "gaussian", x_logvar=torch.full_like(x, c))) for c in (-10.0, -20.0, -40.0)]
    assert values[0] < values[1] < values[2]
    assert values[2] - values[1] == pytest.approx(0.5 * 20 * x.numel(), rel=1e-6)
    z = torch.zeros(1, 3)
    free = _pixel_model(0.0, -60.0)
    with torch.no_grad():
        assert float(free.decode_params(z)["x_logvar"].max()) == pytest.approx(-60.0)


def test_a_floor_bounds_the_per_pixel_likelihood():
    z = torch.randn(5, 3)
    model = _pixel_model(QUANTISATION_SIGMA, -60.0)
    with torch.no_grad():
        params = model.decode_params(z)
    floor = 2 * math.log(QUANTISATION_SIGMA)
    assert params["out"].shape == params["x_logvar"].shape == (5, 1, 6, 5)
    assert float(params["x_logvar"].min()) >= floor - 1e-5
    with torch.no_grad():
        best = model.log_likelihood(z, model.decode(z))  # data equal to the mean: the most any data can score
    bound = -0.5 * (floor + LOG_2PI) * 30  # D values, each at most log N(0; 0, min_sigma^2)
    torch.testing.assert_close(best, torch.full((5,), bound), rtol=1e-4, atol=1e-3)
    assert QUANTISATION_SIGMA == pytest.approx(1 / 255 / math.sqrt(12))


@pytest.mark.parametrize("bad", [dict(decoder_sigma="shared", likelihood="bernoulli"),
                                 dict(decoder_sigma="free"), dict(decoder_sigma="pixel", min_sigma=-1.0)])
def test_learned_sigma_configs_are_checked(bad):
    with pytest.raises(ValueError):
        ModelConfig(**{**SMALL, **bad})


def test_fixed_sigma_models_are_unchanged():
    """A fixed sigma adds no parameter and no ``x_logvar``: the shipped models load as before."""
    model = build_model(ModelConfig(**SMALL, sigma=0.3))
    assert "log_sigma" not in dict(model.named_parameters())
    assert "x_logvar" not in model(torch.rand(2, 1, 6, 5))
    assert model.decoder_sigma() == 0.3


def test_implied_mse_inverts_the_gaussian_reconstruction_term():
    gen = torch.Generator().manual_seed(1)
    x, mean = torch.rand(3, 3, 8, 8, generator=gen), torch.rand(3, 3, 8, 8, generator=gen)
    for sigma in (0.05, 0.3, 1.0):
        recon = float(-gaussian_log_likelihood(mean, x, sigma).mean())
        assert implied_mse(recon, sigma, 3 * 8 * 8) == pytest.approx(float((x - mean).pow(2).mean()), rel=1e-5)

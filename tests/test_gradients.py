"""Gradient estimators: both are unbiased, their variances are the ones the algebra predicts.

For ``f(z) = z^2`` and ``z ~ N(mu, sigma^2)``, ``E[f] = mu^2 + sigma^2``, so the gradient is
``(2 mu, 2 sigma)``. With ``z = mu + sigma eps`` the one-sample ``d/dmu`` estimates have variance

* pathwise ``2z``:                        ``4 sigma^2``
* score function ``z^2 eps / sigma``:    ``mu^4 / sigma^2 + 14 mu^2 + 15 sigma^2``
* score function, baseline ``b = mu^2 + sigma^2``: at ``mu = sigma = 1``,
  ``E[(eps^3 + 2 eps^2 - eps)^2] - 4 = 22 - 4 = 18``.
"""

import math

import pytest
import torch

from vaebook.gradients import estimator_variance_table, pathwise_gradients, score_function_gradients

N = 200_000


def square(z):
    return z**2


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _assert_unbiased(samples: torch.Tensor, expected: tuple[float, float], k: float = 4.0) -> None:
    """Each column's mean lies within ``k`` standard errors of the expected gradient."""
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
    for j in range(2):
        assert abs(float(mean[j]) - expected[j]) < k * float(se[j]), (j, float(mean[j]), expected[j], float(se[j]))


@pytest.mark.parametrize("mu, sigma", [(1.0, 1.0), (-0.7, 0.4), (2.0, 1.5)])
def test_both_estimators_are_unbiased_for_z_squared(mu, sigma):
    exact = (2 * mu, 2 * sigma)
    path = pathwise_gradients(square, mu, sigma, N, _gen(0))
    score = score_function_gradients(square, mu, sigma, N, _gen(1))
    assert path.shape == score.shape == (N, 2) and path.dtype == torch.float64
    _assert_unbiased(path, exact)
    _assert_unbiased(score, exact)


def test_score_function_variance_is_larger_and_matches_the_algebra():
    mu, sigma = 1.0, 1.0
    path_var = float(pathwise_gradients(square, mu, sigma, N, _gen(2))[:, 0].var())
    score_var = float(score_function_gradients(square, mu, sigma, N, _gen(3))[:, 0].var())
    assert path_var == pytest.approx(4 * sigma**2, rel=0.02)
    assert score_var == pytest.approx(mu**4 / sigma**2 + 14 * mu**2 + 15 * sigma**2, rel=0.08)  # 30
    assert score_var / path_var > 6  # 7.5 in theory


def test_score_function_variance_blows_up_as_sigma_shrinks_but_pathwise_vanishes():
    table = estimator_variance_table(square, 1.0, [0.1, 1.0], 50_000, _gen(4))
    torch.testing.assert_close(table["sigma"], torch.tensor([0.1, 1.0], dtype=torch.float64))
    torch.testing.assert_close(table["pathwise_var"], torch.tensor([0.04, 4.0], dtype=torch.float64), rtol=0.03, atol=0)
    assert float(table["score_var"][0]) == pytest.approx(100 + 14 + 0.15, rel=0.1)
    ratio = table["score_var"] / table["pathwise_var"]
    assert ratio[0] > 2000 and 5 < ratio[1] < 10
    torch.testing.assert_close(table["pathwise_mean"], torch.full((2,), 2.0, dtype=torch.float64), atol=0.05, rtol=0)


def test_baseline_keeps_the_score_function_unbiased_and_a_good_one_lowers_its_variance():
    mu, sigma = 1.0, 1.0
    plain = score_function_gradients(square, mu, sigma, N, _gen(5))
    good = score_function_gradients(square, mu, sigma, N, _gen(5), baseline=mu**2 + sigma**2)  # E[f]
    bad = score_function_gradients(square, mu, sigma, N, _gen(5), baseline=-10.0)
    for estimates in (good, bad):
        _assert_unbiased(estimates, (2 * mu, 2 * sigma))
    plain_var, good_var, bad_var = (float(g[:, 0].var()) for g in (plain, good, bad))
    assert good_var == pytest.approx(18.0, rel=0.08)
    assert good_var < 0.7 * plain_var < plain_var < bad_var


def test_pathwise_gradient_of_the_identity_is_exactly_one_with_zero_variance():
    grads = pathwise_gradients(lambda z: z, 0.3, 2.0, 1000, _gen(6))
    assert torch.equal(grads[:, 0], torch.ones(1000, dtype=torch.float64))
    assert float(grads[:, 0].var()) == 0.0
    # d/dsigma of z = mu + sigma * eps is eps itself: the same draws as the generator's
    torch.testing.assert_close(grads[:, 1], torch.randn(1000, generator=_gen(6), dtype=torch.float64))


def test_constant_function_has_zero_pathwise_gradient():
    grads = pathwise_gradients(lambda z: torch.ones_like(z), 1.0, 1.0, 10, _gen(7))
    assert torch.equal(grads, torch.zeros(10, 2, dtype=torch.float64))


def test_sampling_blocks_the_gradient_that_reparameterisation_recovers():
    mu = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    z = torch.distributions.Normal(mu, sigma).sample((100,))
    assert z.grad_fn is None  # no path back to mu, sigma
    z = mu + sigma * torch.randn(100, generator=_gen(8), dtype=torch.float64)
    (d_mu,) = torch.autograd.grad((z**2).mean(), (mu,))
    assert d_mu.item() == pytest.approx(2.0, abs=0.6)


def test_estimators_are_deterministic_for_a_seed_and_reject_bad_sigma():
    assert torch.equal(pathwise_gradients(torch.sin, 0.5, 0.7, 100, _gen(9)),
                       pathwise_gradients(torch.sin, 0.5, 0.7, 100, _gen(9)))
    assert torch.equal(score_function_gradients(torch.sin, 0.5, 0.7, 100, _gen(9)),
                       score_function_gradients(torch.sin, 0.5, 0.7, 100, _gen(9)))
    with pytest.raises(ValueError):
        pathwise_gradients(square, 0.0, 0.0, 10)
    with pytest.raises(ValueError):
        score_function_gradients(square, 0.0, -1.0, 10)


# --------------------------------------------------------------------------- the estimators on a VAE's encoder

from vaebook.gradients import encoder_gradient_samples, encoder_gradient_variance  # noqa: E402
from vaebook.losses import log_likelihood  # noqa: E402
from vaebook.models import ModelConfig, build_model  # noqa: E402


def _tiny_vae(likelihood="bernoulli"):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch="linear", in_shape=(1, 2, 2), latent_dim=2, likelihood=likelihood)).double()


def _pathwise_reference(model, x, n):
    """Autograd gradient of a many-sample average of ``log p(x|z)``, z drawn with ``model.reparameterise``."""
    mu, logvar = model.encode(x)
    z = model.reparameterise(mu.expand(n, *mu.shape), logvar.expand(n, *logvar.shape), _gen(99))
    f = log_likelihood(model.decoder(z.flatten(0, 1)), x.expand(n, *x.shape).flatten(0, 1), model.config.likelihood)
    names = [name for name, _ in model.named_parameters() if not name.startswith("decoder.")]
    grads = torch.autograd.grad(f.mean(), [dict(model.named_parameters())[k] for k in names])
    return dict(zip(names, grads))


def test_encoder_estimators_are_unbiased_for_the_same_gradient():
    model = _tiny_vae()
    x = torch.tensor([[0.9, 0.1, 0.7, 0.2], [0.0, 1.0, 0.3, 0.6]], dtype=torch.float64).view(2, 1, 2, 2)
    n = 20_000
    estimates = encoder_gradient_samples(model, x, samples=n, generator=_gen(7))
    reference = _pathwise_reference(model, x, 100_000)
    assert set(estimates) == {"pathwise", "score", "score_baseline"}
    assert set(reference) == {"to_mu.weight", "to_mu.bias", "to_logvar.weight", "to_logvar.bias"}
    for name, exact in reference.items():
        assert exact.abs().max() > 1e-3  # a gradient worth estimating
        path = estimates["pathwise"][name]
        assert path.shape == (n, *exact.shape)
        for estimator in ("pathwise", "score", "score_baseline"):
            g = estimates[estimator][name]
            se = g.std(0) / math.sqrt(n)
            assert ((g.mean(0) - exact).abs() < 5 * se + 1e-6).all(), (estimator, name)
        se_both = (path.var(0) / n + estimates["score"][name].var(0) / n).sqrt()
        assert ((path.mean(0) - estimates["score"][name].mean(0)).abs() < 5 * se_both).all(), name


def test_baseline_keeps_the_mean_and_removes_a_large_offset_from_the_variance():
    # Images far from anything the decoder outputs: log p(x|z) sits near a large negative constant.
    model = _tiny_vae("gaussian")
    x = torch.full((2, 1, 2, 2), 10.0, dtype=torch.float64)
    x[1] += 1.0
    n = 20_000
    estimates = encoder_gradient_samples(model, x, samples=n, generator=_gen(8))
    for name in estimates["score"]:
        plain, based = estimates["score"][name], estimates["score_baseline"][name]
        se = (plain.var(0) / n + based.var(0) / n).sqrt()
        assert ((plain.mean(0) - based.mean(0)).abs() < 5 * se).all(), name
    table = encoder_gradient_variance(model, x, samples=2_000, generator=_gen(9))
    assert set(table) == {"to_mu", "to_logvar"}
    for row in table.values():
        assert row["score_baseline"] < 0.1 * row["score"]
        assert row["ratio"] == pytest.approx(row["score"] / row["pathwise"])
        assert row["ratio_baseline"] < row["ratio"]
    assert "score_baseline" not in encoder_gradient_variance(model, x, samples=50, baseline=False)["to_mu"]

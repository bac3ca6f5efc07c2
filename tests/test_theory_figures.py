"""Theory figures: the KL fits land where the maths says, the curves are right, the PNGs are reproducible."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vaebook import gradients, losses, plots  # noqa: E402
from vaebook.build import ARTEFACTS, build_artefacts  # noqa: E402

MIXTURE_VARIANCE = 0.6**2 + 2.0**2  # 4.36: within-mode variance plus the spread of the means


def test_forward_kl_fit_matches_the_mixture_moments():
    mu, sigma, kl = losses.fit_gaussian_kl("forward")
    assert abs(mu) < 1e-3
    assert sigma**2 == pytest.approx(MIXTURE_VARIANCE, rel=1e-3)
    assert kl > 0


def test_reverse_kl_fit_sits_on_one_mode_and_beats_the_forward_fit_in_its_own_direction():
    mu, sigma, kl = losses.fit_gaussian_kl("reverse")
    assert abs(mu) == pytest.approx(2.0, abs=0.05)
    assert sigma == pytest.approx(0.6, abs=0.03)
    # q on one mode sees half of p's mass there: KL(q || p) is close to log 2
    assert kl == pytest.approx(math.log(2), abs=0.02)
    f_mu, f_sigma, f_kl = losses.fit_gaussian_kl("forward")
    forward_fit_reverse_kl = float(losses.gaussian_mixture_kl(f_mu, f_sigma, "reverse"))
    reverse_fit_forward_kl = float(losses.gaussian_mixture_kl(mu, sigma, "forward"))
    assert kl < forward_fit_reverse_kl
    assert f_kl < reverse_fit_forward_kl  # and the other way round: each fit wins in its own direction
    assert min(kl, f_kl, forward_fit_reverse_kl, reverse_fit_forward_kl) >= 0


def test_mixture_kl_is_zero_for_the_mixture_itself_and_checks_direction():
    # a "mixture" of one component: the KL to the same Gaussian is 0 up to quadrature error
    one = ((1.0, 0.5, 0.8),)
    x = torch.linspace(-12, 12, 4801, dtype=torch.float64)
    p = losses.mixture_log_density(x, one).exp()
    assert float(torch.trapezoid(p, x)) == pytest.approx(1.0, abs=1e-9)
    kls = losses.gaussian_mixture_kl(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]), "forward")
    assert kls.shape == (2,) and (kls >= 0).all()
    with pytest.raises(ValueError):
        losses.gaussian_mixture_kl(0.0, 1.0, "sideways")


def test_bce_excess_is_the_bernoulli_kl_and_squared_error_is_bounded():
    p = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    for x in (0.0, 0.5, 0.9):
        excess = losses.bernoulli_cross_entropy(p, x) - losses.bernoulli_cross_entropy(torch.tensor(x, dtype=torch.float64), x)
        kl = torch.xlogy(torch.tensor(x), torch.tensor(x) / p) + torch.xlogy(torch.tensor(1 - x), (1 - x) / (1 - p))
        torch.testing.assert_close(excess, kl.double())
        assert float(excess.min()) >= -1e-12 and float(((p - x) ** 2).max()) <= 1
    # confidently wrong: cross-entropy is large where squared error is at most 1
    assert float(losses.bernoulli_cross_entropy(torch.tensor(1e-6, dtype=torch.float64), 1.0)) > 13


def test_normal_to_target_turns_normal_noise_into_the_mixture():
    z = torch.randn(50_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = gradients.normal_to_target(z)
    weights, means, sds = zip(*gradients.SHAPE_MIXTURE)
    mean = sum(w * m for w, m in zip(weights, means))
    var = sum(w * (s**2 + m**2) for w, m, s in zip(weights, means, sds)) - mean**2
    assert float(x.mean()) == pytest.approx(mean, abs=0.03)
    assert float(x.var()) == pytest.approx(var, rel=0.03)
    assert (torch.diff(gradients.normal_to_target(torch.linspace(-4, 4, 101, dtype=torch.float64))) > 0).all()


def test_the_figures_without_data_are_reproducible_pngs(tmp_path):
    open_before = set(matplotlib.pyplot.get_fignums())
    first = build_artefacts(tmp_path / "a", rows=[r for r in ARTEFACTS if r.data is None])
    names = ["autoencoder-diagram.png", "vae-diagram.png", "transposed-convolution.png", "mse-vs-bce.png",
             "kl-asymmetry.png", "inverse-transform.png", "gradient-variance.png", "diffusion-toy.png"]
    assert [p.name for p in first] == names
    for p in first:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 10_000
    second = build_artefacts(tmp_path / "b", rows=[r for r in ARTEFACTS if r.data is None])
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert set(matplotlib.pyplot.get_fignums()) == open_before  # every figure it drew was closed


def test_figure_functions_return_figures_without_a_path():
    fig = plots.penalty_figure(targets=(0.2, 0.8))
    assert len(fig.axes) == 2
    matplotlib.pyplot.close(fig)
    fig = plots.inverse_transform_figure(seed=1, n=2000)
    assert len(fig.axes) == 3 and np.isfinite(fig.axes[2].patches[0].get_height())
    matplotlib.pyplot.close(fig)

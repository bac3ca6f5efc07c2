"""Two ways to differentiate an expectation: the pathwise (reparameterisation) and score-function estimators.

A VAE's loss contains ``E_{z ~ q(z|x)}[f(z)]`` with ``q = N(mu, sigma^2)`` and needs its
gradient with respect to ``theta = (mu, sigma)``. Drawing ``z = sample(N(mu, sigma^2))``
gives a *number*: a sampler is not a differentiable function of its parameters, so
back-propagation stops at the sample. In PyTorch
``torch.distributions.Normal(mu, sigma).sample()`` returns a tensor detached from
``mu`` and ``sigma``, and ``torch.normal(mu, sigma)`` has a backward that returns zero
gradients for both. The gradient has to come from somewhere else:

* **pathwise / reparameterisation**: write ``z = mu + sigma * eps`` with
  ``eps ~ N(0, 1)`` drawn *independently of theta*. The randomness is now an input,
  ``z`` is a differentiable function of ``theta``, and
  ``d/dtheta E[f(z)] = E[f'(z) dz/dtheta]``: ``f'(z)`` for ``mu`` and ``f'(z) eps`` for
  ``sigma``. Autograd computes it through the ordinary chain rule.
* **score function / REINFORCE / likelihood ratio**: differentiate the density instead
  of the sample, ``d/dtheta E[f(z)] = E[f(z) d/dtheta log N(z; mu, sigma^2)]``. It only
  needs values of ``f`` (no derivative, so ``f`` may be discrete or a black box), but
  each sample's estimate is ``f(z)`` times a zero-mean random "score", so it
  fluctuates with the size of ``f`` itself, not of its slope.

For a smooth ``f`` the pathwise estimator's spread is set by how much ``f'`` varies over
the typical ``z``; the score function's by how much ``f`` varies, multiplied by a score
of size ``1/sigma``. Shifting ``f`` by a constant leaves the pathwise estimates
unchanged but changes every score-function estimate, and as ``sigma -> 0`` the score
function's variance blows up like ``f(mu)^2 / sigma^2`` while the pathwise one vanishes. For
``f(z) = z^2`` at ``mu = 1, sigma = 1`` the variances of the ``d/dmu`` estimates are 4
(pathwise) and 30 (score function). This is a rule of thumb for ``f`` that is smooth
*on the scale of sigma*, not a theorem: for ``f(z) = sin z`` with ``sigma`` above
about 1 the slope ``cos z`` swings over its whole range within the typical ``z``,
while ``E[sin z]`` (and so every score-function estimate) shrinks, and the score
function has the lower variance (see `vaebook.plots.gradient_variance_figure`).

Subtracting a constant ``baseline`` from ``f`` (a control variate) keeps the
score-function estimator unbiased, because ``E[score] = 0``, and lowers its variance
when the baseline is close to ``E[f(z)]``.

`encoder_gradient_variance` measures the same comparison on a trained VAE's encoder, per
layer, for the reconstruction term ``E_q[log p(x|z)]``, with and without a leave-one-out
baseline. The toy functions here work in float64; all take their randomness from an
optional seeded ``torch.Generator``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .losses import normal_log_density
from .models import VAE

Function = Callable[[torch.Tensor], torch.Tensor]


def _eps(n: int, generator: torch.Generator | None) -> torch.Tensor:
    if n < 1:
        raise ValueError(f"n must be positive, not {n}")
    return torch.randn(n, generator=generator, dtype=torch.float64)


def _check_sigma(sigma: float) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, not {sigma}")


def pathwise_gradients(f: Function, mu: float, sigma: float, n: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample reparameterisation estimates of ``(d/dmu, d/dsigma) E_{z~N(mu, sigma^2)}[f(z)]``.

    Draws ``eps ~ N(0, 1)``, forms ``z = mu + sigma * eps`` from copies of ``mu`` and
    ``sigma`` that require gradients (one copy per sample, so autograd returns each
    sample's gradient rather than their sum) and back-propagates ``f(z)``. Row ``i`` is
    ``(f'(z_i), f'(z_i) eps_i)``; the mean of the rows is an unbiased estimate of the
    gradient whenever ``f`` is differentiable (almost everywhere, with ``f'`` integrable).
    For a step function ``f'`` is 0 almost everywhere and the estimate is wrong: that is
    where only the score function works.

    Args:
        f: an elementwise, torch-differentiable function, e.g. ``lambda z: z ** 2``.
        mu, sigma: the Gaussian's mean and standard deviation (``sigma > 0``).
        n: number of samples.
        generator: the source of ``eps``.

    Returns:
        ``(n, 2)`` float64: column 0 estimates ``d/dmu``, column 1 ``d/dsigma``.
    """
    _check_sigma(sigma)
    eps = _eps(n, generator)
    mus = torch.full((n,), float(mu), dtype=torch.float64, requires_grad=True)
    sigmas = torch.full((n,), float(sigma), dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(n, dtype=torch.float64)
    with torch.enable_grad():
        z = mus + sigmas * eps  # eps carries the randomness, so z is differentiable in (mu, sigma)
        out = f(z)
        if not out.requires_grad:  # f ignores its input (a constant): the gradient is zero
            return torch.stack([zeros, zeros], 1)
        d_mu, d_sigma = torch.autograd.grad(out.sum(), (mus, sigmas), allow_unused=True)
    d_mu = zeros if d_mu is None else d_mu
    d_sigma = zeros if d_sigma is None else d_sigma
    return torch.stack([d_mu, d_sigma], 1).detach()


def score_function_gradients(f: Function, mu: float, sigma: float, n: int,
                             generator: torch.Generator | None = None, baseline: float = 0.0) -> torch.Tensor:
    """Per-sample score-function (REINFORCE) estimates of ``(d/dmu, d/dsigma) E_{z~N(mu, sigma^2)}[f(z)]``.

    Row ``i`` is ``(f(z_i) - b) * d/dtheta log N(z_i; mu, sigma^2)``, i.e.

    * ``d/dmu``:    ``(f(z) - b) (z - mu) / sigma^2``
    * ``d/dsigma``: ``(f(z) - b) ((z - mu)^2 / sigma^3 - 1 / sigma)``

    with ``b`` the ``baseline``. Only values of ``f`` are used, never its derivative.
    The baseline does not bias the estimate, since ``E[d/dtheta log q(z)] =
    d/dtheta integral q = 0``, and it reduces the variance when it is near ``E[f(z)]``
    (for ``d/dmu`` the best constant is ``E[f(z) s^2] / E[s^2]`` with ``s`` the score).
    It must not depend on the sample it multiplies, or the estimate is biased.

    Args:
        f: an elementwise function of a tensor; need not be differentiable.
        mu, sigma: the Gaussian's mean and standard deviation (``sigma > 0``).
        n: number of samples.
        generator: the source of the samples.
        baseline: a constant subtracted from ``f(z)`` (a control variate).

    Returns:
        ``(n, 2)`` float64: column 0 estimates ``d/dmu``, column 1 ``d/dsigma``.
    """
    _check_sigma(sigma)
    eps = _eps(n, generator)
    with torch.no_grad():
        z = mu + sigma * eps
        weight = f(z).to(torch.float64) - baseline
        d_mu = weight * (z - mu) / sigma**2
        d_sigma = weight * ((z - mu) ** 2 / sigma**3 - 1.0 / sigma)
    return torch.stack([d_mu, d_sigma], 1)


def estimator_variance_table(f: Function, mu: float, sigmas: Sequence[float], n: int,
                             generator: torch.Generator | None = None,
                             baseline: float | None = None) -> dict[str, torch.Tensor]:
    """Mean and variance of the per-sample ``d/dmu`` estimates of both estimators, for each ``sigma``.

    Each estimator gets its own ``n`` samples per ``sigma``. The variance is that of a
    *single-sample* estimate; an average of ``n`` samples has ``n`` times less.

    Args:
        baseline: if given, a third estimator is added: the score function with this
            constant baseline (keys ``score_baseline_mean`` and ``score_baseline_var``).

    Returns:
        float64 tensors of length ``len(sigmas)``: ``sigma``, ``pathwise_mean``,
        ``pathwise_var``, ``score_mean``, ``score_var`` (and the baseline pair).
    """
    rows: dict[str, list[float]] = {"sigma": [], "pathwise_mean": [], "pathwise_var": [],
                                    "score_mean": [], "score_var": []}
    if baseline is not None:
        rows.update(score_baseline_mean=[], score_baseline_var=[])
    for sigma in sigmas:
        rows["sigma"].append(float(sigma))
        estimators = {"pathwise": pathwise_gradients(f, mu, sigma, n, generator)[:, 0],
                      "score": score_function_gradients(f, mu, sigma, n, generator)[:, 0]}
        if baseline is not None:
            estimators["score_baseline"] = score_function_gradients(f, mu, sigma, n, generator, baseline)[:, 0]
        for name, g in estimators.items():
            rows[f"{name}_mean"].append(float(g.mean()))
            rows[f"{name}_var"].append(float(g.var()))
    return {key: torch.tensor(values, dtype=torch.float64) for key, values in rows.items()}


# --------------------------------------------------------------------------- reshaping noise (the inverse transform)


# A skewed two-mode target for the inverse-transform figure: (weight, mean, standard deviation).
SHAPE_MIXTURE: tuple[tuple[float, float, float], ...] = ((0.35, -2.0, 0.5), (0.65, 1.5, 0.7))


def _mixture_cdf(x: torch.Tensor, components: Sequence[tuple[float, float, float]]) -> torch.Tensor:
    return sum(w * torch.special.ndtr((x - m) / s) for w, m, s in components)


def normal_to_target(z: torch.Tensor,
                     components: Sequence[tuple[float, float, float]] = SHAPE_MIXTURE) -> torch.Tensor:
    """``g(z) = F^-1(Phi(z))``: the increasing map that turns ``N(0, 1)`` samples into samples of a Gaussian mixture.

    ``Phi(z)`` is uniform on (0, 1) when ``z ~ N(0, 1)``, and ``F^-1`` of a uniform has
    CDF ``F``; the mixture's ``F`` has no closed-form inverse, so it is inverted by
    linear interpolation on a grid of 8001 points over [-8, 8].
    """
    grid = torch.linspace(-8.0, 8.0, 8001, dtype=torch.float64)
    u = torch.special.ndtr(z.double())
    return torch.from_numpy(np.interp(u.numpy(), _mixture_cdf(grid, components).numpy(), grid.numpy()))


# --------------------------------------------------------------------------- the same comparison on a VAE's encoder


def encoder_gradient_samples(model: VAE, x: torch.Tensor, samples: int = 64, baseline: bool = True,
                             generator: torch.Generator | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Per-sample estimates of the gradient of ``mean_n E_{q(z|x_n)}[log p(x_n|z)]`` w.r.t. the encoder's weights.

    One batch ``x`` of ``N`` images, ``samples`` draws ``z = mu + sigma * eps`` per image (via
    ``model.reparameterise``). Draw ``s`` gives one estimate per estimator:

    * ``pathwise``: the gradient of ``mean_n log p(x_n|z_sn)`` back-propagated through ``z``;
    * ``score``: the gradient of ``mean_n f_sn log q(z_sn|x_n)`` with ``z`` detached, ``f = log p(x|z)``;
    * ``score_baseline`` (if ``baseline``): ``f_sn`` minus the mean of ``f_tn`` over the other draws
      ``t != s`` of the same image (leave-one-out), which does not depend on draw ``s``, so the
      estimate stays unbiased.

    The chain rule is split at the encoder's outputs: autograd first gives each draw's gradient
    with respect to its own copy of ``(mu, logvar)`` (the draws are independent, so one backward
    pass gives them all), then one batched backward pass carries them into the encoder.

    Returns:
        ``{estimator: {parameter name: (samples, *parameter.shape) tensor}}`` for the parameters
        outside ``model.decoder``.
    """
    if samples < 2:
        raise ValueError(f"samples must be at least 2, not {samples}")
    params = {name: p for name, p in model.named_parameters() if not name.startswith("decoder.")}
    with torch.enable_grad():
        mu, logvar = model.encode(x)  # (N, d) each
        mus, logvars = (t.detach().expand(samples, *t.shape).clone().requires_grad_() for t in (mu, logvar))
        z = model.reparameterise(mus, logvars, generator)  # (S, N, d)
        xs = x.expand(samples, *x.shape).flatten(0, 1)
        f = model.log_likelihood(z.flatten(0, 1), xs).view(samples, -1)  # (S, N): log p(x_n | z_sn)
        log_q = normal_log_density(z.detach(), mus, logvars).sum(-1)  # (S, N): log q(z_sn | x_n)
        weight = f.detach()
        objectives = {"pathwise": f, "score": weight * log_q}
        if baseline:
            leave_one_out = (weight.sum(0) - weight) / (samples - 1)
            objectives["score_baseline"] = (weight - leave_one_out) * log_q
        out = {}
        for name, objective in objectives.items():
            g_mu, g_logvar = torch.autograd.grad(objective.mean(1).sum(), (mus, logvars), retain_graph=True)
            grads = torch.autograd.grad((mu, logvar), list(params.values()), (g_mu, g_logvar),
                                        retain_graph=True, is_grads_batched=True)
            out[name] = dict(zip(params, grads))
    return out


def encoder_gradient_variance(model: VAE, x: torch.Tensor, samples: int = 64, baseline: bool = True,
                              generator: torch.Generator | None = None) -> dict[str, dict[str, float]]:
    """Variance of one-sample encoder-gradient estimates, per layer, from `encoder_gradient_samples`.

    For each layer (``"body.1"``, ``"to_mu"``, ...; weight and bias together): the variance over
    the draws of each coordinate of the gradient, summed over the layer's coordinates (the
    expected squared distance of a one-sample estimate from the mean), for each estimator, and
    ``ratio`` (and ``ratio_baseline``): score-function variance over pathwise variance.
    """
    table: dict[str, dict[str, float]] = {}
    for estimator, grads in encoder_gradient_samples(model, x, samples, baseline, generator).items():
        for name, g in grads.items():
            row = table.setdefault(name.rsplit(".", 1)[0], {})
            row[estimator] = row.get(estimator, 0.0) + float(g.double().var(0).sum())
    for row in table.values():
        row["ratio"] = row["score"] / row["pathwise"]
        if baseline:
            row["ratio_baseline"] = row["score_baseline"] / row["pathwise"]
    return table

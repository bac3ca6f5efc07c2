"""The theory chapters' figures, drawn from closed forms and small computations (no trained model
except for the Monte Carlo one): squared error against cross-entropy, the two KL directions,
reshaping noise, gradient estimators' variance, naive against importance-sampled log p(x)."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..gradients import SHAPE_MIXTURE, normal_to_target
from ..losses import bernoulli_cross_entropy, fit_gaussian_kl, gaussian_mixture_kl, mixture_log_density, normal_log_density
from ..models import VAE
from .base import as_float, save


def penalty_figure(targets: Sequence[float] = (0.0, 0.5, 0.9), path: str | os.PathLike | None = None) -> Figure:
    """Squared error against binary cross-entropy as a function of the prediction ``p``, one panel per target ``x``.

    Plots ``(p - x)^2`` and ``BCE(p, x) - BCE(x, x)`` with
    ``BCE(p, x) = -[x log p + (1 - x) log(1 - p)]``. Subtracting the minimum
    ``BCE(x, x)`` (the entropy of a Bernoulli(x)) puts both curves' minimum at 0 when
    ``p = x``; the excess is ``KL(Bernoulli(x) || Bernoulli(p))``. Squared error never
    exceeds 1, whereas the cross-entropy grows without bound as a prediction becomes
    confidently wrong (``p -> 0`` or ``1`` with ``x`` on the other side).
    """
    p = torch.linspace(1e-4, 1 - 1e-4, 2001, dtype=torch.float64)
    ymax = 3.0
    fig, axes = plt.subplots(1, len(targets), figsize=(2.6 * len(targets), 2.9), sharey=True, squeeze=False)
    for ax, x in zip(axes[0], targets):
        excess = bernoulli_cross_entropy(p, x) - bernoulli_cross_entropy(torch.tensor(float(x), dtype=torch.float64), x)
        ax.plot(p.numpy(), ((p - x) ** 2).numpy(), color="C0", label="squared error $(p - x)^2$")
        ax.plot(p.numpy(), excess.numpy(), color="C3", label=r"BCE$(p, x)$ $-$ BCE$(x, x)$")
        ax.axvline(x, color="0.5", ls=":", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, ymax), xlabel="prediction $p$")
        ax.set_title(f"target $x = {x:g}$", loc="left")
        ax.grid(alpha=0.3)
        # the confidently wrong end, where the cross-entropy runs off the top
        if x != 0.5:
            wrong_end = 1.0 if x < 0.5 else 0.0
            ax.annotate(r"BCE $\to \infty$", xy=(0.97 if wrong_end else 0.03, ymax * 0.97),
                        xytext=(0.62 if wrong_end else 0.38, ymax * 0.8), ha="center", fontsize=8.5, color="C3",
                        arrowprops={"arrowstyle": "->", "color": "C3"})
        else:
            ax.text(0.5, ymax * 0.8, r"BCE $\to \infty$ at both ends", ha="center", fontsize=8.5, color="C3")
    axes[0, 0].set_ylabel("penalty")
    axes[0, 0].text(0.33, 1.25, "confident and wrong:\nBCE explodes,\nsquared error $\\leq 1$", fontsize=8.5,
                    ha="center", va="bottom", color="0.25")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save(fig, path)

def kl_asymmetry_figure(path: str | os.PathLike | None = None) -> Figure:
    """A bimodal ``p`` and the single Gaussians fitted to it by forward and by reverse KL.

    Forward ``KL(p || q)`` covers both modes with one wide bump, putting much of its
    mass in the valley where ``p`` has almost none; reverse ``KL(q || p)`` (the
    direction in the ELBO) picks one mode and ignores the other. The legend gives each
    fit's KL in both directions.
    """
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    fits = {d: fit_gaussian_kl(d) for d in ("forward", "reverse")}
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    ax.fill_between(x.numpy(), mixture_log_density(x).exp().numpy(), color="0.8", label="target $p$ (two modes)")
    styles = {"forward": ("C0", "-", r"$q$ minimising KL$(p\,\|\,q)$: mass-covering"),
              "reverse": ("C3", "--", r"$q$ minimising KL$(q\,\|\,p)$: mode-seeking")}
    for direction, (mu, sigma, _) in fits.items():
        colour, ls, name = styles[direction]
        forward = float(gaussian_mixture_kl(mu, sigma, "forward"))
        reverse = float(gaussian_mixture_kl(mu, sigma, "reverse"))
        label = (f"{name}\n$\\mu$ = {round(mu, 2) + 0.0:.2f}, $\\sigma$ = {sigma:.2f};  "
                 f"KL$(p\\|q)$ = {forward:.2f}, KL$(q\\|p)$ = {reverse:.2f}")
        ax.plot(x.numpy(), normal_log_density(x, mu, 2 * np.log(sigma)).exp().numpy(), color=colour, ls=ls, lw=2, label=label)
    ax.set(xlim=(-6, 6), ylim=(0, 0.98), xlabel="$z$", ylabel="density")
    ax.legend(fontsize=8.5, frameon=False, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)

def inverse_transform_figure(path: str | os.PathLike | None = None, seed: int = 0, n: int = 20_000) -> Figure:
    """Reshaping noise with a deterministic function: why a ``N(0, I)`` prior costs a VAE nothing.

    (a) ``u ~ U(0, 1)`` pushed through the exponential's inverse CDF ``-log(1 - u)``
    has the exponential density. (b) The map ``g(z) = F^-1(Phi(z))`` for a skewed
    two-mode mixture ``F``. (c) ``g(z)`` for ``z ~ N(0, 1)`` has exactly the
    mixture's density. A decoder is such a ``g`` (learned, and in many dimensions), so
    a simple prior on ``z`` does not limit the shapes the data can take.
    """
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    expo = -torch.log1p(-u)
    z = torch.randn(n, generator=gen, dtype=torch.float64)
    shaped = normal_to_target(z)

    # (a) and (b) side by side, (c) the full width below them: legible in a text column
    fig, panels = plt.subplot_mosaic([["a", "b"], ["c", "c"]], figsize=(7.4, 5.6))
    axes = [panels[k] for k in "abc"]
    ax = axes[0]
    t = np.linspace(0, 6, 400)
    ax.hist(expo.numpy(), bins=np.linspace(0, 6, 49), density=True, color="C0", alpha=0.45,
            label=r"$-\log(1-u)$, $u \sim U(0, 1)$")
    ax.plot(t, np.exp(-t), color="C0", lw=2, label="Exp(1) density $e^{-x}$")
    ax.set(xlim=(0, 6), xlabel="$x$", ylabel="density")
    ax.set_title("(a) uniform through an inverse CDF", loc="left")
    ax.legend(fontsize=8.5, frameon=False)

    ax = axes[1]
    zz = torch.linspace(-3.5, 3.5, 701, dtype=torch.float64)
    ax.plot(zz.numpy(), normal_to_target(zz).numpy(), color="C2", lw=2)
    ax.set(xlim=(-3.5, 3.5), ylim=(-4.2, 4.2), xlabel="$z$", ylabel="$x = g(z)$")
    ax.set_title(r"(b) the map $g(z) = F^{-1}(\Phi(z))$", loc="left")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.text(-3.3, 3.6, "steep where the target has\nlittle mass, flat where it\nhas a lot", fontsize=8.5, va="top",
            color="0.3")

    ax = axes[2]
    x = torch.linspace(-4.5, 4.5, 600, dtype=torch.float64)
    density = mixture_log_density(x, SHAPE_MIXTURE).exp()
    ax.plot(x.numpy(), normal_log_density(x).exp().numpy(), color="0.45", ls="--", lw=1.2,
            label=r"$z \sim \mathcal{N}(0, 1)$")
    ax.hist(shaped.numpy(), bins=np.linspace(-4.5, 4.5, 61), density=True, color="C2", alpha=0.45,
            label="$g(z)$")
    ax.plot(x.numpy(), density.numpy(), color="C2", lw=2, label="target mixture")
    ax.set(xlim=(-4.5, 4.5), xlabel="$x$")
    ax.set_title("(c) normal noise through $g$", loc="left")
    ax.legend(fontsize=8.5, frameon=False, loc="upper left")
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)

def gradient_variance_figure(path: str | os.PathLike | None = None, seed: int = 0, mu: float = 1.0,
                             n: int = 10_000) -> Figure:
    """Variance of one-sample ``d/dmu E[f(z)]`` estimates, ``z ~ N(mu, sigma^2)``, against ``sigma``.

    Left: ``f(z) = z^2`` (gradient ``2 mu``), where the variances are known exactly:
    ``4 sigma^2`` for the pathwise estimator ``2z`` and
    ``mu^4 / sigma^2 + 14 mu^2 + 15 sigma^2`` for the score function ``z^2 (z - mu) / sigma^2``
    (dashed). Middle: ``f(z) = sin z`` (gradient ``cos(mu) exp(-sigma^2 / 2)``). The
    score function is also shown with a baseline, ``E[f(z)]`` estimated from 1,000
    separate samples. Right: the ratio of score-function to pathwise variance, which
    grows without bound as ``sigma -> 0``. It is not always above 1: for ``sin z`` and
    ``sigma`` beyond about 1 the slope ``cos z`` swings over its whole range within the
    typical ``z`` while ``E[sin z]`` and the score-function estimates shrink, and the
    score function wins. Each point uses ``n`` samples from `vaebook.gradients`.
    """
    from ..gradients import estimator_variance_table, score_function_gradients

    gen = torch.Generator().manual_seed(seed)
    sigmas = torch.logspace(-1, 0.5, 13, dtype=torch.float64)
    functions = {"$f(z) = z^2$": lambda z: z**2, r"$f(z) = \sin z$": torch.sin}
    fig, axes = plt.subplots(1, 3, figsize=(7.6, 3.9))
    for k, (ax, (name, f)) in enumerate(zip(axes[:2], functions.items())):
        table = estimator_variance_table(f, mu, sigmas.tolist(), n, generator=gen)
        with_baseline = []
        for sigma in sigmas.tolist():
            b = float(f(mu + sigma * torch.randn(1000, generator=gen, dtype=torch.float64)).mean())
            with_baseline.append(float(score_function_gradients(f, mu, sigma, n, gen, baseline=b)[:, 0].var()))
        s = sigmas.numpy()
        ax.loglog(s, table["pathwise_var"].numpy(), "o", color="C0", ms=4, label="pathwise (reparameterised)")
        ax.loglog(s, table["score_var"].numpy(), "s", color="C3", ms=4, label="score function")
        ax.loglog(s, with_baseline, "^", color="C1", ms=4, label=r"score function, baseline $\approx E[f]$")
        if k == 0:
            ax.loglog(s, 4 * s**2, "--", color="C0", lw=1, label="exact variance")
            ax.loglog(s, mu**4 / s**2 + 14 * mu**2 + 15 * s**2, "--", color="C3", lw=1)
        ax.set(xlabel=r"$\sigma$", ylabel=r"variance of one $\partial/\partial\mu$ estimate" if k == 0 else None)
        ax.set_title(f"{name}, $\\mu = {mu:g}$", loc="left")
        ax.grid(alpha=0.3, which="both")
        axes[2].loglog(s, (table["score_var"] / table["pathwise_var"]).numpy(), "o-", color=f"C{4 + k}", ms=4,
                       label=name)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    ax = axes[2]
    ax.axhline(1, color="0.5", ls=":", lw=1)
    ax.text(0.03, 1.25, "pathwise better", ha="left", va="bottom", fontsize=8.5, color="0.35",
            transform=ax.get_yaxis_transform())
    ax.text(0.03, 0.45, "score function better", ha="left", va="top", fontsize=8.5, color="0.35",
            transform=ax.get_yaxis_transform())
    ax.set(xlabel=r"$\sigma$", ylabel="score-function / pathwise variance")
    ax.set_title("variance ratio", loc="left")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8.5, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return save(fig, path)

def naive_monte_carlo_figure(model: VAE, x: torch.Tensor, ks: Sequence[int] = (1, 10, 100, 1000, 10000),
                             repeats: int = 5, seed: int = 0, path: str | os.PathLike | None = None) -> Figure:
    """Estimates of log p(x) for one image against the number of samples, from the prior and from q(z|x).

    Each dot is one estimate; sampling z from the prior wastes almost every sample on
    codes that explain x badly, so its estimates sit far below the importance-sampled ones.
    """
    from ..evaluate import log_likelihood_estimate

    x = as_float(x if x.dim() == 4 else x[None])
    gen = torch.Generator().manual_seed(seed)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for proposal, marker in (("prior", "o"), ("posterior", "s")):
        for j, k in enumerate(ks):
            est = torch.cat([log_likelihood_estimate(model, x, k, proposal, generator=gen) for _ in range(repeats)])
            ax.scatter([k] * repeats, est.numpy(), marker=marker, color="C0" if proposal == "prior" else "C1",
                       s=14, label=("z ~ p(z) (naive)" if proposal == "prior" else "z ~ q(z|x) (importance)")
                       if j == 0 else None)
    ax.set(xscale="log", xlabel="samples K", ylabel="estimate of log p(x) (nats)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    return save(fig, path)

"""Log-likelihoods, the Gaussian KL divergence and the (beta-)ELBO, with explicit reductions.

Every function here returns one number **per image** (shape ``(N,)``), summed over
pixels and latent dimensions, in nats. Averaging over the batch is left to the
caller, so no factor hides in a ``reduction='mean'``. With these conventions the
negative ELBO of one image is

    -ELBO(x) = -E_q[log p(x|z)] + KL(q(z|x) || p(z))

and a beta-VAE multiplies the KL term by ``beta``.

Many VAE implementations instead minimise ``mean MSE + w * KL`` with the mean taken
over pixels (and sometimes latent dimensions). `mse_kl_equivalence` says which
Gaussian ``sigma`` and which ``beta`` such a loss corresponds to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log p(x|z)`` for independent Bernoulli pixels with probabilities ``sigmoid(logits)``.

    Equals minus the binary cross-entropy summed over pixels. For targets in [0, 1]
    that are not exactly 0 or 1 it is the cross-entropy the book uses, not a
    normalised density (see the book's note on the continuous Bernoulli).
    """
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def normal_log_density(x: torch.Tensor, mean: torch.Tensor | float = 0.0,
                       logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``log N(x; mean, exp(logvar))`` elementwise: ``-((x - mean)^2 / exp(logvar) + logvar + log 2 pi) / 2``.

    The package's one Gaussian log-density. A Gaussian with diagonal covariance is a
    product of these, so its log-density is their sum over coordinates: that is how the
    decoder's Gaussian likelihood, the prior and ``q(z|x)`` of the importance-sampling
    estimate, probabilistic PCA and the KL figures all use it. The defaults give ``N(0, 1)``.
    """
    var = logvar.exp() if isinstance(logvar, torch.Tensor) else math.exp(logvar)
    return -0.5 * ((x - mean).pow(2) / var + logvar + LOG_2PI)


def gaussian_log_likelihood(mean: torch.Tensor, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """``log N(x; mean, sigma^2 I)`` summed over pixels, constants included.

    ``= -||x - mean||^2 / (2 sigma^2) - D log sigma - (D / 2) log(2 pi)`` for D pixels.
    ``sigma`` may be a tensor (a learned one), and gradients then flow into it.
    """
    log_sigma = sigma.log() if isinstance(sigma, torch.Tensor) else math.log(sigma)
    return normal_log_density(x, mean, 2 * log_sigma).flatten(1).sum(1)


def optimal_sigma(mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The shared standard deviation that maximises ``sum log N(x; mean, sigma^2)`` over every value.

    The log-likelihood of D values is ``-SSE / (2 sigma^2) - D log sigma - (D/2) log 2 pi``;
    its derivative in ``log sigma``, ``SSE / sigma^2 - D``, vanishes at ``sigma^2 = SSE / D``:
    the mean squared error. This is the closed form a learned shared sigma converges to
    (the "optimal sigma" of Rybkin et al. 2021), and it is only bounded away from 0 because
    the decoder's mean never matches every value exactly.
    """
    return (x - mean).pow(2).mean().sqrt()


def implied_mse(recon: float, sigma: float, dims: int) -> float:
    """The mean squared error per value behind a Gaussian reconstruction term ``recon`` (nats per image).

    Inverts ``recon = SSE / (2 sigma^2) + D log sigma + (D/2) log 2 pi`` for ``SSE / D``, so a
    recorded ``-log p(x|z)`` gives back the error the decoder made; its root is the sigma*
    of `optimal_sigma` for those errors.
    """
    return 2 * sigma**2 * (recon - dims * math.log(sigma) - 0.5 * dims * LOG_2PI) / dims


def log_likelihood(out: torch.Tensor, x: torch.Tensor, likelihood: str, sigma: float = 1.0,
                   x_logvar: torch.Tensor | None = None) -> torch.Tensor:
    """``log p(x|z)`` from the decoder's output: logits (Bernoulli) or the mean (Gaussian).

    A Gaussian decoder uses ``x_logvar`` (a learned log-variance, scalar or per value)
    when given, and the fixed ``sigma`` otherwise.
    """
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(out, x)
    if likelihood == "gaussian" and x_logvar is not None:
        return normal_log_density(x, out, x_logvar).flatten(1).sum(1)
    if likelihood == "gaussian":
        return gaussian_log_likelihood(out, x, sigma)
    raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', not {likelihood!r}")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, per_dimension: bool = False) -> torch.Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` in closed form, summed over latent dimensions.

    Per dimension: ``0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)``, which is zero exactly
    when ``mu = 0`` and ``sigma = 1`` and positive otherwise. With ``per_dimension=True``
    the ``(N, d)`` terms are returned unsummed (to see which dimensions carry information).
    """
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl if per_dimension else kl.sum(1)


def elbo_terms(output: dict[str, torch.Tensor], x: torch.Tensor, likelihood: str,
               sigma: float = 1.0) -> dict[str, torch.Tensor]:
    """The two terms of the negative ELBO, one number per image: ``-ELBO(x) = recon + kl``.

    ``recon = -log p(x|z)`` for the ``z`` the output was decoded from (one sample from
    ``q(z|x)`` for a VAE, the code for an autoencoder; the decoder's learned
    ``x_logvar`` replaces ``sigma`` when the output has one) and ``kl = KL(q(z|x) || p(z))``,
    zero for an autoencoder's output, which has no ``mu``.
    """
    if "recon" in output:  # a family of vaebook.models.FAMILIES scores itself: its terms are in the output
        return {"recon": output["recon"], "kl": output["kl"]}
    recon = -log_likelihood(output["out"], x, likelihood, sigma, output.get("x_logvar"))
    kl = gaussian_kl(output["mu"], output["logvar"]) if "mu" in output else torch.zeros_like(recon)
    return {"recon": recon, "kl": kl}


def loss_terms(output: dict[str, torch.Tensor], x: torch.Tensor, likelihood: str, sigma: float = 1.0,
               beta: float = 1.0, free_bits: float = 0.0) -> dict[str, torch.Tensor]:
    """The training loss of an autoencoder or VAE, averaged over the batch, per image, in nats.

    Args:
        output: a model's forward output; a VAE's has ``mu`` and ``logvar``.
        free_bits: if positive, the KL in ``loss`` is ``sum_j max(free_bits, KL_j)`` with
            ``KL_j`` the batch mean of dimension ``j``'s KL (Kingma et al., 2016);
            ``kl`` still reports the true KL.

    Returns:
        ``recon`` (``-log p(x|z)``), ``kl`` (0 for an autoencoder) and
        ``loss = recon + beta * kl``: the negative (beta-)ELBO for a VAE, the negative
        log-likelihood of the reconstruction for an autoencoder.

    A family of `vaebook.models.FAMILIES` puts its own per-image terms in its output:
    ``recon`` and ``kl`` (the two parts of its negative ELBO), and optionally ``aux`` (a
    training-only loss added to ``loss``, e.g. a VQ-VAE's codebook and commitment terms)
    or ``objective`` (the training loss itself when it is not the ELBO, e.g. a diffusion
    model's unweighted noise-prediction error).
    """
    terms = elbo_terms(output, x, likelihood, sigma)
    recon, kl = terms["recon"].mean(), terms["kl"].mean()
    if "objective" in output:
        return {"loss": output["objective"].mean(), "recon": recon, "kl": kl}
    if "aux" in output:
        return {"loss": recon + beta * kl + output["aux"].mean(), "recon": recon, "kl": kl}
    charged = kl
    if free_bits > 0 and "mu" in output:
        charged = gaussian_kl(output["mu"], output["logvar"], per_dimension=True).mean(0).clamp_min(free_bits).sum()
    return {"loss": recon + beta * charged, "recon": recon, "kl": kl}


@dataclass(frozen=True)
class MSEKLEquivalence:
    """What ``mean MSE + weight * KL`` is, as a Gaussian beta-ELBO.

    The loss ``L = SSE / D + w' KL`` (``SSE`` summed over the ``D`` values of one image,
    ``w'`` the KL weight per image) times ``c = D / (2 sigma^2)`` is
    ``SSE / (2 sigma^2) + (w' D / (2 sigma^2)) KL``: the negative beta-ELBO with a
    Gaussian decoder of standard deviation ``sigma`` and ``beta = w' D / (2 sigma^2)``,
    up to a constant and the positive factor ``c`` (which Adam all but ignores and
    SGD folds into the learning rate). Any ``(sigma, beta)`` on that curve is the same
    objective; `sigma` and `beta` pick a point on it.
    """

    weight: float
    n_pixels: int
    kl_scale: float = 1.0

    def beta(self, sigma: float = 1 / math.sqrt(2)) -> float:
        """The beta implied for a decoder with standard deviation ``sigma``.

        The default ``sigma = 1/sqrt(2)`` makes ``SSE / (2 sigma^2)`` the plain sum of
        squared errors, the loss of ``mse_loss(..., reduction='sum')``.
        """
        return self.weight * self.kl_scale * self.n_pixels / (2 * sigma**2)

    def sigma(self, beta: float = 1.0) -> float:
        """The decoder standard deviation at which the loss is exactly the beta-ELBO with this ``beta``."""
        return math.sqrt(self.weight * self.kl_scale * self.n_pixels / (2 * beta))


def mse_kl_equivalence(weight: float, n_pixels: int, kl_reduction: Literal["sum", "mean"] = "sum",
                       latent_dim: int | None = None) -> MSEKLEquivalence:
    """Translate ``mse_loss(x_hat, x, reduction='mean') + weight * KL`` into ``(sigma, beta)``.

    Args:
        weight: the KL weight ``w`` (1e-5 is a common choice for face images).
        n_pixels: values per image, ``C * H * W`` (3 * 218 * 178 = 116,412 for CelebA).
        kl_reduction: ``"sum"`` if the KL is summed over latent dimensions (and averaged
            over the batch, as the MSE is), ``"mean"`` if averaged over them too, which
            divides the effective weight by ``latent_dim``.

    Example: ``w = 1e-5`` on 218x178 RGB gives ``beta = 1.16`` at the
    sum-of-squares sigma of 0.707, or ``beta = 1`` at ``sigma = 0.763``.
    """
    if kl_reduction == "mean":
        if not latent_dim:
            raise ValueError("kl_reduction='mean' needs latent_dim")
        return MSEKLEquivalence(weight, n_pixels, 1.0 / latent_dim)
    if kl_reduction != "sum":
        raise ValueError(f"kl_reduction must be 'sum' or 'mean', not {kl_reduction!r}")
    return MSEKLEquivalence(weight, n_pixels)


# --------------------------------------------------------------------------- small exact computations of the theory chapters


def bernoulli_cross_entropy(p: torch.Tensor, x: float) -> torch.Tensor:
    """``-[x log p + (1 - x) log(1 - p)]``, with ``0 log 0 = 0`` so that ``bernoulli_cross_entropy(x, x)`` is finite for x in {0, 1}."""
    x_t = torch.as_tensor(float(x), dtype=p.dtype)
    return -(torch.xlogy(x_t, p) + torch.xlogy(1 - x_t, 1 - p))


# The bimodal target of the KL figure: (weight, mean, standard deviation) per component.
KL_MIXTURE: tuple[tuple[float, float, float], ...] = ((0.5, -2.0, 0.6), (0.5, 2.0, 0.6))


_KL_GRID = torch.linspace(-12.0, 12.0, 4801, dtype=torch.float64)


def mixture_log_density(x: torch.Tensor,
                         components: Sequence[tuple[float, float, float]] = KL_MIXTURE) -> torch.Tensor:
    terms = torch.stack([np.log(w) + normal_log_density(x, m, 2 * np.log(s)) for w, m, s in components])
    return torch.logsumexp(terms, 0)


def gaussian_mixture_kl(mu: torch.Tensor | float, sigma: torch.Tensor | float, direction: str,
                        grid: torch.Tensor | None = None) -> torch.Tensor:
    """KL between the bimodal `KL_MIXTURE` ``p`` and ``q = N(mu, sigma^2)``, by the trapezoid rule on a fine grid.

    ``direction="forward"`` is ``KL(p || q) = E_p[log p - log q]``; ``"reverse"`` is
    ``KL(q || p) = E_q[log q - log p]``. ``mu`` and ``sigma`` may be tensors of any
    (broadcastable) shape, giving one KL each, and the result is differentiable in them.
    The default ``grid`` spans [-12, 12] in steps of 0.005, wide and fine enough for
    ``sigma`` in about [0.05, 3] and ``|mu| < 5``.
    """
    x = _KL_GRID if grid is None else grid
    mu = torch.as_tensor(mu, dtype=x.dtype)[..., None]
    sigma = torch.as_tensor(sigma, dtype=x.dtype)[..., None]
    log_p, log_q = mixture_log_density(x), normal_log_density(x, mu, 2 * sigma.log())
    if direction == "forward":
        integrand = log_p.exp() * (log_p - log_q)
    elif direction == "reverse":
        integrand = log_q.exp() * (log_q - log_p)
    else:
        raise ValueError(f"direction must be 'forward' or 'reverse', not {direction!r}")
    return torch.trapezoid(integrand, x, dim=-1)


def fit_gaussian_kl(direction: str) -> tuple[float, float, float]:
    """The Gaussian ``q = N(mu, sigma^2)`` closest to the bimodal `KL_MIXTURE` in one KL direction.

    Forward ``KL(p || q)`` is minimised by matching moments: ``q`` spreads over both
    modes (mass-covering; mean 0, variance ``0.6^2 + 2^2 = 4.36``). Reverse
    ``KL(q || p)`` punishes ``q`` for putting mass where ``p`` has little, so ``q``
    settles on one mode (mode-seeking; ``mu`` near 2, ``sigma`` near 0.6, KL near
    ``log 2``, since ``q`` then sees only half of ``p``'s mass).

    The reverse KL has more than one local minimum: besides the two modes, a wide
    ``q`` centred at 0 (``sigma`` about 1.8, KL about 1.14) is one too, and a
    gradient-based fit started from a wide ``q`` stops there. So the fit first
    searches a grid (``mu`` in [-4, 4] by 0.2, 32 values of ``sigma`` from 0.2 to 4)
    (integrating on a coarser grid, steps of 0.02) for the global minimum, taking the
    larger ``mu`` of two mirror-image ties, then refines it with L-BFGS over
    ``(mu, log sigma)`` on the fine grid.

    The result is deterministic, so it is cached.

    Returns:
        ``(mu, sigma, kl)`` as floats, the KL in the direction fitted, in nats.
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', not {direction!r}")
    if direction not in _KL_FITS:
        _KL_FITS[direction] = _fit_gaussian_kl(direction)
    return _KL_FITS[direction]


_KL_FITS: dict[str, tuple[float, float, float]] = {}


def _fit_gaussian_kl(direction: str) -> tuple[float, float, float]:
    mus = torch.linspace(-4.0, 4.0, 41, dtype=torch.float64)
    sigmas = torch.logspace(np.log10(0.2), np.log10(4.0), 32, dtype=torch.float64)
    coarse = torch.linspace(-12.0, 12.0, 1201, dtype=torch.float64)
    with torch.no_grad():
        table = gaussian_mixture_kl(mus[:, None], sigmas, direction, coarse)  # (mu, sigma)
    near_best = table <= table.min() + 1e-9
    i = int(near_best.any(1).nonzero().max())  # the largest mu among the (mirror-image) minima
    j = int(table[i].argmin())
    mu = mus[i].clone().requires_grad_(True)
    log_sigma = sigmas[j].log().clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([mu, log_sigma], lr=1.0, max_iter=200, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = gaussian_mixture_kl(mu, log_sigma.exp(), direction)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    with torch.no_grad():
        kl = gaussian_mixture_kl(mu, log_sigma.exp(), direction)
        return float(mu), float(log_sigma.exp()), float(kl)

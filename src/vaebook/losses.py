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
from typing import Literal

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


def gaussian_log_likelihood(mean: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``log N(x; mean, sigma^2 I)`` summed over pixels, constants included.

    ``= -||x - mean||^2 / (2 sigma^2) - D log sigma - (D / 2) log(2 pi)`` for D pixels.
    """
    d = x[0].numel()
    sse = (x - mean).pow(2).flatten(1).sum(1)
    return -0.5 * sse / sigma**2 - d * math.log(sigma) - 0.5 * d * LOG_2PI


def log_likelihood(out: torch.Tensor, x: torch.Tensor, likelihood: str, sigma: float = 1.0) -> torch.Tensor:
    """``log p(x|z)`` from the decoder's output: logits (Bernoulli) or the mean (Gaussian)."""
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(out, x)
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


def elbo(out: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, likelihood: str,
         sigma: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """The (beta-)ELBO per image, ``log p(x|z) - beta * KL(q(z|x) || p(z))``, with ``z`` one sample from q.

    With ``beta = 1`` it is a lower bound on ``log p(x)`` (in expectation over z).
    """
    return log_likelihood(out, x, likelihood, sigma) - beta * gaussian_kl(mu, logvar)


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
    """
    recon = -log_likelihood(output["out"], x, likelihood, sigma).mean()
    if "mu" in output:
        kl = gaussian_kl(output["mu"], output["logvar"]).mean()
    else:
        kl = torch.zeros((), device=x.device)
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
        weight: the KL weight ``w`` (the drafts use 1e-5).
        n_pixels: values per image, ``C * H * W`` (3 * 218 * 178 = 116,412 for CelebA).
        kl_reduction: ``"sum"`` if the KL is summed over latent dimensions (and averaged
            over the batch, as the MSE is), ``"mean"`` if averaged over them too, which
            divides the effective weight by ``latent_dim``.

    Example: the drafts' ``w = 1e-5`` on 218x178 RGB gives ``beta = 1.16`` at the
    sum-of-squares sigma of 0.707, or ``beta = 1`` at ``sigma = 0.763``.
    """
    if kl_reduction == "mean":
        if not latent_dim:
            raise ValueError("kl_reduction='mean' needs latent_dim")
        return MSEKLEquivalence(weight, n_pixels, 1.0 / latent_dim)
    if kl_reduction != "sum":
        raise ValueError(f"kl_reduction must be 'sum' or 'mean', not {kl_reduction!r}")
    return MSEKLEquivalence(weight, n_pixels)

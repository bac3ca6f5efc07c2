"""A two-level VAE with top-down inference (Sønderby et al. 2016's ladder VAE, in the form NVAE and
VDVAE use): the smallest hierarchical VAE.

Generative model, top to bottom::

    p(z2) = N(0, I)                     upper latent, config.top_latent_dim values
    p(z1 | z2) = N(mu_p(z2), sigma_p^2(z2))   lower latent, config.latent_dim values
    p(x | z1)                           Bernoulli (or Gaussian) decoder, as in every book model

Inference network: a bottom-up pass computes features ``h1(x)`` and ``h2(h1)``; then,
top-down, ``q(z2|x) = N(mu(h2), sigma^2(h2))`` and ``q(z1|x, z2)`` from ``[h1, t(z2)]``,
where ``t(z2)`` is the same top-down feature the prior ``p(z1|z2)`` is computed from. So
the posterior of ``z1`` is told what the prior expects and only has to say how ``x``
differs from it.

With ``config.hierarchy = "bottom-up"`` the inference network runs the other way, as a
stack of one-level VAEs would: ``q(z1|x)`` from ``h1``, then ``q(z2|z1)``. Its upper level
tends to collapse (Sønderby et al. 2016): ``q(z2|z1)`` sees ``x`` only through one noisy
``z1``, and the cheapest bound sets ``q(z2|z1) = p(z2)`` and lets ``p(z1|z2)`` be a plain
Gaussian. The chapter trains both and measures ``kl_top``.

The bound, with ``z2 ~ q(z2|x)`` and ``z1 ~ q(z1|x, z2)``::

    log p(x) >= E[log p(x|z1)] - KL(q(z2|x) || p(z2)) - E_{z2}[ KL(q(z1|x, z2) || p(z1|z2)) ]

Both KLs are between Gaussians, in closed form (`gaussian_kl_between`); the expectation
over ``z2`` is the one sample. ``"kl"`` in the output is their sum; ``"kl_top"`` and
``"kl_bottom"`` say which level carries what. If ``kl_top`` goes to 0, the upper level has
*collapsed*: ``q(z2|x) = p(z2)``, and the model is a one-level VAE with a learned
(z2-marginalised) prior.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .losses import elbo_terms, gaussian_kl, normal_log_density
from .models import VAE, ModelConfig


def gaussian_kl_between(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor,
                        logvar_p: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu_q, diag e^logvar_q) || N(mu_p, diag e^logvar_p))`` per row, summed over dimensions:
    ``0.5 * sum(logvar_p - logvar_q + (e^logvar_q + (mu_q - mu_p)^2) / e^logvar_p - 1)``."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1).sum(1)


def _gaussian_head(n_in: int, n_out: int) -> nn.Linear:
    return nn.Linear(n_in, 2 * n_out)  # mean and log-variance, split with chunk(2, 1)


class LadderVAE(nn.Module):
    """Two Gaussian latent levels on MLPs (``config.arch == "mlp"``); ``config.hidden`` is the width of
    the image-side layers, half of it the width of the layers between the latents."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "mlp" or config.decoder_sigma != "fixed":
            raise ValueError("the ladder VAE is an MLP (arch='mlp') with a fixed decoder sigma")
        self.config = config
        c, h, w = config.in_shape
        d, d1, d2, inner = c * h * w, config.latent_dim, config.top_latent_dim, config.hidden // 2
        self.top_down = config.hierarchy == "top-down"
        self.up1 = nn.Sequential(nn.Flatten(), nn.Linear(d, config.hidden), nn.ReLU())  # h1(x)
        # h2: from h1 (top-down: q(z2|x)), or from a sample of z1 (bottom-up: q(z2|z1))
        self.up2 = nn.Sequential(nn.Linear(config.hidden if self.top_down else d1, inner), nn.ReLU())
        self.q_top = _gaussian_head(inner, d2)
        self.down = nn.Sequential(nn.Linear(d2, inner), nn.ReLU())  # t(z2), shared by p and (top-down) q of z1
        self.p_bottom = _gaussian_head(inner, d1)  # p(z1|z2)
        self.q_bottom = _gaussian_head(config.hidden + inner if self.top_down else config.hidden, d1)
        self.decoder = nn.Sequential(nn.Linear(d1, config.hidden), nn.ReLU(), nn.Linear(config.hidden, d),
                                     nn.Unflatten(1, config.in_shape))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def _latents(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One inference pass: both posteriors, the prior of z1, and one sample of each latent."""
        h1 = self.up1(x)
        if not self.top_down:  # z1 from x, then z2 from z1
            mu1, logvar1 = self.q_bottom(h1).chunk(2, 1)
            z1 = VAE.reparameterise(mu1, logvar1, generator)
            mu2, logvar2 = self.q_top(self.up2(z1)).chunk(2, 1)
            z2 = VAE.reparameterise(mu2, logvar2, generator)
            mu_p, logvar_p = self.prior_bottom(z2)
        else:  # z2 from x, then z1 from x and z2
            mu2, logvar2 = self.q_top(self.up2(h1)).chunk(2, 1)
            z2 = VAE.reparameterise(mu2, logvar2, generator)
            t = self.down(z2)
            mu_p, logvar_p = self.p_bottom(t).chunk(2, 1)
            mu1, logvar1 = self.q_bottom(torch.cat([h1, t], 1)).chunk(2, 1)
            z1 = VAE.reparameterise(mu1, logvar1, generator)
        return {"z1": z1, "z2": z2, "mu1": mu1, "logvar1": logvar1, "mu2": mu2, "logvar2": logvar2,
                "mu_p": mu_p, "logvar_p": logvar_p}

    def _terms(self, x: torch.Tensor, lat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        f = {k: v.float() for k, v in lat.items()}
        recon = elbo_terms({"out": self.decoder(lat["z1"]).float()}, x, self.config.likelihood,
                           self.config.sigma)["recon"]
        kl_top = gaussian_kl(f["mu2"], f["logvar2"])
        if self.top_down:  # q(z1|x, z2) and p(z1|z2) share z2: a KL in closed form
            kl_bottom = gaussian_kl_between(f["mu1"], f["logvar1"], f["mu_p"], f["logvar_p"])
        else:  # z2 was drawn after z1, from z1: one-sample log q(z1|x) - log p(z1|z2), unbiased
            kl_bottom = (normal_log_density(f["z1"], f["mu1"], f["logvar1"])
                         - normal_log_density(f["z1"], f["mu_p"], f["logvar_p"])).sum(1)
        return {"recon": recon, "kl": kl_top + kl_bottom, "kl_top": kl_top, "kl_bottom": kl_bottom}

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"recon", "kl", "kl_top", "kl_bottom"}`` per image, for one sample of both latents."""
        return self._terms(x, self._latents(x))

    def score_terms(self, x: torch.Tensor, y: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return self._terms(x, self._latents(x, generator))

    def decode(self, z1: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x|z1)``."""
        out = self.decoder(z1)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the posterior mean of ``z1``: top-down, at ``z2 = mu2(x)``; bottom-up, of ``q(z1|x)``."""
        h1 = self.up1(x)
        if not self.top_down:
            return self.decode(self.q_bottom(h1).chunk(2, 1)[0])
        mu2 = self.q_top(self.up2(h1)).chunk(2, 1)[0]
        mu1 = self.q_bottom(torch.cat([h1, self.down(mu2)], 1)).chunk(2, 1)[0]
        return self.decode(mu1)

    def prior_bottom(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``p(z1|z2)``."""
        mu_p, logvar_p = self.p_bottom(self.down(z2)).chunk(2, 1)
        return mu_p, logvar_p

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling: ``z2 ~ N(0, I)``, ``z1 ~ p(z1|z2)``, then the mean of ``p(x|z1)``."""
        z2 = torch.randn(n, self.config.top_latent_dim, generator=generator).to(self.device)
        return self.decode(VAE.reparameterise(*self.prior_bottom(z2), generator))

    @torch.no_grad()
    def log_likelihood_estimate(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                                y: torch.Tensor | None = None) -> torch.Tensor:
        """The IWAE estimate of ``log p(x)`` from ``k`` joint samples ``(z1, z2) ~ q`` (float64, CPU):
        ``log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x, z2) - log q(z2|x)``."""
        log_w = []
        for _ in range(k):
            lat = self._latents(x, generator)
            log_px = -elbo_terms({"out": self.decoder(lat["z1"])}, x, self.config.likelihood,
                                 self.config.sigma)["recon"]
            log_p = (normal_log_density(lat["z2"]).sum(1)
                     + normal_log_density(lat["z1"], lat["mu_p"], lat["logvar_p"]).sum(1))
            log_q = (normal_log_density(lat["z2"], lat["mu2"], lat["logvar2"]).sum(1)
                     + normal_log_density(lat["z1"], lat["mu1"], lat["logvar1"]).sum(1))
            log_w.append(log_px.double() + log_p.double() - log_q.double())
        return (torch.logsumexp(torch.stack(log_w), 0) - math.log(k)).cpu()


__all__ = ["LadderVAE", "gaussian_kl_between"]

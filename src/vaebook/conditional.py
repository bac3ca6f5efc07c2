"""The conditional VAE: generate the class (or the attributes) you ask for.

A conditional VAE (Sohn et al. 2015; the observed-label half of Kingma et al. 2014's
M2) models ``p(x|y)`` for a label ``y`` that is always observed:

* encoder ``q(z|x, y) = N(mu(x, y), diag(sigma^2(x, y)))``;
* prior ``p(z) = N(0, I)``, the same for every ``y`` (Sohn et al. also learn ``p(z|y)``;
  a fixed prior keeps ``z`` and ``y`` independent a priori, which is what lets one ``z``
  be decoded under every ``y``);
* decoder ``p(x|z, y)``.

The bound is the VAE's with ``y`` carried along, ``log p(x|y) >= E_q[log p(x|z, y)] -
KL(q(z|x, y) || p(z))``, so the loss is `vaebook.losses.loss_terms` unchanged. Because
the decoder is told ``y``, the code ``z`` has no reason to spend nats on it: it keeps
what ``y`` does not say (the style: thickness, shade, shape within the class).

How ``y`` goes in: the decoder reads ``[z, y]``; the encoder of a convolutional model
reads ``y`` as constant extra input channels (one plane per column of ``y``), that of an
MLP reads ``[flatten(x), y]``. ``y`` is a row of `vaebook.data.condition_vectors`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from .losses import elbo_terms, normal_log_density
from .models import VAE, ModelConfig, _body_and_decoder


class ConditionalVAE(VAE):
    """A VAE whose encoder and decoder also read ``y`` (``config.condition`` names its columns)."""

    def __init__(self, config: ModelConfig) -> None:
        if config.decoder_sigma != "fixed":
            raise ValueError("a conditional VAE has a fixed decoder sigma (decoder_sigma='fixed')")
        super().__init__(config)
        c = self.condition_dim
        channels, height, width = config.in_shape
        plain = replace(config, kind="vae", condition=())
        if config.arch == "conv":  # y as c constant planes beside the image's channels
            self.body, self.feature_dim, _ = _body_and_decoder(replace(plain, in_shape=(channels + c, height, width)))
        else:
            self.body = nn.Sequential(nn.Linear(channels * height * width + c, config.hidden), nn.ReLU())
            self.feature_dim = config.hidden
        self.to_mu = nn.Linear(self.feature_dim, config.latent_dim)
        self.to_logvar = nn.Linear(self.feature_dim, config.latent_dim)
        self.decoder = _body_and_decoder(replace(plain, latent_dim=config.latent_dim + c))[2]  # reads [z, y]

    @property
    def condition_dim(self) -> int:
        return len(self.config.condition)

    def _joined(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.config.arch == "conv":
            return torch.cat([x, y[:, :, None, None].to(x.dtype).expand(-1, -1, *x.shape[2:])], dim=1)
        return torch.cat([x.flatten(1), y.to(x.dtype)], dim=1)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """The parameters ``(mu, logvar)`` of ``q(z|x, y)``."""
        h = self.body(self._joined(x, y))
        return self.to_mu(h), self.to_logvar(h)

    def decode_params(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """``{"out": logits or mean}`` of ``p(x|z, y)``."""
        return {"out": self.decoder(torch.cat([z, y.to(z.dtype)], dim=1))}

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The image ``z`` decodes to under the label ``y``: the mean of ``p(x|z, y)``."""
        return self.output_mean(self.decode_params(z, y)["out"])

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``log p(x|z, y)`` per image."""
        return -elbo_terms(self.decode_params(z, y), x, self.config.likelihood, self.config.sigma)["recon"]

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.encode(x, y)[0]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """``{"out", "z", "mu", "logvar"}`` as a VAE's: the loss is the VAE's, given ``y``."""
        mu, logvar = self.encode(x, y)
        z = self.reparameterise(mu, logvar)
        return {**self.decode_params(z, y), "z": z, "mu": mu, "logvar": logvar}

    def score_terms(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
                    ) -> dict[str, torch.Tensor]:
        """``-log p(x|z, y)`` and ``KL(q(z|x, y) || p(z))`` per image, with ``z`` drawn from ``generator``."""
        mu, logvar = self.encode(x, y)
        z = self.reparameterise(mu, logvar, generator=generator)
        return elbo_terms({**self.decode_params(z, y), "mu": mu, "logvar": logvar}, x, self.config.likelihood,
                          self.config.sigma)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.decode(self.encode(x, y)[0], y)

    def random_conditions(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` labels drawn uniformly: one-hot classes, or each 0/1 attribute a fair coin."""
        if self.is_class_conditional:
            return nn.functional.one_hot(torch.randint(self.condition_dim, (n,), generator=generator),
                                         self.condition_dim).float()
        return torch.randint(2, (n, self.condition_dim), generator=generator).float()

    @property
    def is_class_conditional(self) -> bool:
        """Whether ``y`` is a one-hot class (``"class:..."`` names) rather than independent attributes."""
        return all(n.startswith("class:") for n in self.config.condition)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,  # type: ignore[override]
               y: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images: ``z ~ N(0, I)`` decoded under ``y`` (drawn by `random_conditions` if not given)."""
        y = self.random_conditions(n, generator) if y is None else y
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self.decode(z.to(self.device), y.to(self.device))

    @torch.no_grad()
    def log_likelihood_estimate(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                                y: torch.Tensor | None = None) -> torch.Tensor:
        """The IWAE estimate of ``log p(x|y)`` from ``k`` samples of ``q(z|x, y)`` per image (float64, CPU).

        ``log p(x)`` itself is within ``log C`` of it for ``C`` equally likely classes
        (`marginal_log_likelihood_estimate` computes it).
        """
        mu, logvar = self.encode(x, y)
        log_w = []
        for _ in range(k):
            z = self.reparameterise(mu, logvar, generator=generator)
            log_w.append(self.log_likelihood(z, x, y).double() + normal_log_density(z).sum(1).double()
                         - normal_log_density(z, mu, logvar).sum(1).double())
        return (torch.logsumexp(torch.stack(log_w), 0) - math.log(k)).cpu()

    @torch.no_grad()
    def marginal_log_likelihood_estimate(self, x: torch.Tensor, k: int,
                                         generator: torch.Generator | None = None) -> torch.Tensor:
        """``log p(x) = log sum_y p(y) p(x|y)`` with uniform ``p(y)`` over the classes, each ``p(x|y)``
        estimated with `log_likelihood_estimate`: the log of an unbiased estimate, so a lower bound on
        average, as the IWAE bound is. Class-conditional models only."""
        if not self.is_class_conditional:
            raise ValueError("the marginal over y is summed for one-hot classes only")
        eye = torch.eye(self.condition_dim, device=x.device)
        per_class = torch.stack([self.log_likelihood_estimate(x, k, generator, eye[c].expand(len(x), -1))
                                 for c in range(self.condition_dim)])
        return torch.logsumexp(per_class, 0) - math.log(self.condition_dim)


__all__ = ["ConditionalVAE"]

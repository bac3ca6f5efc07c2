"""Evaluating trained models on a whole data set: losses and latent codes.

Everything here runs under ``torch.no_grad`` in batches and is deterministic: where
a VAE needs a sample of ``z``, it comes from a generator seeded by the caller, so
the same model on the same data gives the same numbers, and evaluation never
touches the global random state that training relies on.
"""

from __future__ import annotations

import torch

from .data import ImageDataset, to_float
from .losses import gaussian_kl, log_likelihood
from .models import LatentModel, VAE


def _images(data: ImageDataset | torch.Tensor) -> torch.Tensor:
    return data.images if isinstance(data, ImageDataset) else data


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def dataset_loss(model: LatentModel, data: ImageDataset | torch.Tensor, beta: float = 1.0, batch_size: int = 1000,
                 seed: int = 0) -> dict[str, float]:
    """Mean per-image loss terms over a data set, in nats, as training reports them.

    Returns ``loss`` (``recon + beta * kl``), ``recon`` (``-log p(x|z)`` with one
    ``z ~ q(z|x)`` for a VAE, the code for an autoencoder), ``kl`` (0 for an
    autoencoder) and ``mse``, the mean squared error per pixel of the deterministic
    reconstruction ``decode(embed(x))``.
    """
    model.eval()
    device = _device_of(model)
    cfg = model.config
    gen = torch.Generator(device=device).manual_seed(seed)
    images = _images(data)
    totals = torch.zeros(4, dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size].to(device))
        if isinstance(model, VAE):
            mu, logvar = model.encode(x)
            z = model.reparameterise(mu, logvar, generator=gen)
            kl = gaussian_kl(mu, logvar)
            x_mean = model.decode(mu)
        else:
            z = model.encode(x)
            kl = torch.zeros(len(x), device=device)
            x_mean = None
        out = model.decoder(z)
        recon = -log_likelihood(out, x, cfg.likelihood, cfg.sigma)
        if x_mean is None:
            x_mean = torch.sigmoid(out) if cfg.likelihood == "bernoulli" else out
        mse = (x_mean - x).pow(2).flatten(1).mean(1)
        totals += torch.stack([recon.sum(), kl.sum(), mse.sum(), torch.tensor(float(len(x)), device=device)]).double().cpu()
    recon, kl, mse, n = totals.tolist()
    return {"loss": (recon + beta * kl) / n, "recon": recon / n, "kl": kl / n, "mse": mse / n}


@torch.no_grad()
def embed_dataset(model: LatentModel, data: ImageDataset | torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The latent point of every image (``z`` for an autoencoder, ``mu`` for a VAE), on the CPU."""
    model.eval()
    device = _device_of(model)
    images = _images(data)
    return torch.cat([model.embed(to_float(images[i:i + batch_size].to(device))).float().cpu()
                      for i in range(0, len(images), batch_size)])

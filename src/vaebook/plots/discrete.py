"""Plots of the VQ-VAE: reconstructions at several codebook sizes, how the codes are used, and its prior's samples.

The functions take `vaebook.vq.VQVAE` models (``reconstruct``, ``sample``, ``decode_codes``,
``grid``, ``config.codebook_size``) and `vaebook.vq.codebook_usage`'s counts.
"""

from __future__ import annotations

import math
import os

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from ..data import ImageDataset
from ..evaluate import reconstructions
from ..vq import VQVAE, codebook_usage
from .base import as_float, rows_figure, save


def code_bits(model: VQVAE) -> float:
    """The most a grid of codes can say: ``h * w * log2 K`` bits (the uniform prior's KL term in bits)."""
    return model.uniform_kl() / math.log(2)


@torch.no_grad()
def codebook_reconstruction_figure(models: dict[str, VQVAE], images: torch.Tensor,
                                   path: str | os.PathLike | None = None) -> Figure:
    """Inputs on the first row, then each model's reconstruction ``decode_codes(encode(x))``, each row titled
    with its label and the bits a grid of its codes can hold (`code_bits`)."""
    x = as_float(images)
    rows = [("input", x)]
    for label, model in models.items():
        h, w = model.grid
        rows.append((f"{label}: {h}x{w} codes, at most {code_bits(model):,.0f} bits per image",
                     reconstructions(model, x)))
    return save(rows_figure(rows), path)


@torch.no_grad()
def codebook_usage_figure(models: dict[str, VQVAE], data: ImageDataset | torch.Tensor,
                          path: str | os.PathLike | None = None) -> Figure:
    """For each model, the share of the grid positions of ``data`` (`codebook_usage`) assigned to each code, codes
    ranked from the most used down, on log scales, with a dotted line at its codebook size ``K``: the codes between
    its last point and that line were never used (dead), and the legend counts them."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for label, model in models.items():
        usage = codebook_usage(model, data)
        counts = usage["counts"].sort(descending=True).values
        share = counts[counts > 0].double() / counts.sum()
        k = model.config.codebook_size
        line, = ax.plot(range(1, len(share) + 1), share.numpy(), marker="o", markersize=3,
                        label=f"{label}: {usage['used']} of {k} used, {usage['dead']} dead, "
                              f"perplexity {usage['perplexity']:.1f}")
        ax.axvline(k, color=line.get_color(), linestyle=":", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("code, ranked by use (dotted: the codebook size K)")
    ax.set_ylabel("share of grid positions")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


@torch.no_grad()
def code_prior_samples_figure(models: dict[str, VQVAE], n: int = 10, seed: int = 0,
                              data: ImageDataset | torch.Tensor | None = None,
                              path: str | os.PathLike | None = None) -> Figure:
    """For each model, rows of ``n`` decoded code grids: drawn from its learned PixelCNN prior
    (`VQVAE.sample_codes`); given ``data``, each position drawn independently with the frequencies at which
    ``data``'s codes use the codebook (`codebook_usage`); and each position drawn uniformly from all ``K`` codes
    (`VQVAE.sample_uniform`). Each model's draws start from the same ``seed``."""
    rows = []
    for label, model in models.items():
        model.eval()
        gen = torch.Generator().manual_seed(seed)
        rows.append((f"{label}: codes from the learned PixelCNN prior", model.sample(n, generator=gen)))
        if data is not None:
            counts = codebook_usage(model, data)["counts"]
            h, w = model.grid
            codes = torch.multinomial(counts.double() / counts.sum(), n * h * w, replacement=True,
                                      generator=gen).view(n, h, w)
            rows.append((f"{label}: each code drawn independently, as often as the data use it",
                         model.decode_codes(codes.to(model.device))))
        rows.append((f"{label}: each code drawn uniformly from all {model.config.codebook_size}",
                     model.sample_uniform(n, generator=gen)))
    return save(rows_figure([(title, images.float().cpu().clamp(0, 1)) for title, images in rows]), path)


__all__ = ["code_bits", "code_prior_samples_figure", "codebook_reconstruction_figure", "codebook_usage_figure"]

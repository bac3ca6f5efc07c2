"""Latent spaces: codes by class, random codes decoded, the 2-D manifold, interpolations, KL per dimension."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..data import ImageDataset
from ..evaluate import embed_dataset, kl_per_dimension, pca, prior_samples
from ..models import LatentModel, VAE, fit_latent_samplers
from .base import as_float, decodes, grid_array, rows_figure, save


def _project_2d(latents: torch.Tensor) -> tuple[torch.Tensor, tuple[str, str]]:
    """The latents themselves if 2-D, else their first two principal components."""
    if latents.shape[1] == 2:
        return latents, ("$z_1$", "$z_2$")
    mean, components, _ = pca(latents, 2)
    return ((latents - mean) @ components.T).float(), ("principal component 1", "principal component 2")

def latent_scatter_figure(models: dict[str, LatentModel], data: ImageDataset, n: int = 5000,
                          path: str | os.PathLike | None = None) -> Figure:
    """Each model's latent points of the first ``n`` images, coloured by class; the class legend below the panels."""
    fig, axes = plt.subplots(1, len(models), figsize=(3.7 * len(models), 4.4), squeeze=False)
    labels = data.labels[:n].numpy()
    cmap = plt.get_cmap("tab10")
    for ax, (title, model) in zip(axes[0], models.items()):
        points, (xlabel, ylabel) = _project_2d(embed_dataset(model, data.images[:n]))
        ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=9.5, s=2, alpha=0.6,
                   rasterized=True)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=name) for i, name in enumerate(data.class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False, handletextpad=0.1, columnspacing=1.0)
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))
    return save(fig, path)

def random_latent_figure(model: LatentModel, data: ImageDataset, n: int = 10, seed: int = 0,
                         vae: VAE | None = None, path: str | os.PathLike | None = None) -> Figure:
    """Decodes of random codes from normals and a box fitted to the encoded ``data``.

    With ``vae``, a last row shows that VAE's samples from its prior ``N(0, I)``.
    """
    samplers = fit_latent_samplers(embed_dataset(model, data))
    gen = torch.Generator().manual_seed(seed)
    rows = [
        ("normal fitted to the codes (full covariance)", decodes(model, samplers["sample"]("joint", n, gen))),
        ("normal per dimension (diagonal covariance)", decodes(model, samplers["sample"]("independent", n, gen))),
        ("uniform over the codes' bounding box", decodes(model, samplers["sample"]("uniform", n, gen))),
    ]
    if vae is not None:
        rows.append(("VAE: z ~ N(0, I)", prior_samples(vae, n, gen)))
    return save(rows_figure(rows), path)

def manifold_figure(model: LatentModel, n: int = 15, data: ImageDataset | None = None, height: float = 6.0,
                    path: str | os.PathLike | None = None) -> Figure:
    """Decodes of an ``n x n`` grid over a 2-D latent space.

    For a VAE the grid follows Kingma & Welling: the prior's quantiles
    ``Phi^-1(linspace(0.05, 0.95, n))`` on each axis, so each cell has equal prior mass.
    For an autoencoder (no prior) it spans the 1st to 99th percentile of the codes of ``data``.
    ``height`` is the figure's height in inches.
    """
    if model.latent_dim != 2:
        raise ValueError(f"a manifold grid needs a 2-d latent space, this model has {model.latent_dim}")
    if isinstance(model, VAE):
        q = torch.linspace(0.05, 0.95, n, dtype=torch.float64)
        axis = torch.distributions.Normal(0.0, 1.0).icdf(q).float()
        axes_values = (axis, axis)
    else:
        if data is None:
            raise ValueError("an autoencoder's manifold grid needs data to set its extent")
        z = embed_dataset(model, data)
        lo, hi = torch.quantile(z, 0.01, dim=0), torch.quantile(z, 0.99, dim=0)
        axes_values = tuple(torch.linspace(float(lo[i]), float(hi[i]), n) for i in range(2))
    z2, z1 = torch.meshgrid(axes_values[1].flip(0), axes_values[0], indexing="ij")  # top row = largest z2
    images = decodes(model, torch.stack([z1.flatten(), z2.flatten()], 1))
    h, w = images.shape[-2:]
    fig, ax = plt.subplots(figsize=(height * w / h, height))
    ax.imshow(grid_array(images, nrow=n, padding=0), interpolation="nearest")
    ax.set_xticks([(i + 0.5) * w for i in (0, n // 2, n - 1)], [f"{float(axes_values[0][i]):.2f}" for i in (0, n // 2, n - 1)])
    ax.set_yticks([(i + 0.5) * h for i in (0, n // 2, n - 1)],
                  [f"{float(axes_values[1].flip(0)[i]):.2f}" for i in (0, n // 2, n - 1)])
    ax.set(xlabel="$z_1$", ylabel="$z_2$")
    fig.tight_layout()
    return save(fig, path)

@torch.no_grad()
def interpolation_figure(models: dict[str, LatentModel], start: torch.Tensor, end: torch.Tensor, steps: int = 10,
                         path: str | os.PathLike | None = None) -> Figure:
    """Decodes along the straight line between the latent points of two images, per model."""
    a, b = as_float(start[None] if start.dim() == 3 else start), as_float(end[None] if end.dim() == 3 else end)
    t = torch.linspace(0, 1, steps)[:, None]
    rows = []
    for label, model in models.items():
        device = model.device
        za, zb = model.embed(a.to(device)).cpu(), model.embed(b.to(device)).cpu()
        rows.append((label, decodes(model, (1 - t) * za + t * zb)))
    return save(rows_figure(rows), path)

def kl_per_dimension_figure(models: dict[str, VAE], data: ImageDataset,
                            path: str | os.PathLike | None = None) -> Figure:
    """Per-dimension KL, sorted from largest to smallest, for each model: how many dimensions carry information."""
    fig, ax = plt.subplots(figsize=(6, 3))
    width = 0.8 / len(models)
    for i, (label, model) in enumerate(models.items()):
        kl = kl_per_dimension(model, data).sort(descending=True).values
        ax.bar(np.arange(len(kl)) + i * width, kl.numpy(), width=width, label=label)
    ax.set_xticks(np.arange(model.latent_dim) + 0.4 - width / 2, np.arange(1, model.latent_dim + 1))
    ax.set(xlabel="latent dimension (sorted by KL, per model)", ylabel="KL per image (nats)", yscale="log")
    ax.set_ylim(bottom=1e-3)
    ax.legend(frameon=False, fontsize=7, ncol=len(models), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return save(fig, path)

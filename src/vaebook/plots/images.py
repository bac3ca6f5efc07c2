"""Reconstructions, samples and training curves: what a model does to images."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..data import ImageDataset
from ..evaluate import prior_samples, reconstructions
from ..models import LatentModel, VAE
from .base import as_float, image_grid_figure, rows_figure, save


@torch.no_grad()
def reconstruction_figure(models: dict[str, LatentModel], images: torch.Tensor,
                          path: str | os.PathLike | None = None) -> Figure:
    """Inputs on the first row, then each model's reconstruction ``decode(embed(x))``."""
    x = as_float(images)
    rows = [("input", x)]
    for label, model in models.items():
        rows.append((label, reconstructions(model, x)))
    return save(rows_figure(rows), path)

def samples_figure(model: VAE, n: int = 32, nrow: int = 8, seed: int = 0, title: str | None = None,
                   path: str | os.PathLike | None = None) -> Figure:
    """``n`` samples from a VAE: ``z ~ N(0, I)`` decoded."""
    gen = torch.Generator().manual_seed(seed)
    return image_grid_figure(prior_samples(model, n, gen), nrow=nrow, title=title,
                             path=path)

@torch.no_grad()
def denoising_figure(models: dict[str, LatentModel], images: torch.Tensor, noise_std: float = 0.3, seed: int = 0,
                     path: str | os.PathLike | None = None) -> Figure:
    """Clean images, noisy copies (Gaussian noise, clipped to [0, 1]), and each model's output for the noisy copy."""
    x = as_float(images)
    gen = torch.Generator().manual_seed(seed)
    noisy = (x + noise_std * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    rows = [("clean", x), (f"noisy input (sigma = {noise_std:g})", noisy)]
    for label, model in models.items():
        rows.append((label, reconstructions(model, noisy)))
    return save(rows_figure(rows), path)

@torch.no_grad()
def beta_sweep_figure(models: dict[str, VAE], images: torch.Tensor, n: int = 8, seed: int = 0,
                      path: str | os.PathLike | None = None) -> Figure:
    """For each beta: reconstructions of the same images, then samples from the prior."""
    x = as_float(images[:n])
    rows = [("input", x)]
    for label, model in models.items():
        rows.append((f"{label}: reconstructions", reconstructions(model, x)))
        rows.append((f"{label}: samples", prior_samples(model, n, torch.Generator().manual_seed(seed))))
    return save(rows_figure(rows), path)

def likelihood_width_figure(models: dict[str, VAE], images: torch.Tensor, n: int = 10, seed: int = 0,
                            path: str | os.PathLike | None = None) -> Figure:
    """For VAEs that differ in the decoder's standard deviation sigma: inputs, then each model's
    reconstructions and its samples from the prior. A small sigma buys sharp reconstructions with
    a KL term so weak that the prior's samples are not images like the data."""
    x = as_float(images[:n])
    rows = [("input", x)]
    for label, model in models.items():
        gen = torch.Generator().manual_seed(seed)
        rows.append((f"{label}: reconstructions", reconstructions(model, x)))
        rows.append((f"{label}: samples, z ~ N(0, I)", prior_samples(model, n, gen)))
    return save(rows_figure(rows, scale=0.9), path)

@torch.no_grad()
def pca_reconstruction_figure(train: ImageDataset, images: torch.Tensor, ks: Sequence[int] = (2, 8, 16, 32, 128),
                              linear_ae: LatentModel | None = None,
                              path: str | os.PathLike | None = None) -> Figure:
    """Images projected onto the top-k principal components of ``train``, for several k.

    With ``linear_ae`` a last row shows a trained linear autoencoder's reconstructions.
    """
    from ..evaluate import pca

    x = as_float(images)
    mean, components, _ = pca(train.float(), max(ks))
    flat = x.flatten(1).double() - mean
    rows = [("input", x)]
    for k in ks:
        c = components[:k]
        rows.append((f"PCA, k = {k}", ((flat @ c.T) @ c + mean).float().view_as(x).clamp(0, 1)))
    if linear_ae is not None:
        rows.append((f"linear autoencoder, k = {linear_ae.latent_dim}", reconstructions(linear_ae, x)))
    return save(rows_figure(rows), path)

def training_curves_figure(histories: dict[str, list[dict[str, float]]],
                           path: str | os.PathLike | None = None) -> Figure:
    """Train and test loss per epoch for each run; for VAEs also reconstruction and KL.

    With the KL term the three panels and the legend fill a 2 x 2 grid (loss and
    reconstruction on top, KL and the legend below), so the figure is 7.4 inches wide
    and its text stays legible in a book's text column.
    """
    has_kl = any(h and h[-1].get("test_kl", 0) > 0 for h in histories.values())
    panels = [("loss", "loss (nats/image)")] + ([("recon", "-log p(x|z)"), ("kl", "KL(q(z|x) || p(z))")] if has_kl else [])
    if has_kl:
        fig, grid = plt.subplots(2, 2, figsize=(7.4, 5.0))
        axes, legend_ax = grid.flatten()[:3], grid[1, 1]
    else:
        fig, ax = plt.subplots(figsize=(4.6, 3.0))
        axes, legend_ax = [ax], None
    for (key, label), ax in zip(panels, axes):
        for i, (name, history) in enumerate(histories.items()):
            epochs = [h["epoch"] for h in history]
            colour = f"C{i}"
            ax.plot(epochs, [h[f"train_{key}"] for h in history], "--", color=colour, label=f"{name} train")
            ax.plot(epochs, [h[f"test_{key}"] for h in history], "-", color=colour, label=f"{name} test")
        ax.set_xlabel("epoch")
        ax.set_title(label, loc="left")
        ax.grid(alpha=0.3)
    if legend_ax is None:
        axes[0].legend(frameon=False)
    else:
        legend_ax.set_axis_off()
        legend_ax.legend(*axes[0].get_legend_handles_labels(), loc="center", frameon=False)
    fig.tight_layout()
    return save(fig, path)

def anomaly_figure(normal: torch.Tensor, anomalous: torch.Tensor, labels: tuple[str, str] = ("seen classes", "unseen class"),
                   path: str | os.PathLike | None = None) -> Figure:
    """Histograms of reconstruction errors for normal and anomalous images, with the ROC AUC."""
    from ..evaluate import roc_auc

    auc = roc_auc(normal, anomalous)
    fig, ax = plt.subplots(figsize=(5.5, 3))
    bins = np.linspace(0, float(torch.quantile(torch.cat([normal, anomalous]), 0.995)), 60)
    ax.hist(normal.numpy(), bins=bins, density=True, alpha=0.6, label=f"{labels[0]} ({len(normal)})")
    ax.hist(anomalous.numpy(), bins=bins, density=True, alpha=0.6, label=f"{labels[1]} ({len(anomalous)})")
    ax.set(xlabel="reconstruction error (mean squared error per pixel)", ylabel="density",
           title=f"ROC AUC = {auc:.3f}")
    ax.legend(frameon=False)
    fig.tight_layout()
    return save(fig, path)


@torch.no_grad()
def pixel_sigma_figure(model: VAE, images: torch.Tensor, n: int = 10, seed: int = 0,
                       path: str | os.PathLike | None = None) -> Figure:
    """A decoder with a standard deviation per pixel: inputs, the mean of ``p(x|z)`` at the posterior
    mean, the standard deviation of every pixel (white = the largest in the row, given in the title),
    and one draw ``x ~ N(mean, sigma^2)``: the noise the model believes the data to have."""
    x = as_float(images[:n])
    model.eval()
    params = model.decode_params(model.embed(x.to(model.device)))
    mean, sigma = params["out"].float().cpu(), params["x_logvar"].float().cpu().mul(0.5).exp()
    gen = torch.Generator().manual_seed(seed)
    draw = mean + sigma * torch.randn(mean.shape, generator=gen)
    top = float(sigma.max())
    rows = [("input", x), ("mean of p(x|z)", mean.clamp(0, 1)),
            (f"sigma per pixel (white = {top:.2f}, black = 0)", sigma / top),
            ("a draw from p(x|z)", draw.clamp(0, 1))]
    return save(rows_figure(rows, scale=0.9), path)

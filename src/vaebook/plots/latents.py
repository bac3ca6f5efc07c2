"""Latent spaces: codes by class, random codes decoded, the 2-D manifold, interpolations, KL per dimension,
the split of the KL into information and prior mismatch, latent traversals."""

from __future__ import annotations

import math
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..data import ImageDataset
from ..evaluate import embed_dataset, kl_per_dimension, pca, prior_samples
from ..information import latent_information
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


@torch.no_grad()
def latent_traversal_figure(model: VAE, data: ImageDataset | torch.Tensor, dims: int = 8,
                            values: tuple[float, ...] = (-3, -2, -1, 0, 1, 2, 3), start: torch.Tensor | None = None,
                            path: str | os.PathLike | None = None) -> Figure:
    """Latent traversals: one row per latent dimension, the ``dims`` with the largest mean KL first.

    Every row starts from the same point ``start`` (default ``z = 0``, the prior's mode)
    and sets one coordinate to each of ``values`` (in prior standard deviations) while the
    others stay fixed. A row that does not change is a dimension the decoder ignores;
    the label gives the dimension's index and its mean KL over ``data`` in nats.
    """
    rows = latent_traversals(model, data, dims, values, start)
    return save(rows_figure([(f"$z_{{{j}}}$: KL {kl:.2f}", images) for j, kl, images in rows]), path)


@torch.no_grad()
def information_splits(models: dict[str, VAE], data: ImageDataset | torch.Tensor,
                       seed: int = 0) -> dict[str, dict[str, float]]:
    """`vaebook.information.latent_information` of each model on all of ``data``: ``{label: split}``.

    Each model encodes the images, draws one ``z`` per image (seeded with ``seed``) and splits
    its mean KL into ``mutual_information`` and ``marginal_kl`` (nats; Hoffman and Johnson's ELBO surgery).
    """
    images = as_float(data.images if isinstance(data, ImageDataset) else data)
    splits = {}
    for label, model in models.items():
        model.eval()
        mu, logvar = model.encode(images.to(model.device))
        splits[label] = latent_information(mu, logvar, seed=seed)
    return splits


def information_split_figure(splits: dict[str, dict[str, float]], path: str | os.PathLike | None = None) -> Figure:
    """Each model's mean KL as a stacked bar: information ``I_q(x; z)`` below, mismatch ``KL(q(z) || p(z))`` above.

    ``splits`` is ``{label: latent_information(...)}``, drawn left to right in its order; the
    total (the mean KL, nats per image) is written above each bar, and a dashed line marks
    ``log N``, the most information a code can carry about which of ``N`` images it came from.
    """
    labels = list(splits)
    mi = np.array([splits[k]["mutual_information"] for k in labels])
    mismatch = np.array([splits[k]["marginal_kl"] for k in labels])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    ax.bar(x, mi, width=0.65, color="C0", label="information $I_q(x;\\, z)$", gid="information")
    ax.bar(x, mismatch, bottom=mi, width=0.65, color="C1", label="mismatch KL$(q(z)\\,\\|\\,p(z))$", gid="mismatch")
    for xi, total in zip(x, mi + mismatch):
        ax.annotate(f"{total:.1f}", (xi, total), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", zorder=3, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    for log_n in sorted({round(s["log_n"], 9) for s in splits.values()}):
        ax.axhline(log_n, color="k", ls="--", lw=1, gid="log_n", zorder=2,
                   label=f"log N = {log_n:.2f} (N = {math.exp(log_n):,.0f} images)")
    ax.set_xticks(x, labels)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylim(0, 1.12 * float((mi + mismatch).max()))
    ax.set_ylabel("mean KL per image (nats)")
    ax.legend(frameon=False, loc="upper right")
    fig.tight_layout()
    return save(fig, path)


@torch.no_grad()
def latent_traversals(model: VAE, data: ImageDataset | torch.Tensor, dims: int = 8,
                      values: tuple[float, ...] = (-3, -2, -1, 0, 1, 2, 3),
                      start: torch.Tensor | None = None) -> list[tuple[int, float, torch.Tensor]]:
    """The traversals that `latent_traversal_figure` draws, as ``(dimension, mean KL in nats, decodes)`` rows.

    The ``dims`` dimensions with the largest mean KL over ``data`` come first; row ``j``
    decodes ``start`` (default ``z = 0``) with coordinate ``j`` set to each of ``values``.
    """
    kl = kl_per_dimension(model, data)
    z0 = torch.zeros(model.latent_dim) if start is None else start.detach().float().cpu().reshape(-1)
    rows = []
    for j in torch.argsort(kl, descending=True)[:dims].tolist():
        z = z0.repeat(len(values), 1)
        z[:, j] = torch.tensor(values, dtype=z.dtype)
        rows.append((j, float(kl[j]), decodes(model, z)))
    return rows


def traversal_comparison_figure(models: dict[str, VAE], data: ImageDataset | torch.Tensor, dims: int = 8,
                                values: tuple[float, ...] = (-3, -2, -1, 0, 1, 2, 3),
                                path: str | os.PathLike | None = None) -> Figure:
    """`latent_traversal_figure` for several models side by side: one column per model, titled with its label.

    Each column holds the model's ``dims`` dimensions of largest mean KL over ``data``, from
    ``z = 0``; each row is labelled with the dimension's index and mean KL in nats.
    """
    columns = {label: latent_traversals(model, data, dims, values) for label, model in models.items()}
    n, size = len(values), 0.42  # images per row; inches per image
    fig = plt.figure(figsize=(len(models) * (n * size + 0.25), dims * (size + 0.3) + 0.35), layout="constrained")
    for subfig, (label, rows) in zip(np.atleast_1d(fig.subfigures(1, len(models), wspace=0.04)), columns.items()):
        subfig.suptitle(label, fontsize=12)
        for ax, (j, kl, images) in zip(np.atleast_1d(subfig.subplots(len(rows), 1)), rows):
            ax.imshow(grid_array(images, nrow=n), interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"$z_{{{j}}}$: KL {kl:.2f}", loc="left", fontsize=11, pad=2)
    return save(fig, path)

"""Every figure of the book, drawn from models and data by code.

Each ``*_figure`` function returns a matplotlib ``Figure`` (so a notebook shows it)
and, given ``path``, writes it as a PNG. Randomness comes only from a
``torch.Generator`` seeded by the ``seed`` argument, and PNGs are written without
time stamps, so the same models and seed give byte-identical files.

`book_figures` draws the whole set the book includes from the shipped pretrained
weights; ``python -m vaebook figures`` calls it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from .data import ImageDataset, to_float
from .evaluate import embed_dataset
from .models import LatentModel, VAE

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "font.size": 9})


# --------------------------------------------------------------------------- basics


def save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Write ``fig`` as a PNG without metadata that changes between runs; returns ``fig``."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    return fig


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return to_float(images) if images.dtype == torch.uint8 else images.float()


def grid_array(images: torch.Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """Images ``(N, C, H, W)`` (uint8, or floats in [0, 1]) tiled ``nrow`` per row as an ``(H, W, 3)`` array."""
    x = _as_float(images).detach().cpu().clamp(0, 1)
    grid = make_grid(x, nrow=nrow, padding=padding, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


def _show(ax: plt.Axes, images: torch.Tensor, nrow: int, title: str | None = None) -> None:
    ax.imshow(grid_array(images, nrow), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, loc="left")


def _rows_figure(rows: Sequence[tuple[str, torch.Tensor]], scale: float = 0.6) -> Figure:
    """A column of image rows, each with a title, sized to the images."""
    n = max(len(r) for _, r in rows)
    h, w = rows[0][1].shape[-2:]
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * scale * w / h, len(rows) * (scale + 0.25)), squeeze=False)
    for ax, (title, images) in zip(axes[:, 0], rows):
        _show(ax, images, nrow=n, title=title)
    fig.tight_layout()
    return fig


def image_grid_figure(images: torch.Tensor, nrow: int = 8, title: str | None = None,
                      path: str | os.PathLike | None = None, scale: float = 0.6) -> Figure:
    """A grid of images."""
    rows = int(np.ceil(len(images) / nrow))
    h, w = images.shape[-2:]
    fig, ax = plt.subplots(figsize=(nrow * scale * w / h, rows * scale + (0.3 if title else 0)))
    _show(ax, images, nrow, title)
    fig.tight_layout()
    return save(fig, path)


@torch.no_grad()
def _decode(model: LatentModel, z: torch.Tensor) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return model.decode(z.to(device)).float().cpu().clamp(0, 1)


# --------------------------------------------------------------------------- reconstructions and curves


@torch.no_grad()
def reconstruction_figure(models: dict[str, LatentModel], images: torch.Tensor,
                          path: str | os.PathLike | None = None) -> Figure:
    """Inputs on the first row, then each model's reconstruction ``decode(embed(x))``."""
    x = _as_float(images)
    rows = [("input", x)]
    for label, model in models.items():
        model.eval()
        device = next(model.parameters()).device
        rows.append((label, model.reconstruct(x.to(device)).float().cpu().clamp(0, 1)))
    return save(_rows_figure(rows), path)


def training_curves_figure(histories: dict[str, list[dict[str, float]]],
                           path: str | os.PathLike | None = None) -> Figure:
    """Train and test loss per epoch for each run; for VAEs also reconstruction and KL."""
    has_kl = any(h and h[-1].get("test_kl", 0) > 0 for h in histories.values())
    panels = [("loss", "loss (nats/image)")] + ([("recon", "-log p(x|z)"), ("kl", "KL(q(z|x) || p(z))")] if has_kl else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.8), squeeze=False)
    for (key, label), ax in zip(panels, axes[0]):
        for i, (name, history) in enumerate(histories.items()):
            epochs = [h["epoch"] for h in history]
            colour = f"C{i}"
            ax.plot(epochs, [h[f"train_{key}"] for h in history], "--", color=colour, label=f"{name} train")
            ax.plot(epochs, [h[f"test_{key}"] for h in history], "-", color=colour, label=f"{name} test")
        ax.set_xlabel("epoch")
        ax.set_title(label, loc="left")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, path)


# --------------------------------------------------------------------------- latent space


def _project_2d(latents: torch.Tensor) -> tuple[torch.Tensor, tuple[str, str]]:
    """The latents themselves if 2-D, else their first two principal components."""
    if latents.shape[1] == 2:
        return latents, ("$z_1$", "$z_2$")
    centred = latents - latents.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T, ("principal component 1", "principal component 2")


def latent_scatter_figure(models: dict[str, LatentModel], data: ImageDataset, n: int = 5000,
                          path: str | os.PathLike | None = None) -> Figure:
    """Each model's latent points of the first ``n`` images, coloured by class."""
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models) + 1.2, 4), squeeze=False)
    labels = data.labels[:n].numpy()
    cmap = plt.get_cmap("tab10")
    for ax, (title, model) in zip(axes[0], models.items()):
        points, (xlabel, ylabel) = _project_2d(embed_dataset(model, data.images[:n]))
        ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=9.5, s=2, alpha=0.6,
                   rasterized=True)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=name) for i, name in enumerate(data.class_names)]
    fig.legend(handles=handles, loc="center right", frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
    return save(fig, path)


def fit_latent_samplers(latents: torch.Tensor) -> dict[str, Any]:
    """Three guesses at where an autoencoder's codes live, fitted to encoded data.

    * ``joint``: a normal with the codes' mean and full covariance;
    * ``independent``: a normal per dimension (diagonal covariance, same variances);
    * ``uniform``: the box spanned by the codes' per-dimension minimum and maximum.

    Returns the fitted parameters and a ``sample(kind, n, generator)`` function.
    """
    z = latents.double()
    mean, cov = z.mean(0), torch.cov(z.T).reshape(z.shape[1], z.shape[1])
    low, high = z.min(0).values, z.max(0).values
    chol = torch.linalg.cholesky(cov + 1e-9 * torch.eye(len(mean), dtype=z.dtype))

    def sample(kind: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if kind == "uniform":
            u = torch.rand(n, len(mean), generator=generator, dtype=z.dtype)
            return (low + u * (high - low)).float()
        eps = torch.randn(n, len(mean), generator=generator, dtype=z.dtype)
        if kind == "joint":
            return (mean + eps @ chol.T).float()
        if kind == "independent":
            return (mean + eps * cov.diagonal().sqrt()).float()
        raise ValueError(f"kind must be 'joint', 'independent' or 'uniform', not {kind!r}")

    return {"mean": mean, "cov": cov, "low": low, "high": high, "sample": sample}


def random_latent_figure(model: LatentModel, data: ImageDataset, n: int = 10, seed: int = 0,
                         vae: VAE | None = None, path: str | os.PathLike | None = None) -> Figure:
    """Decodes of random codes from normals and a box fitted to the encoded ``data``.

    With ``vae``, a last row shows that VAE's samples from its prior ``N(0, I)``.
    """
    samplers = fit_latent_samplers(embed_dataset(model, data))
    gen = torch.Generator().manual_seed(seed)
    rows = [
        ("normal fitted to the codes (full covariance)", _decode(model, samplers["sample"]("joint", n, gen))),
        ("normal per dimension (diagonal covariance)", _decode(model, samplers["sample"]("independent", n, gen))),
        ("uniform over the codes' bounding box", _decode(model, samplers["sample"]("uniform", n, gen))),
    ]
    if vae is not None:
        rows.append(("VAE: z ~ N(0, I)", vae.sample(n, generator=gen).float().cpu().clamp(0, 1)))
    return save(_rows_figure(rows), path)


def samples_figure(model: VAE, n: int = 32, nrow: int = 8, seed: int = 0, title: str | None = None,
                   path: str | os.PathLike | None = None) -> Figure:
    """``n`` samples from a VAE: ``z ~ N(0, I)`` decoded."""
    gen = torch.Generator().manual_seed(seed)
    return image_grid_figure(model.sample(n, generator=gen).float().cpu().clamp(0, 1), nrow=nrow, title=title,
                             path=path)


def manifold_figure(model: LatentModel, n: int = 15, data: ImageDataset | None = None,
                    path: str | os.PathLike | None = None) -> Figure:
    """Decodes of an ``n x n`` grid over a 2-D latent space.

    For a VAE the grid follows Kingma & Welling: the prior's quantiles
    ``Phi^-1(linspace(0.05, 0.95, n))`` on each axis, so each cell has equal prior mass.
    For an autoencoder (no prior) it spans the 1st to 99th percentile of the codes of ``data``.
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
    images = _decode(model, torch.stack([z1.flatten(), z2.flatten()], 1))
    h, w = images.shape[-2:]
    fig, ax = plt.subplots(figsize=(6 * w / h, 6))
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
    a, b = _as_float(start[None] if start.dim() == 3 else start), _as_float(end[None] if end.dim() == 3 else end)
    t = torch.linspace(0, 1, steps)[:, None]
    rows = []
    for label, model in models.items():
        device = next(model.parameters()).device
        za, zb = model.embed(a.to(device)).cpu(), model.embed(b.to(device)).cpu()
        rows.append((label, _decode(model, (1 - t) * za + t * zb)))
    return save(_rows_figure(rows), path)


# --------------------------------------------------------------------------- the book's set


def book_figures(out_dir: str | os.PathLike = "images", weights: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None, device: str | None = None,
                 download: bool = True) -> list[Path]:
    """Draw every Fashion-MNIST figure the book includes from the pretrained weights.

    Returns the paths written. Models missing from the manifest are reported by
    `load_pretrained` with the command that trains them.
    """
    from .checkpoints import load_pretrained, manifest
    from .data import fashion_mnist
    from .train import pick_device

    dev = pick_device(device)
    out = Path(out_dir)
    test = fashion_mnist("test", root=data_root, download=download)
    m = {name: load_pretrained(name, device=dev, folder=weights)
         for name in ("fmnist-ae", "fmnist-ae-2d", "fmnist-vae", "fmnist-vae-2d", "fmnist-mlp-vae")}
    entries = manifest(weights)
    first = test.images[:10]
    pair = (test.images[0], test.images[2])  # an ankle boot and a trouser
    figs = {
        "fmnist-test-images.png": lambda p: image_grid_figure(test.images[:32], nrow=8, path=p),
        "fmnist-reconstructions.png": lambda p: reconstruction_figure(
            {"autoencoder (16-d)": m["fmnist-ae"], "VAE (16-d)": m["fmnist-vae"]}, first, path=p),
        "fmnist-ae-random-latents.png": lambda p: random_latent_figure(m["fmnist-ae"], test, n=10, seed=0, path=p),
        "fmnist-ae-vs-vae-samples.png": lambda p: random_latent_figure(m["fmnist-ae"], test, n=10, seed=1,
                                                                      vae=m["fmnist-vae"], path=p),
        "fmnist-vae-samples.png": lambda p: samples_figure(m["fmnist-vae"], n=32, seed=0, path=p),
        "fmnist-mlp-vae-samples.png": lambda p: samples_figure(m["fmnist-mlp-vae"], n=32, seed=0, path=p),
        "fmnist-latent-2d.png": lambda p: latent_scatter_figure(
            {"autoencoder": m["fmnist-ae-2d"], "VAE (posterior means)": m["fmnist-vae-2d"]}, test, path=p),
        "fmnist-ae-2d-manifold.png": lambda p: manifold_figure(m["fmnist-ae-2d"], data=test, path=p),
        "fmnist-vae-2d-manifold.png": lambda p: manifold_figure(m["fmnist-vae-2d"], path=p),
        "fmnist-interpolation.png": lambda p: interpolation_figure(
            {"autoencoder": m["fmnist-ae"], "VAE": m["fmnist-vae"]}, *pair, steps=10, path=p),
        "fmnist-training-curves.png": lambda p: training_curves_figure(
            {n: entries[n]["history"] for n in ("fmnist-ae", "fmnist-vae", "fmnist-mlp-vae")}, path=p),
    }
    written = []
    for name, draw in figs.items():
        plt.close(draw(out / name))
        written.append(out / name)
    return written

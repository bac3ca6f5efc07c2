"""Plots of the model families beyond one Gaussian latent: conditional grids, hierarchies, samples side by side.

Every function takes models through the family interface (``sample(n, generator)``,
``reconstruct``; a conditional VAE's ``decode(z, y)``), so the same plot serves a VAE, a
VQ-VAE, a ladder VAE and a diffusion model.
"""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from ..data import ImageDataset, condition_vectors, to_float
from .base import grid_array, rows_figure, save


def _labelled_grid(images: torch.Tensor, nrow: int, row_labels: Sequence[str], col_labels: Sequence[str] = (),
                   scale: float = 0.6) -> Figure:
    """A grid of images with a label on the left of each row (and above each column if given)."""
    rows = len(images) // nrow
    h, w = images.shape[-2:]
    fig, ax = plt.subplots(figsize=(nrow * scale * w / h + 1.2, rows * scale + (0.4 if col_labels else 0)))
    ax.imshow(grid_array(images, nrow), interpolation="nearest")
    step_y, step_x = h + 2, w + 2  # make_grid's padding is 2
    ax.set_yticks([2 + step_y * i + h / 2 for i in range(rows)], list(row_labels))
    ax.set_xticks([2 + step_x * j + w / 2 for j in range(len(col_labels))], list(col_labels), rotation=45,
                  ha="left")
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    return fig


@torch.no_grad()
def class_grid_figure(cvae: torch.nn.Module, class_names: Sequence[str], n_z: int = 8, seed: int = 0,
                      path: str | os.PathLike | None = None) -> Figure:
    """One row per class, one column per ``z ~ N(0, I)``: the same ``z`` decoded under every class."""
    cvae.eval()
    z = torch.randn(n_z, cvae.latent_dim, generator=torch.Generator().manual_seed(seed))
    k = len(class_names)
    zs = z.repeat(k, 1)  # row-major: class c, then every z
    ys = torch.eye(k).repeat_interleave(n_z, 0)
    images = cvae.decode(zs.to(cvae.device), ys.to(cvae.device)).float().cpu()
    return save(_labelled_grid(images, n_z, class_names), path)


@torch.no_grad()
def style_transfer_figure(cvae: torch.nn.Module, data: ImageDataset, n: int = 6, seed: int = 0,
                          path: str | os.PathLike | None = None) -> Figure:
    """Each row: a test image, then its code ``z`` (the mean of ``q(z|x, y)`` under its own label)
    decoded under every class."""
    cvae.eval()
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    x = to_float(data.images[idx]).to(cvae.device)
    y = condition_vectors(cvae.config, data)[idx].to(cvae.device)
    z = cvae.encode(x, y)[0]
    k = y.shape[1]
    out = [torch.cat([x[i:i + 1], cvae.decode(z[i:i + 1].expand(k, -1), torch.eye(k, device=cvae.device))])
           for i in range(n)]
    names = [data.class_names[int(c)] for c in data.labels[idx]]
    return save(_labelled_grid(torch.cat(out).float().cpu(), k + 1, names, ["input", *data.class_names]), path)


@torch.no_grad()
def attribute_flip_figure(cvae: torch.nn.Module, data: ImageDataset, n: int = 8, seed: int = 0,
                          path: str | os.PathLike | None = None) -> Figure:
    """Columns: test faces. Rows: the input, its reconstruction under its own attributes ``y``, then one
    row per attribute with that attribute flipped in ``y`` and the same code ``z``."""
    cvae.eval()
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    x = to_float(data.images[idx]).to(cvae.device)
    y = condition_vectors(cvae.config, data)[idx].to(cvae.device)
    z = cvae.encode(x, y)[0]
    rows = [("input", x.cpu()), ("reconstruction (its own attributes)", cvae.decode(z, y).float().cpu())]
    for j, name in enumerate(cvae.config.condition):
        flipped = y.clone()
        flipped[:, j] = 1 - flipped[:, j]
        rows.append((f"{name} flipped", cvae.decode(z, flipped).float().cpu()))
    return save(rows_figure(rows), path)


@torch.no_grad()
def samples_side_by_side_figure(models: dict[str, torch.nn.Module], n: int = 16, seed: int = 0,
                                path: str | os.PathLike | None = None) -> Figure:
    """A row of ``n`` samples from each model, each with the same seed."""
    rows = []
    for label, model in models.items():
        model.eval()
        rows.append((label, model.sample(n, generator=torch.Generator().manual_seed(seed)).float().cpu()))
    return save(rows_figure(rows), path)


@torch.no_grad()
def hierarchy_figure(hvae: torch.nn.Module, n_top: int = 5, n_bottom: int = 10, seed: int = 0,
                     path: str | os.PathLike | None = None) -> Figure:
    """What each level of a two-level VAE decides: each row one ``z2 ~ p(z2)``, its columns decodes of
    different ``z1 ~ p(z1|z2)``."""
    hvae.eval()
    gen = torch.Generator().manual_seed(seed)
    z2 = torch.randn(n_top, hvae.config.top_latent_dim, generator=gen).repeat_interleave(n_bottom, 0)
    mu, logvar = hvae.prior_bottom(z2.to(hvae.device))
    eps = torch.randn(mu.shape, generator=gen).to(hvae.device)
    images = hvae.decode(mu + (0.5 * logvar).exp() * eps).float().cpu()
    return save(_labelled_grid(images, n_bottom, [f"z2 #{i + 1}" for i in range(n_top)]), path)


def diffusion_toy_figure(kind: str = "moons", steps: int = 50, keep: Sequence[int] = (50, 25, 15, 10, 5, 2),
                         seed: int = 0, zoom: float = 1.2, path: str | os.PathLike | None = None) -> Figure:
    """A diffusion model on 2-D points, trained in seconds (`vaebook.diffusion.train_toy` with its defaults and
    ``seed``). First the reverse chain's ``x_t`` at each step in ``keep``, from ``x_T ~ N(0, I)``, on [-3, 3]^2
    (the dashed square is [-zoom, zoom]^2); then, inside that square, the samples (the same 2,000 chains) and
    the training data."""
    from ..diffusion import toy_sample, train_toy

    run = train_toy(kind, steps=steps, seed=seed)
    n = len(run["data"])
    samples, kept = toy_sample(run["model"], steps, n, torch.Generator().manual_seed(seed + 1), keep=tuple(keep))
    panels = [(f"$x_{{{t}}}$" + (r" $\sim \mathcal{N}(0, I)$" if t == steps else ""), kept[t], "C7", 3.0)
              for t in sorted(keep, reverse=True)]
    panels += [(f"samples ($T$ = {steps})", samples, "C3", zoom), ("training data", run["data"], "C0", zoom)]
    cols = (len(panels) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(2.0 * cols, 4.6), squeeze=False)
    for ax, (title, points, colour, half) in zip(axes.flat, panels):
        ax.scatter(points[:, 0], points[:, 1], s=1.5 if half > zoom else 2.5, color=colour, alpha=0.5,
                   linewidths=0, rasterized=True)
        ax.set_title(title)
        ticks = [-2, 0, 2] if half > zoom else [-1, 0, 1]
        ax.set(xlim=(-half, half), ylim=(-half, half), aspect="equal", xticks=ticks, yticks=ticks)
        if half > zoom:
            ax.plot([-zoom, zoom, zoom, -zoom, -zoom], [-zoom, -zoom, zoom, zoom, -zoom], "k--", lw=0.6)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    fig.tight_layout()
    return save(fig, path)


__all__ = ["attribute_flip_figure", "class_grid_figure", "diffusion_toy_figure", "hierarchy_figure",
           "samples_side_by_side_figure", "style_transfer_figure"]

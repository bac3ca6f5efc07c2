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
from .evaluate import attribute_vectors, embed_dataset, kl_per_dimension, nearest_neighbours
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
def _reconstruct(model: LatentModel, x: torch.Tensor) -> torch.Tensor:
    """``model.reconstruct(x)`` on the model's device, returned on the CPU in [0, 1]."""
    model.eval()
    return model.reconstruct(x.to(next(model.parameters()).device)).float().cpu().clamp(0, 1)


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
        rows.append((label, _reconstruct(model, x)))
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
    images = _decode(model, torch.stack([z1.flatten(), z2.flatten()], 1))
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
    a, b = _as_float(start[None] if start.dim() == 3 else start), _as_float(end[None] if end.dim() == 3 else end)
    t = torch.linspace(0, 1, steps)[:, None]
    rows = []
    for label, model in models.items():
        device = next(model.parameters()).device
        za, zb = model.embed(a.to(device)).cpu(), model.embed(b.to(device)).cpu()
        rows.append((label, _decode(model, (1 - t) * za + t * zb)))
    return save(_rows_figure(rows), path)


# --------------------------------------------------------------------------- theory figures (no trained model)


def _box(ax: plt.Axes, x: float, y: float, w: float, h: float, colour: str, label: str | None = None,
         fontsize: float = 13, **kw: Any) -> None:
    """A rounded box centred at ``(x, y)`` with an optional label inside."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor="0.2", linewidth=1.2, **kw))
    if label:
        ax.text(x, y, label, ha="center", va="center", fontsize=fontsize)


def _trapezoid(ax: plt.Axes, x0: float, x1: float, h0: float, h1: float, colour: str, label: str) -> None:
    """A trapezoid from height ``h0`` at ``x0`` to ``h1`` at ``x1``, centred on y = 0, labelled inside."""
    from matplotlib.patches import Polygon

    corners = [(x0, -h0 / 2), (x1, -h1 / 2), (x1, h1 / 2), (x0, h0 / 2)]
    ax.add_patch(Polygon(corners, closed=True, facecolor=colour, edgecolor="0.2", linewidth=1.2))
    ax.text((x0 + x1) / 2, 0, label, ha="center", va="center", fontsize=12)


def _arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], **kw: Any) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "-|>", "color": "0.2", "lw": 1.4, "shrinkA": 0, "shrinkB": 0, **kw})


def _pixel_box(ax: plt.Axes, x: float, w: float, cells: int = 6, seed: int = 0, blur: float = 0.0) -> None:
    """A square of grey 'pixels' centred at ``(x, 0)``: the picture of an image.

    ``blur`` in [0, 1] pulls the pixels towards their mean, so the same ``seed`` with
    some blur draws an imperfect reconstruction of the image.
    """
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(cells, cells, generator=gen).numpy()
    values = (1 - blur) * values + blur * values.mean()
    ax.imshow(values, cmap="Greys", vmin=-0.3, vmax=1.3, extent=(x - w / 2, x + w / 2, -w / 2, w / 2),
              interpolation="nearest", zorder=2)
    ax.add_patch(plt.Rectangle((x - w / 2, -w / 2), w, w, fill=False, edgecolor="0.2", linewidth=1.2, zorder=3))


_ENCODER_COLOUR, _DECODER_COLOUR, _LATENT_COLOUR, _NOISE_COLOUR = "#cfe2f3", "#fce5cd", "#d9ead3", "#f4cccc"


def autoencoder_diagram_figure(path: str | os.PathLike | None = None) -> Figure:
    """An autoencoder: image ``x``, encoder ``f`` narrowing to a code ``z``, decoder ``g`` widening to ``x-hat``.

    The narrowing is the point: the code is smaller than the image, so the network
    must keep only what it needs to rebuild ``x``.
    """
    fig, ax = plt.subplots(figsize=(7.0, 2.5))
    side = 1.5
    _pixel_box(ax, 0.0, side, seed=1)
    _trapezoid(ax, 1.1, 3.4, 1.8, 0.7, _ENCODER_COLOUR, "encoder $f$")
    _box(ax, 4.05, 0.0, 0.5, 0.7, _LATENT_COLOUR, "$z$", fontsize=14)
    _trapezoid(ax, 4.7, 7.0, 0.7, 1.8, _DECODER_COLOUR, "decoder $g$")
    _pixel_box(ax, 8.1, side, seed=1, blur=0.3)
    for a, b in ((0.8, 1.1), (3.4, 3.8), (4.3, 4.7), (7.0, 7.3)):
        _arrow(ax, (a, 0.0), (b, 0.0))
    below = -side / 2 - 0.3
    ax.text(0.0, below, "$x$ (input image)", ha="center", va="top", fontsize=12)
    ax.text(4.05, -0.65, "$z = f(x)$\nlatent code", ha="center", va="top", fontsize=12)
    ax.text(8.1, below, r"$\hat{x} = g(z)$ (output)", ha="center", va="top", fontsize=12)
    ax.set(xlim=(-0.9, 9.0), ylim=(-1.5, 0.95), aspect="equal")
    ax.set_axis_off()
    fig.tight_layout(pad=0.2)
    return save(fig, path)


def vae_diagram_figure(path: str | os.PathLike | None = None) -> Figure:
    """A VAE: the encoder outputs ``mu`` and ``log sigma^2``; ``z = mu + sigma * eps`` with outside noise ``eps``.

    Drawn to show where the randomness enters: ``eps ~ N(0, I)`` comes in from the
    side, so the path from ``x`` through ``mu`` and ``sigma`` to ``z`` and the decoder
    is deterministic and differentiable (the reparameterisation trick).
    """
    from matplotlib.patches import Circle

    fig, ax = plt.subplots(figsize=(8.4, 3.1))
    side = 1.5
    _pixel_box(ax, 0.0, side, seed=1)
    _trapezoid(ax, 1.1, 3.3, 1.8, 1.3, _ENCODER_COLOUR, "encoder")
    _box(ax, 4.05, 0.38, 0.75, 0.5, _LATENT_COLOUR, r"$\mu$", fontsize=14)
    _box(ax, 4.05, -0.38, 0.75, 0.5, _LATENT_COLOUR, r"$\log\sigma^2$", fontsize=12)
    sample_x = 5.55
    ax.add_patch(Circle((sample_x, 0.0), 0.42, facecolor="white", edgecolor="0.2", linewidth=1.2, zorder=2))
    ax.text(sample_x, 0.0, "$z$", ha="center", va="center", fontsize=15, zorder=3)
    _box(ax, sample_x, -1.55, 1.05, 0.5, _NOISE_COLOUR, r"$\epsilon \sim \mathcal{N}(0, I)$", fontsize=11)
    _trapezoid(ax, 6.45, 8.65, 0.7, 1.8, _DECODER_COLOUR, "decoder $g$")
    _pixel_box(ax, 9.75, side, seed=1, blur=0.3)
    _arrow(ax, (0.8, 0.0), (1.1, 0.0))
    for y in (0.38, -0.38):
        _arrow(ax, (3.3, y), (3.65, y))
        _arrow(ax, (4.45, y), (sample_x - 0.38, y * 0.45))
    _arrow(ax, (sample_x, -1.28), (sample_x, -0.44))
    _arrow(ax, (sample_x + 0.44, 0.0), (6.45, 0.0))
    _arrow(ax, (8.65, 0.0), (8.95, 0.0))
    ax.text(sample_x, 0.55, r"$z = \mu + \sigma \odot \epsilon$", ha="center", va="bottom", fontsize=12)
    ax.text(4.05, -0.75, r"$q(z\,|\,x) = \mathcal{N}(\mu, \sigma^2)$", ha="center", va="top", fontsize=10,
            color="0.35")
    below = -side / 2 - 0.3
    ax.text(0.0, below, "$x$", ha="center", va="top", fontsize=13)
    ax.text(9.75, below, r"$\hat{x} = g(z)$", ha="center", va="top", fontsize=12)
    ax.text(sample_x + 0.65, -1.55, "noise from outside:\nno gradient needed", ha="left", va="center",
            fontsize=9.5, color="0.35")
    ax.set(xlim=(-0.9, 10.65), ylim=(-1.95, 1.25), aspect="equal")
    ax.set_axis_off()
    fig.tight_layout(pad=0.2)
    return save(fig, path)


def _bce(p: torch.Tensor, x: float) -> torch.Tensor:
    """``-[x log p + (1 - x) log(1 - p)]``, with ``0 log 0 = 0`` so that ``_bce(x, x)`` is finite for x in {0, 1}."""
    x_t = torch.as_tensor(float(x), dtype=p.dtype)
    return -(torch.xlogy(x_t, p) + torch.xlogy(1 - x_t, 1 - p))


def penalty_figure(targets: Sequence[float] = (0.0, 0.5, 0.9), path: str | os.PathLike | None = None) -> Figure:
    """Squared error against binary cross-entropy as a function of the prediction ``p``, one panel per target ``x``.

    Plots ``(p - x)^2`` and ``BCE(p, x) - BCE(x, x)`` with
    ``BCE(p, x) = -[x log p + (1 - x) log(1 - p)]``. Subtracting the minimum
    ``BCE(x, x)`` (the entropy of a Bernoulli(x)) puts both curves' minimum at 0 when
    ``p = x``; the excess is ``KL(Bernoulli(x) || Bernoulli(p))``. Squared error never
    exceeds 1, whereas the cross-entropy grows without bound as a prediction becomes
    confidently wrong (``p -> 0`` or ``1`` with ``x`` on the other side).
    """
    p = torch.linspace(1e-4, 1 - 1e-4, 2001, dtype=torch.float64)
    ymax = 3.0
    fig, axes = plt.subplots(1, len(targets), figsize=(3.0 * len(targets), 2.9), sharey=True, squeeze=False)
    for ax, x in zip(axes[0], targets):
        excess = _bce(p, x) - _bce(torch.tensor(float(x), dtype=torch.float64), x)
        ax.plot(p.numpy(), ((p - x) ** 2).numpy(), color="C0", label="squared error $(p - x)^2$")
        ax.plot(p.numpy(), excess.numpy(), color="C3", label=r"BCE$(p, x)$ $-$ BCE$(x, x)$")
        ax.axvline(x, color="0.5", ls=":", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, ymax), xlabel="prediction $p$")
        ax.set_title(f"target $x = {x:g}$", loc="left")
        ax.grid(alpha=0.3)
        # the confidently wrong end, where the cross-entropy runs off the top
        if x != 0.5:
            wrong_end = 1.0 if x < 0.5 else 0.0
            ax.annotate(r"BCE $\to \infty$", xy=(0.97 if wrong_end else 0.03, ymax * 0.97),
                        xytext=(0.62 if wrong_end else 0.38, ymax * 0.8), ha="center", fontsize=8.5, color="C3",
                        arrowprops={"arrowstyle": "->", "color": "C3"})
        else:
            ax.text(0.5, ymax * 0.8, r"BCE $\to \infty$ at both ends", ha="center", fontsize=8.5, color="C3")
    axes[0, 0].set_ylabel("penalty")
    axes[0, 0].text(0.3, 1.25, "confident and wrong:\nBCE explodes,\nsquared error $\\leq 1$", fontsize=8.5,
                    ha="center", va="bottom", color="0.25")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save(fig, path)


# The bimodal target of the KL figure: (weight, mean, standard deviation) per component.
KL_MIXTURE: tuple[tuple[float, float, float], ...] = ((0.5, -2.0, 0.6), (0.5, 2.0, 0.6))
_KL_GRID = torch.linspace(-12.0, 12.0, 4801, dtype=torch.float64)


def _normal_log_density(x: torch.Tensor, mu: torch.Tensor | float, sigma: torch.Tensor | float) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    return -0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * np.log(2 * np.pi)


def _mixture_log_density(x: torch.Tensor,
                         components: Sequence[tuple[float, float, float]] = KL_MIXTURE) -> torch.Tensor:
    terms = torch.stack([np.log(w) + _normal_log_density(x, m, s) for w, m, s in components])
    return torch.logsumexp(terms, 0)


def gaussian_mixture_kl(mu: torch.Tensor | float, sigma: torch.Tensor | float, direction: str,
                        grid: torch.Tensor | None = None) -> torch.Tensor:
    """KL between the bimodal `KL_MIXTURE` ``p`` and ``q = N(mu, sigma^2)``, by the trapezoid rule on a fine grid.

    ``direction="forward"`` is ``KL(p || q) = E_p[log p - log q]``; ``"reverse"`` is
    ``KL(q || p) = E_q[log q - log p]``. ``mu`` and ``sigma`` may be tensors of any
    (broadcastable) shape, giving one KL each, and the result is differentiable in them.
    The default ``grid`` spans [-12, 12] in steps of 0.005, wide and fine enough for
    ``sigma`` in about [0.05, 3] and ``|mu| < 5``.
    """
    x = _KL_GRID if grid is None else grid
    mu = torch.as_tensor(mu, dtype=x.dtype)[..., None]
    sigma = torch.as_tensor(sigma, dtype=x.dtype)[..., None]
    log_p, log_q = _mixture_log_density(x), _normal_log_density(x, mu, sigma)
    if direction == "forward":
        integrand = log_p.exp() * (log_p - log_q)
    elif direction == "reverse":
        integrand = log_q.exp() * (log_q - log_p)
    else:
        raise ValueError(f"direction must be 'forward' or 'reverse', not {direction!r}")
    return torch.trapezoid(integrand, x, dim=-1)


def fit_gaussian_kl(direction: str) -> tuple[float, float, float]:
    """The Gaussian ``q = N(mu, sigma^2)`` closest to the bimodal `KL_MIXTURE` in one KL direction.

    Forward ``KL(p || q)`` is minimised by matching moments: ``q`` spreads over both
    modes (mass-covering; mean 0, variance ``0.6^2 + 2^2 = 4.36``). Reverse
    ``KL(q || p)`` punishes ``q`` for putting mass where ``p`` has little, so ``q``
    settles on one mode (mode-seeking; ``mu`` near 2, ``sigma`` near 0.6, KL near
    ``log 2``, since ``q`` then sees only half of ``p``'s mass).

    The reverse KL has more than one local minimum: besides the two modes, a wide
    ``q`` centred at 0 (``sigma`` about 1.8, KL about 1.14) is one too, and a
    gradient-based fit started from a wide ``q`` stops there. So the fit first
    searches a grid (``mu`` in [-4, 4] by 0.2, 32 values of ``sigma`` from 0.2 to 4)
    (integrating on a coarser grid, steps of 0.02) for the global minimum, taking the
    larger ``mu`` of two mirror-image ties, then refines it with L-BFGS over
    ``(mu, log sigma)`` on the fine grid.

    The result is deterministic, so it is cached.

    Returns:
        ``(mu, sigma, kl)`` as floats, the KL in the direction fitted, in nats.
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', not {direction!r}")
    if direction not in _KL_FITS:
        _KL_FITS[direction] = _fit_gaussian_kl(direction)
    return _KL_FITS[direction]


_KL_FITS: dict[str, tuple[float, float, float]] = {}


def _fit_gaussian_kl(direction: str) -> tuple[float, float, float]:
    mus = torch.linspace(-4.0, 4.0, 41, dtype=torch.float64)
    sigmas = torch.logspace(np.log10(0.2), np.log10(4.0), 32, dtype=torch.float64)
    coarse = torch.linspace(-12.0, 12.0, 1201, dtype=torch.float64)
    with torch.no_grad():
        table = gaussian_mixture_kl(mus[:, None], sigmas, direction, coarse)  # (mu, sigma)
    near_best = table <= table.min() + 1e-9
    i = int(near_best.any(1).nonzero().max())  # the largest mu among the (mirror-image) minima
    j = int(table[i].argmin())
    mu = mus[i].clone().requires_grad_(True)
    log_sigma = sigmas[j].log().clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([mu, log_sigma], lr=1.0, max_iter=200, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = gaussian_mixture_kl(mu, log_sigma.exp(), direction)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    with torch.no_grad():
        kl = gaussian_mixture_kl(mu, log_sigma.exp(), direction)
        return float(mu), float(log_sigma.exp()), float(kl)


def kl_asymmetry_figure(path: str | os.PathLike | None = None) -> Figure:
    """A bimodal ``p`` and the single Gaussians fitted to it by forward and by reverse KL.

    Forward ``KL(p || q)`` covers both modes with one wide bump, putting much of its
    mass in the valley where ``p`` has almost none; reverse ``KL(q || p)`` (the
    direction in the ELBO) picks one mode and ignores the other. The legend gives each
    fit's KL in both directions.
    """
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    fits = {d: fit_gaussian_kl(d) for d in ("forward", "reverse")}
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    ax.fill_between(x.numpy(), _mixture_log_density(x).exp().numpy(), color="0.8", label="target $p$ (two modes)")
    styles = {"forward": ("C0", "-", r"$q$ minimising KL$(p\,\|\,q)$: mass-covering"),
              "reverse": ("C3", "--", r"$q$ minimising KL$(q\,\|\,p)$: mode-seeking")}
    for direction, (mu, sigma, _) in fits.items():
        colour, ls, name = styles[direction]
        forward = float(gaussian_mixture_kl(mu, sigma, "forward"))
        reverse = float(gaussian_mixture_kl(mu, sigma, "reverse"))
        label = (f"{name}\n$\\mu$ = {round(mu, 2) + 0.0:.2f}, $\\sigma$ = {sigma:.2f};  "
                 f"KL$(p\\|q)$ = {forward:.2f}, KL$(q\\|p)$ = {reverse:.2f}")
        ax.plot(x.numpy(), _normal_log_density(x, mu, sigma).exp().numpy(), color=colour, ls=ls, lw=2, label=label)
    ax.set(xlim=(-6, 6), ylim=(0, 0.98), xlabel="$z$", ylabel="density")
    ax.legend(fontsize=8.5, frameon=False, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


# A skewed two-mode target for the inverse-transform figure: (weight, mean, standard deviation).
_SHAPE_MIXTURE: tuple[tuple[float, float, float], ...] = ((0.35, -2.0, 0.5), (0.65, 1.5, 0.7))


def _mixture_cdf(x: torch.Tensor, components: Sequence[tuple[float, float, float]]) -> torch.Tensor:
    return sum(w * torch.special.ndtr((x - m) / s) for w, m, s in components)


def normal_to_target(z: torch.Tensor,
                     components: Sequence[tuple[float, float, float]] = _SHAPE_MIXTURE) -> torch.Tensor:
    """``g(z) = F^-1(Phi(z))``: the increasing map that turns ``N(0, 1)`` samples into samples of a Gaussian mixture.

    ``Phi(z)`` is uniform on (0, 1) when ``z ~ N(0, 1)``, and ``F^-1`` of a uniform has
    CDF ``F``; the mixture's ``F`` has no closed-form inverse, so it is inverted by
    linear interpolation on a grid of 8001 points over [-8, 8].
    """
    grid = torch.linspace(-8.0, 8.0, 8001, dtype=torch.float64)
    u = torch.special.ndtr(z.double())
    return torch.from_numpy(np.interp(u.numpy(), _mixture_cdf(grid, components).numpy(), grid.numpy()))


def inverse_transform_figure(path: str | os.PathLike | None = None, seed: int = 0, n: int = 20_000) -> Figure:
    """Reshaping noise with a deterministic function: why a ``N(0, I)`` prior costs a VAE nothing.

    (a) ``u ~ U(0, 1)`` pushed through the exponential's inverse CDF ``-log(1 - u)``
    has the exponential density. (b) The map ``g(z) = F^-1(Phi(z))`` for a skewed
    two-mode mixture ``F``. (c) ``g(z)`` for ``z ~ N(0, 1)`` has exactly the
    mixture's density. A decoder is such a ``g`` (learned, and in many dimensions), so
    a simple prior on ``z`` does not limit the shapes the data can take.
    """
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    expo = -torch.log1p(-u)
    z = torch.randn(n, generator=gen, dtype=torch.float64)
    shaped = normal_to_target(z)

    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.0))
    ax = axes[0]
    t = np.linspace(0, 6, 400)
    ax.hist(expo.numpy(), bins=np.linspace(0, 6, 49), density=True, color="C0", alpha=0.45,
            label=r"$-\log(1-u)$, $u \sim U(0, 1)$")
    ax.plot(t, np.exp(-t), color="C0", lw=2, label="Exp(1) density $e^{-x}$")
    ax.set(xlim=(0, 6), xlabel="$x$", ylabel="density")
    ax.set_title("(a) uniform through an inverse CDF", loc="left")
    ax.legend(fontsize=8, frameon=False)

    ax = axes[1]
    zz = torch.linspace(-3.5, 3.5, 701, dtype=torch.float64)
    ax.plot(zz.numpy(), normal_to_target(zz).numpy(), color="C2", lw=2)
    ax.set(xlim=(-3.5, 3.5), ylim=(-4.2, 4.2), xlabel="$z$", ylabel="$x = g(z)$")
    ax.set_title(r"(b) the map $g(z) = F^{-1}(\Phi(z))$", loc="left")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.text(-3.3, 3.6, "steep where the target has\nlittle mass, flat where it\nhas a lot", fontsize=8, va="top",
            color="0.3")

    ax = axes[2]
    x = torch.linspace(-4.5, 4.5, 600, dtype=torch.float64)
    density = sum(w * torch.exp(_normal_log_density(x, m, s)) for w, m, s in _SHAPE_MIXTURE)
    ax.plot(x.numpy(), torch.exp(_normal_log_density(x, 0.0, 1.0)).numpy(), color="0.45", ls="--", lw=1.2,
            label=r"$z \sim \mathcal{N}(0, 1)$")
    ax.hist(shaped.numpy(), bins=np.linspace(-4.5, 4.5, 61), density=True, color="C2", alpha=0.45,
            label="$g(z)$")
    ax.plot(x.numpy(), density.numpy(), color="C2", lw=2, label="target mixture")
    ax.set(xlim=(-4.5, 4.5), xlabel="$x$")
    ax.set_title("(c) normal noise through $g$", loc="left")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def gradient_variance_figure(path: str | os.PathLike | None = None, seed: int = 0, mu: float = 1.0,
                             n: int = 10_000) -> Figure:
    """Variance of one-sample ``d/dmu E[f(z)]`` estimates, ``z ~ N(mu, sigma^2)``, against ``sigma``.

    Left: ``f(z) = z^2`` (gradient ``2 mu``), where the variances are known exactly:
    ``4 sigma^2`` for the pathwise estimator ``2z`` and
    ``mu^4 / sigma^2 + 14 mu^2 + 15 sigma^2`` for the score function ``z^2 (z - mu) / sigma^2``
    (dashed). Middle: ``f(z) = sin z`` (gradient ``cos(mu) exp(-sigma^2 / 2)``). The
    score function is also shown with a baseline, ``E[f(z)]`` estimated from 1,000
    separate samples. Right: the ratio of score-function to pathwise variance, which
    grows without bound as ``sigma -> 0``. It is not always above 1: for ``sin z`` and
    ``sigma`` beyond about 1 the slope ``cos z`` swings over its whole range within the
    typical ``z`` while ``E[sin z]`` and the score-function estimates shrink, and the
    score function wins. Each point uses ``n`` samples from `vaebook.gradients`.
    """
    from .gradients import estimator_variance_table, score_function_gradients

    gen = torch.Generator().manual_seed(seed)
    sigmas = torch.logspace(-1, 0.5, 13, dtype=torch.float64)
    functions = {"$f(z) = z^2$": lambda z: z**2, r"$f(z) = \sin z$": torch.sin}
    fig, axes = plt.subplots(1, 3, figsize=(10.2, 3.2))
    for k, (ax, (name, f)) in enumerate(zip(axes[:2], functions.items())):
        table = estimator_variance_table(f, mu, sigmas.tolist(), n, generator=gen)
        with_baseline = []
        for sigma in sigmas.tolist():
            b = float(f(mu + sigma * torch.randn(1000, generator=gen, dtype=torch.float64)).mean())
            with_baseline.append(float(score_function_gradients(f, mu, sigma, n, gen, baseline=b)[:, 0].var()))
        s = sigmas.numpy()
        ax.loglog(s, table["pathwise_var"].numpy(), "o", color="C0", ms=4, label="pathwise (reparameterised)")
        ax.loglog(s, table["score_var"].numpy(), "s", color="C3", ms=4, label="score function")
        ax.loglog(s, with_baseline, "^", color="C1", ms=4, label=r"score function, baseline $\approx E[f]$")
        if k == 0:
            ax.loglog(s, 4 * s**2, "--", color="C0", lw=1, label="exact variance")
            ax.loglog(s, mu**4 / s**2 + 14 * mu**2 + 15 * s**2, "--", color="C3", lw=1)
        ax.set(xlabel=r"$\sigma$", ylabel=r"variance of one $\partial/\partial\mu$ estimate" if k == 0 else None)
        ax.set_title(f"{name}, $\\mu = {mu:g}$", loc="left")
        ax.grid(alpha=0.3, which="both")
        axes[2].loglog(s, (table["score_var"] / table["pathwise_var"]).numpy(), "o-", color=f"C{4 + k}", ms=4,
                       label=name)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, fontsize=8.5)
    ax = axes[2]
    ax.axhline(1, color="0.5", ls=":", lw=1)
    ax.text(0.03, 1.25, "pathwise better", ha="left", va="bottom", fontsize=8, color="0.35",
            transform=ax.get_yaxis_transform())
    ax.text(0.03, 0.8, "score function better", ha="left", va="top", fontsize=8, color="0.35",
            transform=ax.get_yaxis_transform())
    ax.set(xlabel=r"$\sigma$", ylabel="score-function / pathwise variance")
    ax.set_title("variance ratio", loc="left")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save(fig, path)


def theory_figures(out_dir: str | os.PathLike, seed: int = 0) -> list[Path]:
    """Draw the book's figures that need no trained model; returns the paths written.

    ``autoencoder-diagram.png``, ``vae-diagram.png``, ``mse-vs-bce.png``,
    ``kl-asymmetry.png``, ``inverse-transform.png`` and ``gradient-variance.png``.
    The same ``seed`` gives byte-identical files.
    """
    out = Path(out_dir)
    figs = {
        "autoencoder-diagram.png": lambda p: autoencoder_diagram_figure(path=p),
        "vae-diagram.png": lambda p: vae_diagram_figure(path=p),
        "mse-vs-bce.png": lambda p: penalty_figure(path=p),
        "kl-asymmetry.png": lambda p: kl_asymmetry_figure(path=p),
        "inverse-transform.png": lambda p: inverse_transform_figure(path=p, seed=seed),
        "gradient-variance.png": lambda p: gradient_variance_figure(path=p, seed=seed),
    }
    written = []
    for name, draw in figs.items():
        plt.close(draw(out / name))
        written.append(out / name)
    return written


# --------------------------------------------------------------------------- model-based figures of the book


@torch.no_grad()
def pca_reconstruction_figure(train: ImageDataset, images: torch.Tensor, ks: Sequence[int] = (2, 8, 16, 32, 128),
                              linear_ae: LatentModel | None = None,
                              path: str | os.PathLike | None = None) -> Figure:
    """Images projected onto the top-k principal components of ``train``, for several k.

    With ``linear_ae`` a last row shows a trained linear autoencoder's reconstructions.
    """
    from .evaluate import pca

    x = _as_float(images)
    mean, components, _ = pca(train.float(), max(ks))
    flat = x.flatten(1).double() - mean
    rows = [("input", x)]
    for k in ks:
        c = components[:k]
        rows.append((f"PCA, k = {k}", ((flat @ c.T) @ c + mean).float().view_as(x).clamp(0, 1)))
    if linear_ae is not None:
        rows.append((f"linear autoencoder, k = {linear_ae.latent_dim}", _reconstruct(linear_ae, x)))
    return save(_rows_figure(rows), path)


@torch.no_grad()
def denoising_figure(models: dict[str, LatentModel], images: torch.Tensor, noise_std: float = 0.3, seed: int = 0,
                     path: str | os.PathLike | None = None) -> Figure:
    """Clean images, noisy copies (Gaussian noise, clipped to [0, 1]), and each model's output for the noisy copy."""
    x = _as_float(images)
    gen = torch.Generator().manual_seed(seed)
    noisy = (x + noise_std * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    rows = [("clean", x), (f"noisy input (sigma = {noise_std:g})", noisy)]
    for label, model in models.items():
        rows.append((label, _reconstruct(model, noisy)))
    return save(_rows_figure(rows), path)


def anomaly_figure(normal: torch.Tensor, anomalous: torch.Tensor, labels: tuple[str, str] = ("seen classes", "unseen class"),
                   path: str | os.PathLike | None = None) -> Figure:
    """Histograms of reconstruction errors for normal and anomalous images, with the ROC AUC."""
    from .evaluate import roc_auc

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
def beta_sweep_figure(models: dict[str, VAE], images: torch.Tensor, n: int = 8, seed: int = 0,
                      path: str | os.PathLike | None = None) -> Figure:
    """For each beta: reconstructions of the same images, then samples from the prior."""
    x = _as_float(images[:n])
    rows = [("input", x)]
    for label, model in models.items():
        rows.append((f"{label}: reconstructions", _reconstruct(model, x)))
        rows.append((f"{label}: samples", model.sample(n, generator=torch.Generator().manual_seed(seed)).cpu().clamp(0, 1)))
    return save(_rows_figure(rows), path)


def naive_monte_carlo_figure(model: VAE, x: torch.Tensor, ks: Sequence[int] = (1, 10, 100, 1000, 10000),
                             repeats: int = 5, seed: int = 0, path: str | os.PathLike | None = None) -> Figure:
    """Estimates of log p(x) for one image against the number of samples, from the prior and from q(z|x).

    Each dot is one estimate; sampling z from the prior wastes almost every sample on
    codes that explain x badly, so its estimates sit far below the importance-sampled ones.
    """
    from .evaluate import log_likelihood_estimate

    x = _as_float(x if x.dim() == 4 else x[None])
    gen = torch.Generator().manual_seed(seed)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for proposal, marker in (("prior", "o"), ("posterior", "s")):
        for j, k in enumerate(ks):
            est = torch.cat([log_likelihood_estimate(model, x, k, proposal, generator=gen) for _ in range(repeats)])
            ax.scatter([k] * repeats, est.numpy(), marker=marker, color="C0" if proposal == "prior" else "C1",
                       s=14, label=("z ~ p(z) (naive)" if proposal == "prior" else "z ~ q(z|x) (importance)")
                       if j == 0 else None)
    ax.set(xscale="log", xlabel="samples K", ylabel="estimate of log p(x) (nats)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    return save(fig, path)


# --------------------------------------------------------------------------- faces

FACE_ATTRIBUTES = ("Smiling", "Eyeglasses", "Blond_Hair", "Male")


def attribute_figure(model: LatentModel, data: ImageDataset, faces: ImageDataset,
                     attributes: Sequence[str] = FACE_ATTRIBUTES, strengths: Sequence[float] = (0, 0.5, 1, 1.5, 2),
                     path: str | os.PathLike | None = None) -> Figure:
    """Latent attribute vectors at work: for each attribute, a face without it, then
    ``decode(z + s * v)`` for each strength ``s``.

    ``v`` is `vaebook.evaluate.attribute_vectors` on ``data`` (mean code with the
    attribute minus mean code without); the face is the first one in ``faces``
    that lacks the attribute, so ``s = 0`` is its plain reconstruction.
    """
    vectors = attribute_vectors(model, data, tuple(attributes))
    s = torch.tensor([float(v) for v in strengths])[:, None]
    rows = []
    for name, v in vectors.items():
        i = int((faces.attributes[:, faces.attribute_names.index(name)] == 0).nonzero()[0, 0])
        z = embed_dataset(model, faces.images[i:i + 1])
        title = f"+ {name.replace('_', ' ')}: input, then s = " + ", ".join(f"{float(v):g}" for v in strengths)
        rows.append((title, torch.cat([faces.float([i]), _decode(model, z + s * v)])))
    return save(_rows_figure(rows, scale=0.9), path)


def nearest_neighbour_figure(model: VAE, train: ImageDataset, n: int = 10, seed: int = 0,
                             path: str | os.PathLike | None = None) -> Figure:
    """VAE samples above the training images closest to them in pixel space.

    If the model had memorised its training set, each pair would be the same face.
    """
    gen = torch.Generator().manual_seed(seed)
    samples = model.sample(n, generator=gen).float().cpu().clamp(0, 1)
    _, index = nearest_neighbours(samples, train)
    rows = [("VAE samples, z ~ N(0, I)", samples), ("the nearest training image (pixel distance)", train.float(index))]
    return save(_rows_figure(rows, scale=0.9), path)


def likelihood_width_figure(models: dict[str, VAE], images: torch.Tensor, n: int = 10, seed: int = 0,
                            path: str | os.PathLike | None = None) -> Figure:
    """For VAEs that differ in the decoder's standard deviation sigma: inputs, then each model's
    reconstructions and its samples from the prior. A small sigma buys sharp reconstructions with
    a KL term so weak that the prior's samples are not images like the data."""
    x = _as_float(images[:n])
    rows = [("input", x)]
    for label, model in models.items():
        gen = torch.Generator().manual_seed(seed)
        rows.append((f"{label}: reconstructions", _reconstruct(model, x)))
        rows.append((f"{label}: samples, z ~ N(0, I)", model.sample(n, generator=gen).float().cpu().clamp(0, 1)))
    return save(_rows_figure(rows, scale=0.9), path)


def celeba_numbers(vae: VAE, train: ImageDataset, test: ImageDataset, n: int = 1000,
                   seed: int = 0, attributes: Sequence[str] = FACE_ATTRIBUTES) -> dict[str, Any]:
    """The numbers the faces chapter quotes, computed from the models and the data.

    * ``nn_rmse_*``: pixel RMSE from ``n`` VAE samples, ``n`` held-out test faces and
      the VAE's reconstructions of those faces (``n`` at most the test set's size) to
      their nearest training face (median, 5th percentile and minimum). Samples that
      copied training faces would sit near 0; new real faces give the scale of "new";
      and since blurry images sit closer to everything in pixel space, the blurry
      reconstructions of faces not in the training set are the fair comparison.
    * ``attribute_counts``: training faces with each attribute (of ``len(train)``).
    """
    n = min(n, len(test))
    gen = torch.Generator().manual_seed(seed)
    samples = vae.sample(n, generator=gen).float().cpu().clamp(0, 1)
    reconstructions = torch.cat([_reconstruct(vae, test.float(torch.arange(i, min(i + 250, n))))
                                 for i in range(0, n, 250)])
    queries = {"vae_samples": samples, "test_faces": test.images[:n], "vae_reconstructions": reconstructions}
    out: dict[str, Any] = {"n": n, "n_train": len(train), "n_test": len(test), "seed": seed}
    for key, q in queries.items():
        rmse, _ = nearest_neighbours(q, train)
        out[f"nn_rmse_{key}"] = {"median": float(rmse.median()), "p05": float(rmse.quantile(0.05)),
                                 "min": float(rmse.min())}
    out["attribute_counts"] = {a: int(train.attributes[:, train.attribute_names.index(a)].sum()) for a in attributes}
    return out


# --------------------------------------------------------------------------- the book's set


class _Shipped(dict):
    """Shipped models by name, each loaded when a figure first needs it.

    A damaged or missing weights file then costs only the figures drawn from it:
    `book_figures` reports those and draws the rest.
    """

    def __init__(self, weights: str | os.PathLike | None, device: torch.device) -> None:
        super().__init__()
        self.weights, self.device = weights, device

    def __missing__(self, name: str) -> LatentModel:
        from .checkpoints import load_pretrained

        self[name] = model = load_pretrained(name, device=self.device, folder=self.weights)
        return model


def _fashion_mnist_figures(weights, data_root, dev, download) -> dict[str, Any]:
    from .checkpoints import manifest
    from .data import fashion_mnist
    from .evaluate import reconstruction_errors
    from .experiments import BETAS

    BAG = 8

    test = fashion_mnist("test", root=data_root, download=download)
    m = _Shipped(weights, dev)

    class _Betas(dict):
        def __missing__(self, b: float) -> LatentModel:
            return m["fmnist-mlp-vae" if b == 1 else f"fmnist-mlp-vae-beta{b:g}"]

    betas = _Betas()
    entries = manifest(weights)
    first = test.images[:10]
    pair = (test.images[0], test.images[2])  # an ankle boot and a trouser
    return {
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
        "fmnist-pca-reconstructions.png": lambda p: pca_reconstruction_figure(
            fashion_mnist("train", root=data_root, download=download), first, linear_ae=m["fmnist-linear-ae"], path=p),
        "fmnist-denoising.png": lambda p: denoising_figure(
            {"autoencoder": m["fmnist-ae"], "denoising autoencoder": m["fmnist-dae"]}, first, noise_std=0.3, path=p),
        "fmnist-anomaly.png": lambda p: anomaly_figure(
            *(lambda e: (e[test.labels != BAG], e[test.labels == BAG]))(
                reconstruction_errors(m["fmnist-ae-no-bags"], test)),
            labels=("the nine classes seen in training", "Bag, never seen"), path=p),
        "fmnist-beta-sweep.png": lambda p: beta_sweep_figure(
            {f"beta = {b:g}": betas[b] for b in (0.1, 1, 4, 16)}, first, path=p),
        "fmnist-beta-kl-per-dim.png": lambda p: kl_per_dimension_figure(
            {f"beta = {b:g}": betas[b] for b in BETAS}, test, path=p),
        "fmnist-naive-monte-carlo.png": lambda p: naive_monte_carlo_figure(m["fmnist-mlp-vae"], test.images[0], path=p),
    }


def _frey_figures(weights, data_root, dev, download) -> dict[str, Any]:
    from .data import frey_faces

    test = frey_faces("test", root=data_root, download=download)  # data first: a missing data set is skippable
    m = _Shipped(weights, dev)
    return {
        "frey-faces.png": lambda p: image_grid_figure(test.images[:20], nrow=10, path=p),
        "frey-vae-2d-manifold.png": lambda p: manifold_figure(m["frey-vae-2d"], n=19, height=9, path=p),
    }


def _celeba_figures(weights, data_root, dev, download) -> dict[str, Any]:
    from .checkpoints import manifest, write_json
    from .experiments import get

    train, test = get("celeba-vae").load_data(data_root, download=download)  # data first: skippable if missing
    m = _Shipped(weights, dev)
    entries = manifest(weights)
    return {
        "celeba-reconstructions.png": lambda p: reconstruction_figure(
            {"autoencoder (128-d)": m["celeba-ae"], "VAE (128-d)": m["celeba-vae"]}, test.images[:10], path=p),
        "celeba-ae-vs-vae-samples.png": lambda p: random_latent_figure(m["celeba-ae"], test, n=10, seed=0,
                                                                       vae=m["celeba-vae"], path=p),
        "celeba-vae-samples.png": lambda p: samples_figure(m["celeba-vae"], n=32, nrow=8, seed=0, path=p),
        "celeba-interpolation.png": lambda p: interpolation_figure(
            {"autoencoder": m["celeba-ae"], "VAE": m["celeba-vae"]}, test.images[0], test.images[1], steps=10, path=p),
        "celeba-attributes.png": lambda p: attribute_figure(m["celeba-vae"], train, test, path=p),
        "celeba-nearest-neighbours.png": lambda p: nearest_neighbour_figure(m["celeba-vae"], train, n=10, seed=0,
                                                                            path=p),
        "celeba-training-curves.png": lambda p: training_curves_figure(
            {n: entries[n]["history"] for n in ("celeba-ae", "celeba-vae", "celeba-vae-sigma0.1")}, path=p),
        "celeba-sigma.png": lambda p: likelihood_width_figure(
            {f"sigma = {m[n].config.sigma:g}": m[n] for n in ("celeba-vae", "celeba-vae-sigma0.1")}, test.images,
            path=p),
        "celeba-numbers.json": lambda p: write_json(p, celeba_numbers(m["celeba-vae"], train, test)),
    }


FIGURE_SETS = {"fashion-mnist": _fashion_mnist_figures, "frey": _frey_figures, "celeba": _celeba_figures}


def book_figures(out_dir: str | os.PathLike = "images", weights: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None, device: str | None = None,
                 download: bool = True, sets: Sequence[str] | None = None,
                 skip_missing_data: bool = False) -> list[Path]:
    """Draw every figure the book includes: the theory figures, then each data set's.

    Next to the CelebA figures it writes ``celeba-numbers.json``, the numbers the faces
    chapter quotes, so the chapter renders without the CelebA images.

    The data-set figures come from the pretrained weights (models missing from the
    manifest are reported by `load_pretrained` with the command that trains them).
    ``sets`` picks among `FIGURE_SETS` (default: all). With ``skip_missing_data``, a
    set whose data is not on disk (CelebA cannot be downloaded automatically) is
    skipped with a printed line instead of stopping the run. A figure whose weights
    file is damaged or missing is skipped with a printed line, and the others are
    drawn. Returns the paths written.
    """
    from .errors import CheckpointError, DataNotFoundError
    from .train import pick_device

    dev = pick_device(device)
    out = Path(out_dir)
    written = theory_figures(out)
    for name in sets or FIGURE_SETS:
        try:
            figs = FIGURE_SETS[name](weights, data_root, dev, download)
        except DataNotFoundError as e:
            if not skip_missing_data:
                raise
            print(f"skipped the {name} figures: {str(e).splitlines()[0]}")
            continue
        for file, draw in figs.items():
            try:
                result = draw(out / file)  # a Figure, or None for a JSON file of numbers
            except CheckpointError as e:  # a damaged or missing weights file: the figures from the others still come
                print(f"skipped {file}: {str(e).splitlines()[0]}")
                continue
            if result is not None:
                plt.close(result)
            written.append(out / file)
    return written

"""The two diagrams: an autoencoder and a VAE, drawn with matplotlib patches."""

from __future__ import annotations

import os
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .base import save


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

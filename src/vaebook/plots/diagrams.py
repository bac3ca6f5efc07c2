"""The diagrams: an autoencoder, a VAE, and how a transposed convolution upsamples, drawn with matplotlib patches."""

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


# --------------------------------------------------------------------------- transposed convolution

_STAMP_COLOURS = ("#cfe2f3", "#fce5cd", "#d9ead3", "#ead1dc")  # one per input value of the 2 x 2 example
TRANSPOSED_CONV_INPUT = ((1.0, 2.0), (3.0, 4.0))
TRANSPOSED_CONV_KERNEL = ((1.0, 2.0, 1.0), (0.0, 1.0, 2.0), (1.0, 0.0, 1.0))


def transposed_convolution_stamps(x: torch.Tensor, kernel: torch.Tensor,
                                  stride: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """What a single-channel transposed convolution (no padding) adds up: ``(stamps, output)``.

    ``stamps[i, j]`` is the output of ``conv_transpose2d`` when every input value but ``x[i, j]``
    is zero, and ``output`` its output for the whole of ``x``; by linearity ``output`` is the sum
    of the stamps. Shapes: ``x`` (h, w), ``kernel`` (K, K), ``stamps`` (h, w, H, W), ``output`` (H, W)
    with ``H = (h - 1) * stride + K``.
    """
    import torch.nn.functional as F

    def op(inp: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(inp[None, None], kernel[None, None], stride=stride)[0, 0]

    h, w = x.shape
    stamps = torch.stack([torch.stack([op(x * (torch.arange(h)[:, None] == i) * (torch.arange(w)[None] == j))
                                       for j in range(w)]) for i in range(h)])
    return stamps, op(x)


def _grid(ax: plt.Axes, values: torch.Tensor, x0: float, y0: float, cell: float, colours: list[list[str | None]],
          fontsize: float, gid: str, bold: torch.Tensor | None = None) -> None:
    """A table of numbers with its top-left corner at ``(x0, y0)``; a cell whose colour is None is left blank."""
    for i, row in enumerate(values.tolist()):
        for j, v in enumerate(row):
            colour = colours[i][j]
            ax.add_patch(plt.Rectangle((x0 + j * cell, y0 - (i + 1) * cell), cell, cell, linewidth=0.8,
                                       facecolor=colour or "white", edgecolor="0.55" if colour else "0.85"))
            if colour:
                weight = "bold" if bold is not None and bool(bold[i, j]) else "normal"
                ax.text(x0 + (j + 0.5) * cell, y0 - (i + 0.5) * cell, f"{v:g}", ha="center", va="center",
                        fontsize=fontsize, fontweight=weight, gid=f"{gid}:{i},{j}")


def _mix(colours: list[str]) -> str:
    """The average of some hex colours (where stamps overlap)."""
    from matplotlib.colors import to_hex, to_rgb

    rgb = [to_rgb(c) for c in colours]
    return to_hex([sum(c[k] for c in rgb) / len(rgb) for k in range(3)])


def transposed_convolution_figure(path: str | os.PathLike | None = None) -> Figure:
    """How a stride-2 transposed convolution upsamples a 2 x 2 input with a 3 x 3 kernel to 5 x 5.

    Each input value stamps a copy of the kernel, scaled by that value, into the output,
    each stamp shifted by the stride; where stamps overlap they add. Every number drawn comes
    from ``torch.nn.functional.conv_transpose2d`` (via `transposed_convolution_stamps`); the
    text of each drawn number has the gid ``input:i,j``, ``kernel:i,j``, ``stamp<a><b>:i,j``
    or ``output:i,j``, so a test can read the figure back.
    """
    x, kernel = torch.tensor(TRANSPOSED_CONV_INPUT), torch.tensor(TRANSPOSED_CONV_KERNEL)
    stamps, output = transposed_convolution_stamps(x, kernel, stride=2)
    (h, w), side = x.shape, output.shape[0]
    colour = [[_STAMP_COLOURS[i * w + j] for j in range(w)] for i in range(h)]
    k, offsets = kernel.shape[0], torch.arange(side)

    def inside(i: int) -> torch.Tensor:  # the output rows (or columns) the stamps of input row (column) i cover
        return (offsets >= 2 * i) & (offsets < 2 * i + k)

    reach = [[inside(i)[:, None] & inside(j)[None] for j in range(w)] for i in range(h)]  # (side, side) masks

    fig, ax = plt.subplots(figsize=(7.8, 3.3))
    top = 7.6
    ax.text(0, top + 0.55, "input (2 × 2)", fontsize=10, va="bottom")
    _grid(ax, x, 0.0, top, 1.0, colour, 11, "input")
    ax.text(0, top - 3.25, "kernel (3 × 3)", fontsize=10, va="bottom")
    _grid(ax, kernel, 0.0, top - 3.35, 0.85, [["#eeeeee"] * 3] * 3, 10, "kernel")

    cell, x_st = 0.62, 4.3
    ax.text(x_st, top + 0.55, "each input value stamps a scaled kernel, shifted by stride 2", fontsize=10,
            va="bottom")
    for i in range(h):
        for j in range(w):
            x0, y0 = x_st + j * (side * cell + 1.0), top - 0.45 - i * (side * cell + 0.95)
            cols = [[colour[i][j] if reach[i][j][a, b] else None for b in range(side)] for a in range(side)]
            _grid(ax, stamps[i, j], x0, y0, cell, cols, 8.5, f"stamp{i}{j}")
            ax.text(x0 + side * cell / 2, y0 + 0.08, f"{x[i, j]:g} × kernel", ha="center", va="bottom",
                    fontsize=9)
    for y in (top - 0.45 - side * cell / 2, top - 0.45 - side * cell * 1.5 - 0.95):
        ax.text(x_st + side * cell + 0.5, y, "+", ha="center", va="center", fontsize=14)
    ax.text(x_st - 0.4, top - 0.45 - side * cell * 1.5 - 0.95, "+", ha="center", va="center", fontsize=14)

    x_out, out_cell = x_st + 2 * side * cell + 2.1, 0.95
    ax.text(x_out - 0.75, top - 0.45 - side * cell - 0.47, "=", ha="center", va="center", fontsize=16)
    n_cover = sum(r.int() for row in reach for r in row)
    out_colours = [[_mix([colour[i][j] for i in range(h) for j in range(w) if reach[i][j][a, b]])
                    for b in range(side)] for a in range(side)]
    y_out = top - 0.45 - side * cell - 0.47 + side * out_cell / 2
    ax.text(x_out, y_out + 0.1, "output (5 × 5): overlaps add", fontsize=10, va="bottom")
    _grid(ax, output, x_out, y_out, out_cell, out_colours, 11, "output", bold=n_cover > 1)
    ax.add_patch(plt.Rectangle((x_out + out_cell, y_out - side * out_cell), (side - 1) * out_cell,
                               (side - 1) * out_cell, fill=False, edgecolor="C3", linewidth=1.6, linestyle="--"))
    ax.text(x_out, y_out - side * out_cell - 0.15, "dashed: the 4 × 4 kept with padding=1,\noutput_padding=1",
            fontsize=9, va="top", color="C3")
    ax.set(xlim=(-0.1, x_out + side * out_cell + 0.1), ylim=(y_out - side * out_cell - 1.3, top + 1.1),
           aspect="equal")
    ax.set_axis_off()
    fig.tight_layout(pad=0.2)
    return save(fig, path)

"""Drawing primitives shared by every plot: image grids, rows of images, saving PNGs.

Each ``*_figure`` function of `vaebook.plots` returns a matplotlib ``Figure`` (so a
notebook shows it) and, given ``path``, writes it as a PNG with `save`. Randomness
comes only from a ``torch.Generator`` seeded by a ``seed`` argument, and PNGs are
written without time stamps, so the same models and seed give byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from ..data import to_float
from ..models import LatentModel

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "font.size": 9})


def save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Write ``fig`` as a PNG without metadata that changes between runs; returns ``fig``."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    return fig


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as floats in [0, 1]; floating-point images as float32."""
    return to_float(images) if images.dtype == torch.uint8 else images.float()


def grid_array(images: torch.Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """Images ``(N, C, H, W)`` (uint8, or floats in [0, 1]) tiled ``nrow`` per row as an ``(H, W, 3)`` array."""
    x = as_float(images).detach().cpu().clamp(0, 1)
    grid = make_grid(x, nrow=nrow, padding=padding, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()

def _show(ax: plt.Axes, images: torch.Tensor, nrow: int, title: str | None = None) -> None:
    ax.imshow(grid_array(images, nrow), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, loc="left")


def rows_figure(rows: Sequence[tuple[str, torch.Tensor]], scale: float = 0.6) -> Figure:
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


def smallest_text_px(fig: Figure, shown_width_px: float = 760) -> float:
    """The height in screen pixels of the smallest text in ``fig`` when its PNG is shown ``shown_width_px`` wide.

    The figure is drawn once and the font size of every text drawn (titles, labels,
    tick labels, legend entries, annotations; not hidden or empty ones) is recorded.
    The PNG that `save` writes is the figure's tight bounding box plus
    ``savefig.pad_inches``, at ``savefig.dpi``; a page shows it at ``shown_width_px``
    or at its own width if that is smaller (never enlarged). ``s`` points then appear
    ``s / 72 * shown / width_in`` pixels high. Returns ``inf`` for a figure without text.
    """
    renderer = fig.canvas.get_renderer()
    sizes: list[float] = []
    draw_text, draw_tex = renderer.draw_text, renderer.draw_tex

    def record(draw):
        def recording(gc, x, y, s, prop, angle, *args, **kwargs):
            if str(s).strip():
                sizes.append(prop.get_size_in_points())
            return draw(gc, x, y, s, prop, angle, *args, **kwargs)
        return recording

    renderer.draw_text, renderer.draw_tex = record(draw_text), record(draw_tex)
    try:
        fig.draw(renderer)
    finally:
        del renderer.draw_text, renderer.draw_tex  # back to the class's methods
    dpi = plt.rcParams["savefig.dpi"]
    dpi = fig.dpi if dpi == "figure" else float(dpi)
    width_in = fig.get_tightbbox(renderer).width + 2 * float(plt.rcParams["savefig.pad_inches"])
    shown_px = min(shown_width_px, width_in * dpi)
    return min(sizes, default=float("inf")) / 72 * shown_px / width_in


@torch.no_grad()
def decodes(model: LatentModel, z: torch.Tensor) -> torch.Tensor:
    """``model.decode(z)`` on the model's device, returned on the CPU in [0, 1]."""
    model.eval()
    return model.decode(z.to(model.device)).float().cpu().clamp(0, 1)

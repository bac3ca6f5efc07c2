"""Faces: attribute vectors at work, and VAE samples beside their nearest training faces."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from matplotlib.figure import Figure

from ..data import ImageDataset
from ..evaluate import FACE_ATTRIBUTES, attribute_vectors, embed_dataset, nearest_neighbours, prior_samples
from ..models import LatentModel, VAE
from .base import decodes, rows_figure, save


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
        rows.append((title, torch.cat([faces.float([i]), decodes(model, z + s * v)])))
    return save(rows_figure(rows, scale=0.9), path)

def nearest_neighbour_figure(model: VAE, train: ImageDataset, n: int = 10, seed: int = 0,
                             path: str | os.PathLike | None = None) -> Figure:
    """VAE samples above the training images closest to them in pixel space.

    If the model had memorised its training set, each pair would be the same face.
    """
    gen = torch.Generator().manual_seed(seed)
    samples = prior_samples(model, n, gen)
    _, index = nearest_neighbours(samples, train)
    rows = [("VAE samples, z ~ N(0, I)", samples), ("the nearest training image (pixel distance)", train.float(index))]
    return save(rows_figure(rows, scale=0.9), path)

"""Faces: attribute vectors at work, VAE samples beside their nearest training faces, and a fitted prior's samples."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from matplotlib.figure import Figure

from ..data import ImageDataset
from ..evaluate import FACE_ATTRIBUTES, attribute_vectors, embed_dataset, nearest_neighbours, prior_samples
from ..models import LatentModel, VAE
from ..priors import fit_gaussian_mixture, posterior_samples
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


def fitted_prior_figure(models: dict[str, VAE], data: ImageDataset, k: int = 10, n: int = 10, seed: int = 0,
                        path: str | os.PathLike | None = None) -> Figure:
    """For each VAE, ``n`` samples from its prior ``N(0, I)``, then ``n`` from a prior fitted after training:
    a mixture of ``k`` normals fitted by EM to one draw from ``q(z|x)`` for every image of ``data``
    (`vaebook.priors.posterior_samples`, `vaebook.priors.fit_gaussian_mixture`).

    Where the encoder left part of ``N(0, I)`` empty (a prior hole), the first row
    decodes codes the decoder never saw in training and the second does not.
    """
    rows = []
    for label, model in models.items():
        gen = torch.Generator().manual_seed(seed)
        mixture = fit_gaussian_mixture(posterior_samples(model, data, gen), k, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        rows.append((f"{label}: samples, z ~ N(0, I)", prior_samples(model, n, gen)))
        rows.append((f"{label}: samples, z ~ mixture of {len(mixture.weights)} normals fitted to the codes",
                     decodes(model, mixture.sample(n, gen))))
    return save(rows_figure(rows, scale=0.9), path)

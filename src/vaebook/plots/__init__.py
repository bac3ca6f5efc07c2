"""Every plot of the book, by subject; each ``*_figure`` returns a ``Figure`` and writes a PNG if given ``path``.

* `vaebook.plots.base`: image grids, rows of images, saving (byte-identical PNGs);
* `vaebook.plots.images`: reconstructions, samples, denoising, PCA, training curves, anomaly scores;
* `vaebook.plots.latents`: codes by class, random codes decoded, 2-D manifolds, interpolations, KL per dimension,
  the KL split into information and prior mismatch, latent traversals;
* `vaebook.plots.theory`: squared error against cross-entropy, the two KL directions, reshaping noise,
  gradient estimators, Monte Carlo estimates of log p(x);
* `vaebook.plots.diagrams`: the autoencoder and VAE diagrams, and a transposed convolution's stamps;
* `vaebook.plots.faces`: attribute vectors, nearest training faces, and samples of a prior fitted to the codes;
* `vaebook.plots.discrete`: the VQ-VAE's reconstructions at several codebook sizes, codebook usage, and
  samples of its code prior against uniformly drawn codes;
* `vaebook.plots.families`: the conditional VAE's class grids, the ladder VAE's levels, samples of several
  families side by side, a diffusion model on 2-D points.

Plots sit below training in the package: they import models, data, losses and
evaluation, never `train`, `experiments`, `build` or the command line. Which plot
draws which file of the book is the table in `vaebook.build`.
"""

from .base import grid_array, image_grid_figure, rows_figure, save
from .diagrams import (autoencoder_diagram_figure, transposed_convolution_figure, transposed_convolution_stamps,
                       vae_diagram_figure)
from .discrete import (code_bits, code_prior_samples_figure, codebook_reconstruction_figure,
                       codebook_usage_figure)
from .families import (attribute_flip_figure, class_grid_figure, diffusion_toy_figure, hierarchy_figure,
                       samples_side_by_side_figure, style_transfer_figure)
from .faces import attribute_figure, fitted_prior_figure, nearest_neighbour_figure
from .images import (anomaly_figure, beta_sweep_figure, denoising_figure, likelihood_width_figure,
                     pca_reconstruction_figure, pixel_sigma_figure, reconstruction_figure, samples_figure,
                     training_curves_figure)
from .latents import (information_split_figure, information_splits, interpolation_figure, kl_per_dimension_figure,
                      latent_scatter_figure, latent_traversal_figure, latent_traversals, manifold_figure,
                      random_latent_figure, traversal_comparison_figure)
from .theory import (gradient_variance_figure, inverse_transform_figure, kl_asymmetry_figure, naive_monte_carlo_figure,
                     penalty_figure)

__all__ = ["anomaly_figure", "code_bits", "code_prior_samples_figure", "codebook_reconstruction_figure",
           "codebook_usage_figure", "attribute_figure", "autoencoder_diagram_figure", "beta_sweep_figure", "denoising_figure",
           "attribute_flip_figure", "class_grid_figure", "diffusion_toy_figure", "hierarchy_figure", "samples_side_by_side_figure", "style_transfer_figure",
           "fitted_prior_figure",
           "gradient_variance_figure", "grid_array", "image_grid_figure", "information_split_figure",
           "information_splits", "interpolation_figure", "inverse_transform_figure", "kl_asymmetry_figure",
           "kl_per_dimension_figure", "latent_scatter_figure", "latent_traversal_figure", "latent_traversals",
           "likelihood_width_figure", "manifold_figure", "naive_monte_carlo_figure", "nearest_neighbour_figure",
           "pca_reconstruction_figure", "penalty_figure", "pixel_sigma_figure", "random_latent_figure", "reconstruction_figure",
           "rows_figure", "samples_figure", "save", "training_curves_figure", "transposed_convolution_figure",
           "transposed_convolution_stamps", "traversal_comparison_figure", "vae_diagram_figure"]

"""vaebook: autoencoders and variational autoencoders from first principles.

The package behind the vaebook online book. One module per concept:

* `vaebook.data`, `vaebook.face_data`: Fashion-MNIST, CelebA and Frey Face as uint8 tensors;
* `vaebook.models`: the convolutional/MLP/linear `Autoencoder` and `VAE`;
* `vaebook.losses`: log-likelihoods, the Gaussian KL and the ELBO;
* `vaebook.train`: the training loop, with checkpoints and resume;
* `vaebook.speed`, `vaebook.distributed`: what makes the loop fast, and several processes;
* `vaebook.conditional`, `vaebook.vq`, `vaebook.hierarchical`, `vaebook.diffusion`: the families beyond one
  Gaussian latent (`vaebook.models.FAMILIES`);
* `vaebook.evaluate`: losses and latent codes over a data set;
* `vaebook.quality`, `vaebook.atlas`: a classifier's Frechet distance, and the map of the families;
* `vaebook.checkpoints`: safetensors weights, the pretrained models and their manifest;
* `vaebook.plots`: every plot of the book, by subject;
* `vaebook.experiments`: the named experiments the book trains;
* `vaebook.build`: the table of every file the book shows, and the jobs that make them;
* `vaebook.cli`: ``python -m vaebook``, parsing and dispatch only.
"""

__version__ = "0.1.0"

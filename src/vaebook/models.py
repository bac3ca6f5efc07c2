"""Autoencoders and VAEs on one skeleton: an encoder body, latent heads and a decoder.

Both model kinds share the same pieces, so the book can swap one for the other and
show that the VAE differs only where it must:

* an encoder *body* maps an image ``x`` to a feature vector ``h``;
* the `Autoencoder` maps ``h`` to one latent point ``z`` with a linear layer;
  the `VAE` maps ``h`` to the mean ``mu`` and log-variance ``log sigma^2`` of a
  diagonal Gaussian ``q(z|x)`` with two linear heads, and samples ``z`` from it with
  `VAE.reparameterise`;
* a *decoder* maps ``z`` to the parameters of ``p(x|z)``: logits for a Bernoulli
  likelihood, the mean for a Gaussian one. `LatentModel.decode` turns them into an
  image (``sigmoid(logits)`` or the mean).

Architectures (`ModelConfig.arch`):

* ``"conv"``: stride-2 3x3 convolutions, one per entry of ``channels``, each halving
  the height and width (rounding up), mirrored by transposed convolutions whose
  output padding restores the exact input size. Any input size works: 28x28,
  28x20, 64x64, 218x178, ...
* ``"mlp"``: one hidden layer: Kingma & Welling's model as pytorch/examples'
  ``vae/main.py`` builds it (784-400-20, ReLU; the paper used 500 tanh units).
* ``"linear"``: no hidden layer and no non-linearity, the autoencoder that PCA solves.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from .losses import log_likelihood

Likelihood = Literal["bernoulli", "gaussian"]
DecoderSigma = Literal["fixed", "shared", "pixel"]
Kind = Literal["ae", "vae", "cvae", "vqvae", "hvae", "diffusion"]
# The families beyond one Gaussian latent live in modules of their own: kind -> (module, class).
FAMILIES = {"cvae": ("conditional", "ConditionalVAE"), "vqvae": ("vq", "VQVAE"),
            "hvae": ("hierarchical", "LadderVAE"), "diffusion": ("diffusion", "Diffusion")}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored as JSON beside its weights.

    Attributes:
        kind: ``"ae"`` (deterministic autoencoder) or ``"vae"``; or one of the families of
            `FAMILIES`: ``"cvae"`` (`vaebook.conditional`), ``"vqvae"`` (`vaebook.vq`),
            ``"hvae"`` (`vaebook.hierarchical`), ``"diffusion"`` (`vaebook.diffusion`).
        arch: ``"conv"``, ``"mlp"`` or ``"linear"`` (see the module docstring).
        in_shape: ``(C, H, W)`` of the images.
        latent_dim: size of ``z``.
        channels: conv only: output channels of each stride-2 stage, e.g.
            ``(16, 32, 64, 128, 256)`` for full-size 218x178 faces.
        hidden: mlp only: width of the hidden layer.
        likelihood: the decoder's distribution ``p(x|z)``: ``"bernoulli"`` (binary
            cross-entropy) or ``"gaussian"`` with fixed standard deviation ``sigma``.
        sigma: the Gaussian decoder's standard deviation (ignored for Bernoulli); with a
            learned ``decoder_sigma = "shared"``, its starting value.
        decoder_sigma: Gaussian only: ``"fixed"`` (``sigma`` as given), ``"shared"`` (one
            standard deviation for every value, learned with the weights, as in the
            sigma-VAE of Rybkin et al. 2021) or ``"pixel"`` (the decoder outputs a
            standard deviation for every value of every image, a function of ``z``).
        min_sigma: a floor under a learned standard deviation, added as variances:
            ``sigma^2 = min_sigma^2 + exp(raw)``. Without one, a per-pixel sigma can shrink
            towards 0 where the data leave no error (constant pixels) and the likelihood
            grows without bound (Mattei & Frellsen 2018).
        condition: cvae only: the names of the columns of ``y``: ``"class:NAME"`` for each class
            (``y`` is the one-hot class) or CelebA attribute names (0/1 each); see
            `vaebook.data.condition_vectors`.
        codebook_size: vqvae only: the number of code vectors ``K``.
        top_latent_dim: hvae only: the size of the upper latent ``z_2``.
        hierarchy: hvae only: ``"top-down"`` inference, ``q(z2|x) q(z1|x, z2)``, or ``"bottom-up"``,
            ``q(z1|x) q(z2|z1)`` (see `vaebook.hierarchical`).
        steps: diffusion only: the number of noising steps ``T``.
    """

    kind: Kind = "vae"
    arch: Literal["conv", "mlp", "linear"] = "conv"
    in_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 16
    channels: tuple[int, ...] = (32, 64)
    hidden: int = 400
    likelihood: Likelihood = "bernoulli"
    sigma: float = 1.0
    decoder_sigma: DecoderSigma = "fixed"
    min_sigma: float = 0.0
    condition: tuple[str, ...] = ()
    codebook_size: int = 0
    top_latent_dim: int = 0
    hierarchy: Literal["top-down", "bottom-up"] = "top-down"
    steps: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_shape", tuple(self.in_shape))
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "condition", tuple(self.condition))
        kinds = ("ae", "vae", *FAMILIES)
        checks = [
            (self.kind in kinds, f"kind must be one of {', '.join(map(repr, kinds))}, not {self.kind!r}"),
            ((self.kind == "cvae") == bool(self.condition), "a cvae needs a condition, and only a cvae has one"),
            ((self.kind == "vqvae") == (self.codebook_size > 0), "a vqvae needs codebook_size > 0, and only a vqvae has one"),
            ((self.kind == "hvae") == (self.top_latent_dim > 0), "an hvae needs top_latent_dim > 0, and only an hvae has one"),
            ((self.kind == "diffusion") == (self.steps > 0), "a diffusion model needs steps > 0, and only it has steps"),
            (self.hierarchy in ("top-down", "bottom-up"), f"hierarchy must be 'top-down' or 'bottom-up', not {self.hierarchy!r}"),
            (self.kind == "hvae" or self.hierarchy == "top-down", "only an hvae has a bottom-up hierarchy"),
            (self.arch in ("conv", "mlp", "linear"), f"arch must be 'conv', 'mlp' or 'linear', not {self.arch!r}"),
            (self.likelihood in ("bernoulli", "gaussian"), f"likelihood must be 'bernoulli' or 'gaussian', not {self.likelihood!r}"),
            (len(self.in_shape) == 3 and min(self.in_shape) > 0, f"in_shape must be (C, H, W), not {self.in_shape}"),
            (self.latent_dim > 0 and self.sigma > 0, "latent_dim and sigma must be positive"),
            (self.decoder_sigma in ("fixed", "shared", "pixel"),
             f"decoder_sigma must be 'fixed', 'shared' or 'pixel', not {self.decoder_sigma!r}"),
            (self.decoder_sigma == "fixed" or self.likelihood == "gaussian", "a learned sigma needs likelihood='gaussian'"),
            (self.min_sigma >= 0, "min_sigma must be 0 or positive"),
            (self.arch != "conv" or len(self.channels) > 0, "a conv model needs at least one channel stage"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**d)


def conv_sizes(height: int, width: int, stages: int) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2, padding-1, 3x3 convolution: ``ceil(n / 2)`` each time."""
    sizes = [(height, width)]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class ConvEncoder(nn.Sequential):
    """Stride-2 convolutions with ReLU, flattened: ``(N, C, H, W) -> (N, channels[-1] * h * w)``."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]) -> None:
        layers: list[nn.Module] = []
        for c_in, c_out in zip((in_channels,) + channels[:-1], channels):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        super().__init__(*layers, nn.Flatten())


class ConvDecoder(nn.Module):
    """The mirror of `ConvEncoder`: ``z -> (N, C, H, W)`` with exactly the input's size.

    A stride-2 transposed 3x3 convolution maps size ``n`` to ``2n - 1 + p``; the output
    padding ``p = 1 - target % 2`` (per dimension) undoes each ``ceil(target / 2)``.
    """

    def __init__(self, latent_dim: int, out_shape: tuple[int, int, int], channels: tuple[int, ...]) -> None:
        super().__init__()
        c, h, w = out_shape
        sizes = conv_sizes(h, w, len(channels))
        self.start = (channels[-1],) + sizes[-1]
        self.project = nn.Linear(latent_dim, channels[-1] * sizes[-1][0] * sizes[-1][1])
        layers: list[nn.Module] = [nn.ReLU()]
        outs = (channels[0],) + channels[:-1]  # stage i maps channels[i] -> channels[i-1] (stage 0 keeps channels[0])
        for i in reversed(range(len(channels))):
            th, tw = sizes[i]
            layers += [nn.ConvTranspose2d(channels[i], outs[i], 3, stride=2, padding=1,
                                          output_padding=(1 - th % 2, 1 - tw % 2)), nn.ReLU()]
        layers.append(nn.Conv2d(channels[0], c, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(-1, *self.start))


def _body_and_decoder(cfg: ModelConfig) -> tuple[nn.Module, int, nn.Module]:
    """The encoder body, its feature size, and the decoder for an architecture."""
    c, h, w = cfg.in_shape
    d = c * h * w
    out_shape = (2 * c if cfg.decoder_sigma == "pixel" else c, h, w)  # a per-pixel sigma doubles the channels
    d_out = out_shape[0] * h * w
    if cfg.arch == "conv":
        body = ConvEncoder(c, cfg.channels)
        hh, ww = conv_sizes(h, w, len(cfg.channels))[-1]
        return body, cfg.channels[-1] * hh * ww, ConvDecoder(cfg.latent_dim, out_shape, cfg.channels)
    if cfg.arch == "mlp":
        body = nn.Sequential(nn.Flatten(), nn.Linear(d, cfg.hidden), nn.ReLU())
        decoder = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, d_out),
                                nn.Unflatten(1, out_shape))
        return body, cfg.hidden, decoder
    return nn.Flatten(), d, nn.Sequential(nn.Linear(cfg.latent_dim, d_out), nn.Unflatten(1, out_shape))


class LatentModel(nn.Module):
    """What autoencoders and VAEs share: the body, the decoder and the likelihood."""

    config: ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.body, self.feature_dim, self.decoder = _body_and_decoder(config)
        if config.decoder_sigma == "shared":  # one learned log sigma, started at config.sigma
            self.log_sigma = nn.Parameter(torch.tensor(math.log(config.sigma)))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def device(self) -> torch.device:
        """Where the weights live: the device that inputs must be moved to."""
        return next(self.parameters()).device

    def decode_params(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameters of ``p(x|z)``: ``{"out": logits or Gaussian mean}``, and for a
        learned sigma also ``"x_logvar"``, the log-variance of each value (a scalar for a
        shared sigma, ``(N, C, H, W)`` for a per-pixel one). A fixed sigma stays in the config.
        """
        out = self.decoder(z)
        mode, floor = self.config.decoder_sigma, self.config.min_sigma
        if mode == "fixed":
            return {"out": out}
        raw = 2 * self.log_sigma if mode == "shared" else None
        if mode == "pixel":
            out, raw = out.chunk(2, dim=1)  # the first C channels are the mean, the last C the log-variance
        x_logvar = torch.logaddexp(raw, torch.tensor(2 * math.log(floor), device=raw.device)) if floor > 0 else raw
        return {"out": out, "x_logvar": x_logvar}

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(x|z)`` per image, with this model's likelihood and sigma (fixed or learned)."""
        params = self.decode_params(z)
        return log_likelihood(params["out"], x, self.config.likelihood, self.config.sigma, params.get("x_logvar"))

    def decoder_sigma(self) -> float | None:
        """The decoder's shared standard deviation (fixed or learned); None for Bernoulli or per-pixel sigmas."""
        if self.config.likelihood != "gaussian" or self.config.decoder_sigma == "pixel":
            return None
        if self.config.decoder_sigma == "fixed":
            return self.config.sigma
        return math.sqrt(math.exp(2 * float(self.log_sigma.detach())) + self.config.min_sigma ** 2)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The image a latent vector decodes to: the mean of ``p(x|z)``.

        Bernoulli: ``sigmoid(logits)``, the probability of each pixel being on, which
        for grey images in [0, 1] is their expected value. Gaussian: the mean itself.
        """
        return self.output_mean(self.decode_params(z)["out"])

    def output_mean(self, out: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x|z)`` from the decoder's raw output: ``sigmoid`` of logits, or the Gaussian mean."""
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """One latent point per image: ``z`` for an autoencoder, the posterior mean ``mu`` for a VAE."""
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(embed(x))``: the deterministic reconstruction used in figures."""
        return self.decode(self.embed(x))


class Autoencoder(LatentModel):
    """A deterministic autoencoder: ``z = f(x)``, ``x_hat = g(z)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.to_latent = nn.Linear(self.feature_dim, config.latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code ``z = f(x)``, shape ``(N, latent_dim)``."""
        return self.to_latent(self.body(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"out": decoder output (logits or mean), "z": code}`` (and ``"x_logvar"`` for a learned sigma)."""
        z = self.encode(x)
        return {**self.decode_params(z), "z": z}


class VAE(LatentModel):
    """A variational autoencoder with a diagonal Gaussian encoder and a standard normal prior.

    ``q(z|x) = N(mu(x), diag(exp(logvar(x))))``; ``p(z) = N(0, I)``. The log-variance
    head outputs ``log sigma^2`` (sigma is the standard deviation): any real number is a
    valid log-variance, so the head needs no positivity constraint.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.to_mu = nn.Linear(self.feature_dim, config.latent_dim)
        self.to_logvar = nn.Linear(self.feature_dim, config.latent_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters ``(mu, logvar)`` of ``q(z|x)``, each ``(N, latent_dim)``."""
        h = self.body(x)
        return self.to_mu(h), self.to_logvar(h)

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``z ~ N(mu, diag(exp(logvar)))`` as ``mu + sigma * eps`` with ``eps ~ N(0, I)``.

        The randomness is in ``eps`` alone, so ``z`` is a differentiable function of
        ``mu`` and ``logvar``: gradients of a loss on ``z`` flow back into the encoder.
        """
        if generator is None:
            eps = torch.randn_like(mu)  # shape-polymorphic: torch.compile traces it for any batch size
        else:
            # Draw on the generator's device (a seeded CPU generator gives the same numbers whether
            # the model is on the CPU or a GPU), then move the noise to mu's device.
            eps = torch.randn(mu.shape, generator=generator, device=generator.device, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"out": decoder output, "z": a sample from q(z|x), "mu": ..., "logvar": ...}``
        (and ``"x_logvar"`` for a learned sigma)."""
        mu, logvar = self.encode(x)
        z = self.reparameterise(mu, logvar)
        return {**self.decode_params(z), "z": z, "mu": mu, "logvar": logvar}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` new images: ``z ~ N(0, I)`` decoded to the mean of ``p(x|z)``."""
        z = torch.randn(n, self.latent_dim, generator=generator, device="cpu").to(self.device)
        return self.decode(z)


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    """The model a config describes, freshly initialised (a family's class from its own module)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if config.kind in FAMILIES:
        module, name = FAMILIES[config.kind]
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(config)
    return (VAE if config.kind == "vae" else Autoencoder)(config)


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


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["ModelConfig", "Autoencoder", "VAE", "LatentModel", "build_model", "conv_sizes", "count_parameters",
           "fit_latent_samplers",
           "ConvEncoder", "ConvDecoder"]

"""The VQ-VAE (van den Oord et al., 2017): a grid of discrete codes, and a PixelCNN prior over it.

The encoder maps an image to a grid of vectors ``z_e`` (``D`` numbers at each of
``h x w`` positions); each vector is replaced by the nearest of ``K`` learned code
vectors ``e_k`` (the codebook), and the decoder maps that grid of code vectors back to
the parameters of ``p(x|codes)``. Nearest-neighbour lookup has no useful gradient, so
the *straight-through estimator* passes the decoder's gradient to ``z_e`` unchanged:
``z_q = z_e + sg[e - z_e]`` (``sg`` stops gradients) equals ``e`` in the forward pass
and has Jacobian ``I`` in ``z_e``. The codebook then learns from its own loss
``||sg[z_e] - e||^2`` (codes move towards the encoder outputs that chose them), and
the commitment loss ``COMMITMENT * ||z_e - sg[e]||^2`` keeps the encoder's outputs
close to the codes they chose.

Where is the KL term? The posterior ``q(c|x)`` puts all its mass on the codes
``c(x)`` the encoder picks, so its entropy is 0 and
``KL(q(c|x) || p(c)) = -H(q) - E_q[log p(c)] = -log p(c(x))``: the negative
log-probability of the code grid under the prior. With the uniform prior of the
paper's training stage it is the constant ``h * w * log K`` (`VQVAE.uniform_kl`), so
the paper trains without it and fits an autoregressive prior afterwards. Here the
prior, a small PixelCNN (`CodePrior`), is trained jointly on the codes as indices:
its loss is the KL term itself, which reaches only the prior (indices carry no
gradient), so the encoder, decoder and codebook see exactly the paper's objective.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageDataset, to_float
from .losses import log_likelihood
from .models import ConvDecoder, ConvEncoder, ModelConfig, conv_sizes

COMMITMENT = 0.25  # beta of the paper: the weight of the commitment loss (its value there, too)


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only the positions up to the centre in raster order (PixelCNN).

    Mask ``"A"`` also hides the centre (the first layer: a position must not see its own
    code); mask ``"B"`` keeps it (later layers: the centre's features already exclude it).
    The mask is rebuilt from the shape, so it is not part of the state dict.
    """

    def __init__(self, mask: str, channels: int, kernel: int) -> None:
        super().__init__(channels, channels, kernel, padding=kernel // 2)
        m, c = torch.ones(kernel, kernel), kernel // 2
        m[c, c + (mask == "B"):] = 0  # the centre row: from the centre (A) or after it (B)
        m[c + 1:] = 0  # every row below
        self.register_buffer("mask", m, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class CodePrior(nn.Module):
    """A small PixelCNN over a grid of codes: ``p(c) = prod_i p(c_i | c_<i)`` in raster order.

    Codes are embedded (``K -> channels``), passed through a type-A masked 5x5
    convolution and ``layers`` residual type-B masked 3x3 convolutions, and mapped by
    1x1 convolutions to ``K`` logits per position. The last layer starts at zero, so a
    fresh prior is uniform (its KL term starts at ``h * w * log K``). Plain masked
    convolutions leave a blind spot, earlier codes above-right of a position that it never
    sees (the Gated PixelCNN removes it): a weaker model, but still a normalised
    distribution, as each factor is a softmax given only earlier codes.
    """

    def __init__(self, num_codes: int, channels: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_codes, channels)
        self.first = MaskedConv2d("A", channels, 5)
        self.blocks = nn.ModuleList(MaskedConv2d("B", channels, 3) for _ in range(layers))
        self.hidden = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, num_codes, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, h, w)`` of each position's code given the codes before it."""
        h = F.relu(self.first(self.embed(codes).permute(0, 3, 1, 2)))
        for block in self.blocks:
            h = h + F.relu(block(h))
        return self.out(F.relu(self.hidden(h)))

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """``log p(c)`` per grid ``(N,)``, in float32: the sum of the positions' log-probabilities."""
        logp = self(codes).float().log_softmax(1)
        return logp.gather(1, codes.unsqueeze(1)).flatten(1).sum(1)


class VQVAE(nn.Module):
    """A VQ-VAE with a jointly trained PixelCNN prior; kind ``"vqvae"``.

    What `ModelConfig` fields mean here: ``channels``: the stride-2 stages of the encoder
    (mirrored by the decoder; ``(32, 64)`` turns 28x28 into a 7x7 grid);
    ``latent_dim``: ``D``, the size of each code vector; ``codebook_size``: ``K``, the
    number of codes; ``likelihood``/``sigma``: ``p(x|codes)`` (Bernoulli logits, or a
    Gaussian with fixed sigma). ``arch`` must be ``"conv"``. The codebook starts uniform
    in ``[-1/K, 1/K]``, as in the paper's code. A code that no encoder output is nearest to
    gets no gradient, so nothing pulls it towards the data, and with a large ``K`` many
    codes can stay unused ("dead"): `codebook_usage` counts them.

    `forward` gives per image: ``recon = -log p(x|codes)``, ``kl = -log p_prior(codes)``
    (see the module docstring) and ``aux`` = codebook + ``COMMITMENT`` x commitment loss,
    each summed over the grid; training minimises ``recon + kl + aux``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "conv" or config.decoder_sigma != "fixed":
            raise ValueError("a vqvae is convolutional (arch='conv') with a fixed decoder sigma")
        self.config = config
        c, h, w = config.in_shape
        k, d, last = config.codebook_size, config.latent_dim, config.channels[-1]
        self.grid: tuple[int, int] = conv_sizes(h, w, len(config.channels))[-1]
        # ConvEncoder's convolutions without its Flatten, then a 1x1 convolution to D channels.
        self.encoder = nn.Sequential(*list(ConvEncoder(c, config.channels))[:-1], nn.Conv2d(last, d, 1))
        self.codebook = nn.Embedding(k, d)
        nn.init.uniform_(self.codebook.weight, -1.0 / k, 1.0 / k)
        # ConvDecoder's transposed convolutions, fed by a 1x1 convolution instead of its linear projection.
        self.decoder = nn.Sequential(nn.Conv2d(d, last, 1), *ConvDecoder(d, (c, h, w), config.channels).net)
        self.prior = CodePrior(k)

    @property
    def device(self) -> torch.device:
        """Where the weights live: the device that inputs must be moved to."""
        return self.codebook.weight.device

    @property
    def latent_dim(self) -> int:
        """``D``, the size of one code vector (there are ``h * w`` of them per image)."""
        return self.config.latent_dim

    def uniform_kl(self) -> float:
        """The KL term under a uniform prior: ``h * w * log K`` nats (what the codes cost unmodelled)."""
        return self.grid[0] * self.grid[1] * math.log(self.config.codebook_size)

    def quantise(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest code (squared Euclidean distance, in float32) at each position of ``z_e``
        ``(N, D, h, w)``: returns the codes ``(N, h, w)`` and their vectors ``e`` ``(N, D, h, w)``."""
        # No gradient flows through argmin; and no bf16 matmul under autocast, where near-ties matter.
        with torch.no_grad(), torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float().permute(0, 2, 3, 1)  # (N, h, w, D)
            w = self.codebook.weight.float()
            dist = z.pow(2).sum(-1, keepdim=True) - 2 * z @ w.T + w.pow(2).sum(1)  # ||z - e_k||^2
            codes = dist.argmin(-1)
        return codes, self.codebook(codes).permute(0, 3, 1, 2)

    @staticmethod
    def vq_losses(z_e: torch.Tensor, e: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image, summed over the grid: ``codebook = ||sg[z_e] - e||^2`` (moves only the codes)
        and ``commitment = ||z_e - sg[e]||^2`` (moves only the encoder)."""
        z_e, e = z_e.float(), e.float()
        return {"codebook": (z_e.detach() - e).pow(2).flatten(1).sum(1),
                "commitment": (z_e - e.detach()).pow(2).flatten(1).sum(1)}

    def _terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z_e = self.encoder(x)
        codes, e = self.quantise(z_e)
        z_q = z_e + (e - z_e).detach()  # straight through: e forwards, the identity backwards
        out = self.decoder(z_q)
        recon = -log_likelihood(out.float(), x.float(), self.config.likelihood, self.config.sigma)
        losses = self.vq_losses(z_e, e)
        return {"recon": recon, "kl": -self.prior.log_prob(codes),
                "aux": losses["codebook"] + COMMITMENT * losses["commitment"]}

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image ``recon``, ``kl`` and ``aux`` (see the class docstring); ``y`` is ignored."""
        return self._terms(x)

    def score_terms(self, x: torch.Tensor, y: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The negative-ELBO terms ``recon`` and ``kl``: deterministic, so ``generator`` is unused."""
        terms = self._terms(x)
        return {"recon": terms["recon"], "kl": terms["kl"]}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code grid ``(N, h, w)`` (long) of each image."""
        return self.quantise(self.encoder(x))[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of ``p(x|z)`` for a grid of vectors ``z`` ``(N, D, h, w)`` (code vectors, or any
        others: the decoder takes what it is given); a ``(N, D)`` ``z`` is one vector at every position."""
        if z.dim() == 2:
            z = z[:, :, None, None].expand(-1, -1, *self.grid)
        out = self.decoder(z)
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The images ``(N, C, H, W)`` a grid of codes ``(N, h, w)`` decodes to: the mean of ``p(x|codes)``."""
        return self.decode(self.codebook(codes).permute(0, 3, 1, 2))

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``decode_codes(encode(x))``: deterministic, as the codes are."""
        return self.decode_codes(self.encode(x))

    def prior_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """``log p(c)`` of code grids ``(N, h, w)`` under the learned prior, per grid ``(N,)``."""
        return self.prior.log_prob(codes.to(self.device))

    @torch.no_grad()
    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` code grids drawn from the prior, one position at a time in raster order
        (``h * w`` passes; each draw on the CPU from ``generator``)."""
        codes = torch.zeros(n, *self.grid, dtype=torch.long, device=self.device)
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                probs = self.prior(codes)[:, :, i, j].float().softmax(1).cpu()
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(self.device)
        return codes

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` new images: codes from the PixelCNN prior (`sample_codes`), decoded."""
        return self.decode_codes(self.sample_codes(n, generator))

    @torch.no_grad()
    def sample_uniform(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images from codes drawn uniformly and independently: what the decoder makes of
        grids the encoder never produces (the reason a VQ-VAE needs a learned prior)."""
        codes = torch.randint(self.config.codebook_size, (n, *self.grid), generator=generator)
        return self.decode_codes(codes.to(self.device))


@torch.no_grad()
def codebook_usage(model: VQVAE, data: ImageDataset | torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """How a data set (uint8 images) uses the codebook: which codes its images' grids contain, and how evenly.

    Returns ``counts`` (an int64 ``(K,)`` tensor: positions assigned to each code over all
    images), ``used`` (codes assigned at least once), ``dead`` (``K - used``) and
    ``perplexity``: ``exp`` of the entropy of the usage frequencies, the number of equally
    used codes that would have the same entropy (``K`` at best, 1 if one code does everything).
    """
    images = data.images if isinstance(data, ImageDataset) else data
    if images.dtype != torch.uint8:
        raise ValueError(f"codebook_usage reads uint8 images (0..255) or an ImageDataset, not {images.dtype}")
    model.eval()
    k = model.config.codebook_size
    counts = torch.zeros(k, dtype=torch.long)
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size].to(model.device))
        counts += torch.bincount(model.encode(x).flatten().cpu(), minlength=k)
    p = counts.double() / counts.sum()
    entropy = -float(torch.xlogy(p, p).sum())
    used = int((counts > 0).sum())
    return {"counts": counts, "used": used, "dead": k - used, "perplexity": math.exp(entropy)}


__all__ = ["COMMITMENT", "VQVAE", "CodePrior", "MaskedConv2d", "codebook_usage"]

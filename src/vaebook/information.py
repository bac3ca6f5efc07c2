"""Information measures of a latent code: how much a code says about its input.

* `latent_information` splits a VAE's average KL term into the mutual information
  between an image and its code and the KL from the aggregate posterior to the prior
  (Hoffman and Johnson's "ELBO surgery").
* `normalized_mutual_information` compares two partitions of the same points, such as
  k-means clusters of the codes against the true labels.

Both work on the empirical distribution of a finite set of images, so neither can report
more than ``log N`` nats of information about which of the N images was drawn.
"""

from __future__ import annotations

import math

import torch

from .losses import gaussian_kl, normal_log_density


@torch.no_grad()
def latent_information(mu: torch.Tensor, logvar: torch.Tensor, samples: int = 1, seed: int = 0,
                       chunk_elements: int = 2**22) -> dict[str, float]:
    """Split the mean KL of N diagonal-Gaussian posteriors into information and prior mismatch.

    ``mu`` and ``logvar`` (N, d) are the encoder's outputs for N images. With the images
    drawn uniformly (each with probability 1/N) and ``q(z) = (1/N) sum_n q(z|x_n)`` the
    aggregate posterior,

        E_x[KL(q(z|x) || p(z))] = I_q(x; z) + KL(q(z) || p(z)),

    where ``I_q(x; z) = E_x E_{z ~ q(z|x)}[log q(z|x) - log q(z)]``. ``E_x[KL]`` is exact
    (closed form); ``I_q`` is a Monte Carlo average over ``samples`` draws of ``z`` per image
    (from a CPU generator seeded with ``seed``), with ``log q(z)`` computed exactly for each
    draw: a logsumexp over all N posteriors, in float64, a block of draws at a time (at
    most ``chunk_elements`` numbers per block). Since ``log q(z) >= log q(z|x_n) - log N``,
    every term, and so the estimate, is at most ``log N``.

    Returns nats: ``mutual_information``, ``kl`` (the mean KL), ``marginal_kl``
    (``kl - mutual_information``, the estimate of ``KL(q(z) || p(z))``) and ``log_n``.
    """
    mu, logvar = mu.detach().double().cpu(), logvar.detach().double().cpu()
    n, d = mu.shape
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(samples, n, d, generator=gen, dtype=torch.float64)
    z = (mu + (0.5 * logvar).exp() * eps).reshape(samples * n, d)
    own = torch.arange(n).repeat(samples)                   # the image each draw came from
    # log q(z | x_m) = -(sum_j (z_j - mu_mj)^2 / v_mj + log v_mj + log 2 pi) / 2, expanded so that the
    # terms in z are two matrix products against all N posteriors at once:
    # sum_j z_j^2 / v_mj - 2 z_j mu_mj / v_mj + (mu_mj^2 / v_mj + log v_mj + log 2 pi)
    precision = (-logvar).exp()                                  # 1 / v, (N, d)
    constant = (mu.pow(2) * precision + logvar).sum(1) + d * math.log(2 * math.pi)
    rows = max(1, chunk_elements // n)
    total = 0.0
    for i in range(0, len(z), rows):
        zi, oi = z[i:i + rows], own[i:i + rows]
        log_q_own = normal_log_density(zi, mu[oi], logvar[oi]).sum(1)
        log_q_all = -0.5 * (zi.pow(2) @ precision.T - 2 * zi @ (mu * precision).T + constant)  # (rows, N)
        log_q_aggregate = torch.logsumexp(log_q_all, dim=1) - math.log(n)
        total += float((log_q_own - log_q_aggregate).sum())
    mi = total / len(z)
    kl = float(gaussian_kl(mu, logvar).mean())
    return {"mutual_information": mi, "kl": kl, "marginal_kl": kl - mi, "log_n": math.log(n)}


def normalized_mutual_information(clusters: torch.Tensor, labels: torch.Tensor) -> float:
    """``I(C; Y) / sqrt(H(C) H(Y))`` between cluster assignments and true labels (1 = identical partitions)."""
    table = torch.zeros(int(clusters.max()) + 1, int(labels.max()) + 1, dtype=torch.float64)
    table.index_put_((clusters, labels), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    p = table / table.sum()
    pc, py = p.sum(1, keepdim=True), p.sum(0, keepdim=True)
    nz = p > 0
    mi = (p[nz] * (p[nz] / (pc @ py)[nz]).log()).sum()
    h = lambda q: -(q[q > 0] * q[q > 0].log()).sum()  # noqa: E731
    return float(mi / (h(pc) * h(py)).sqrt())

"""Probabilistic PCA: a latent-variable model whose likelihood, posterior and ELBO are exact.

The model (Tipping & Bishop, 1999) is a VAE with a linear decoder and no neural network:

    p(z) = N(0, I_k),    p(x | z) = N(W z + b, sigma^2 I_D).

Everything a VAE can only estimate has a closed form here:

* the marginal likelihood ``p(x) = N(b, C)`` with ``C = W W^T + sigma^2 I_D``;
* the true posterior ``p(z | x) = N(M^{-1} W^T (x - b), sigma^2 M^{-1})`` with
  ``M = W^T W + sigma^2 I_k``;
* for any Gaussian ``q(z) = N(m, S)``, the ELBO
  ``log N(x; W m + b, sigma^2 I) - tr(W^T W S) / (2 sigma^2) - KL(q || p(z))``,
  and the gap ``log p(x) - ELBO = KL(q || p(z | x))``.

So the book's claims about the ELBO and the IWAE bound can be checked to numerical
precision (``tests/test_ppca.py``), and `PPCA.as_vae` turns the model into a
`vaebook.models.VAE` with a linear encoder and decoder, so the package's own
Monte Carlo code is checked against the exact values too. All computations run in
float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .evaluate import pca
from .losses import LOG_2PI, normal_log_density
from .models import VAE, ModelConfig, build_model



def gaussian_kl_full(m0: torch.Tensor, s0: torch.Tensor, m1: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """``KL(N(m0, S0) || N(m1, S1))`` for full covariance matrices, batched over leading dimensions.

    ``(tr(S1^{-1} S0) + (m1 - m0)^T S1^{-1} (m1 - m0) - k + log det S1 - log det S0) / 2``.
    """
    k = m0.shape[-1]
    l1 = torch.linalg.cholesky(s1)
    s1_inv_s0 = torch.cholesky_solve(s0, l1)
    diff = (m1 - m0).unsqueeze(-1)
    maha = (diff * torch.cholesky_solve(diff, l1)).sum((-2, -1))
    logdet1 = 2 * torch.log(torch.diagonal(l1, dim1=-2, dim2=-1)).sum(-1)
    logdet0 = torch.linalg.slogdet(s0)[1]
    return 0.5 * (torch.diagonal(s1_inv_s0, dim1=-2, dim2=-1).sum(-1) + maha - k + logdet1 - logdet0)


@dataclass
class PPCA:
    """``p(z) = N(0, I_k)``, ``p(x|z) = N(W z + b, sigma^2 I_D)``; ``x`` is a batch ``(N, D)``.

    Attributes:
        weight: ``W``, shape ``(D, k)``.
        bias: ``b``, shape ``(D,)``.
        sigma: the noise standard deviation.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    sigma: float

    def __post_init__(self) -> None:
        self.weight, self.bias = self.weight.double(), self.bias.double()
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")

    @property
    def dims(self) -> tuple[int, int]:
        """``(D, k)``: data and latent dimensions."""
        d, k = self.weight.shape
        return d, k

    @classmethod
    def random(cls, d: int, k: int, sigma: float, generator: torch.Generator | None = None,
               orthogonal: bool = False) -> "PPCA":
        """A random model; with ``orthogonal``, ``W`` has orthogonal columns, so the posterior is diagonal."""
        w = torch.randn(d, k, generator=generator, dtype=torch.float64)
        if orthogonal:
            q, _ = torch.linalg.qr(w)
            w = q * (0.5 + torch.rand(k, generator=generator, dtype=torch.float64) * 2)
        return cls(w, torch.randn(d, generator=generator, dtype=torch.float64), sigma)

    @classmethod
    def fit(cls, x: torch.Tensor, k: int) -> "PPCA":
        """The maximum-likelihood model of data ``x`` ``(N, D)`` (Tipping & Bishop, 1999).

        ``b`` is the data mean; with ``lambda_1 >= ... >= lambda_D`` the eigenvalues of the
        data covariance (divided by ``N``) and ``U_k`` the top-``k`` eigenvectors,
        ``sigma^2`` is the mean of the ``D - k`` discarded eigenvalues and
        ``W = U_k (Lambda_k - sigma^2 I)^{1/2}``: PCA's subspace, with the variance
        PCA throws away explained as isotropic noise.
        """
        x = x.double().flatten(1)
        d = x.shape[1]
        if not 0 < k < d:
            raise ValueError(f"k must be between 1 and D - 1 = {d - 1}, got {k}")
        mean, components, variances = pca(x, d)  # all D, by decreasing variance
        evals = (variances * (len(x) - 1) / len(x)).clamp_min(0)  # the maximum-likelihood covariance divides by N
        sigma2 = float(evals[k:].mean())
        w = components[:k].T * (evals[:k] - sigma2).clamp_min(0).sqrt()
        return cls(w, mean, math.sqrt(sigma2))

    def marginal_covariance(self) -> torch.Tensor:
        """``C = W W^T + sigma^2 I_D``."""
        d, _ = self.dims
        return self.weight @ self.weight.T + self.sigma ** 2 * torch.eye(d, dtype=torch.float64)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """The exact ``log p(x)`` per row, computed in ``O(D k^2)`` through ``M`` (Woodbury), not ``C``.

        ``C^{-1} = (I - W M^{-1} W^T) / sigma^2`` and ``log det C = (D - k) log sigma^2 + log det M``.
        """
        d, k = self.dims
        s2 = self.sigma ** 2
        r = x.double().flatten(1) - self.bias
        lm = torch.linalg.cholesky(self._m())
        wr = r @ self.weight  # (N, k)
        quad = (r.pow(2).sum(1) - (wr * torch.cholesky_solve(wr.T, lm).T).sum(1)) / s2
        logdet = (d - k) * math.log(s2) + 2 * torch.log(torch.diagonal(lm)).sum()
        return -0.5 * (d * LOG_2PI + logdet + quad)

    def _m(self) -> torch.Tensor:
        _, k = self.dims
        return self.weight.T @ self.weight + self.sigma ** 2 * torch.eye(k, dtype=torch.float64)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The true posterior ``p(z|x) = N(mean, cov)``: ``mean`` ``(N, k)``, ``cov`` ``(k, k)`` (the same for every x)."""
        m_inv = torch.linalg.inv(self._m())
        mean = (x.double().flatten(1) - self.bias) @ self.weight @ m_inv.T
        return mean, self.sigma ** 2 * m_inv

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x|z) + log p(z)`` per row."""
        z = z.double()
        log_px_z = normal_log_density(x.double().flatten(1), z @ self.weight.T + self.bias, 2 * math.log(self.sigma))
        return log_px_z.sum(1) + normal_log_density(z).sum(1)

    def elbo(self, x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        """The exact ELBO of ``q(z|x) = N(mean, cov)`` per row (``cov``: ``(k, k)`` or ``(N, k, k)``).

        ``E_q[log p(x|z)] = log N(x; W m + b, sigma^2 I) - tr(W^T W S) / (2 sigma^2)``, minus
        ``KL(q || N(0, I))``.
        """
        _, k = self.dims
        mean, cov = mean.double(), cov.double()
        s2 = self.sigma ** 2
        log_px_m = normal_log_density(x.double().flatten(1), mean @ self.weight.T + self.bias, math.log(s2)).sum(1)
        wtw = self.weight.T @ self.weight
        trace = (wtw * cov).sum((-2, -1))  # tr(W^T W S) for symmetric S
        expected_ll = log_px_m - trace / (2 * s2)
        cov_b = cov.expand(len(mean), k, k)
        eye = torch.eye(k, dtype=torch.float64).expand_as(cov_b)
        kl = gaussian_kl_full(mean, cov_b, torch.zeros_like(mean), eye)
        return expected_ll - kl

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of ``x`` from the model, ``(n, D)``."""
        d, k = self.dims
        z = torch.randn(n, k, generator=generator, dtype=torch.float64)
        eps = torch.randn(n, d, generator=generator, dtype=torch.float64)
        return z @ self.weight.T + self.bias + self.sigma * eps

    def as_vae(self, in_shape: tuple[int, int, int] | None = None) -> VAE:
        """This model as a float64 `VAE` (``arch="linear"``, Gaussian decoder) with the best diagonal encoder.

        The decoder is ``W z + b``. The encoder's mean is the true posterior mean (linear
        in ``x``); its variance is constant, ``sigma^2 / M_jj``: the diagonal Gaussian
        closest to the posterior in ``KL(q || p(z|x))``. When ``W`` has orthogonal columns,
        ``M`` is diagonal and the encoder *is* the true posterior.
        """
        d, k = self.dims
        shape = in_shape or (1, 1, d)
        vae = build_model(ModelConfig(kind="vae", arch="linear", in_shape=shape, latent_dim=k,
                                      likelihood="gaussian", sigma=self.sigma)).double()
        m = self._m()
        a = torch.linalg.solve(m, self.weight.T)  # M^{-1} W^T, (k, D)
        with torch.no_grad():
            vae.to_mu.weight.copy_(a)
            vae.to_mu.bias.copy_(-a @ self.bias)
            vae.to_logvar.weight.zero_()
            vae.to_logvar.bias.copy_(torch.log(self.sigma ** 2 / torch.diagonal(m)))
            vae.decoder[0].weight.copy_(self.weight)
            vae.decoder[0].bias.copy_(self.bias)
        assert isinstance(vae, VAE)
        return vae.eval()

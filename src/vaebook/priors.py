"""Priors fitted after training (ex-post): a Gaussian mixture fitted to latent codes by EM.

An autoencoder has no prior, and a VAE's prior N(0, I) can miss where its encoder
put the codes (a *prior hole*). Either way one can fit a flexible density to codes of
training images after training and sample from it instead (Ghosh et al. 2020; the
second stage of Dai & Wipf's two-stage VAE learns one). Here: `fit_gaussian_mixture`
(EM in float64 from a `vaebook.evaluate.kmeans` start, deterministic given its seed);
`nearest_code_score`, where samples land against real codes (the distance test of the
generating chapter); `posterior_samples`, the codes to fit a VAE's prior to;
`elbo_with_prior`, a VAE's ELBO with another prior in place of N(0, I), a lower bound
on log p(x) of the model with that prior; `fitted_prior_numbers`, the faces chapter's
numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from .data import ImageDataset
from .evaluate import _inputs, embed_dataset, full_float32, kmeans
from .losses import normal_log_density
from .models import VAE


@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of ``K`` normals in ``d`` dimensions, in float64.

    Attributes:
        weights: ``(K,)`` mixing probabilities, summing to 1.
        means: ``(K, d)``.
        covariances: ``(K, d, d)`` (diagonal matrices for ``covariance="diagonal"``).
        log_likelihood: the average log-likelihood per code after the k-means start
            and after each EM iteration (the last is these parameters').
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    log_likelihood: tuple[float, ...] = ()

    def component_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, K)``: ``log w_k + log N(z; mean_k, cov_k)`` for every code and component.

        Each normal is whitened with its Cholesky factor ``L`` (``cov = L L^T``): then
        ``log N(z; m, cov) = sum_j log N(u_j; 0, 1) - log det L`` with ``u = L^{-1}(z - m)``,
        so the package's one Gaussian density (`vaebook.losses.normal_log_density`) does the work.
        """
        z, chol = z.double(), torch.linalg.cholesky(self.covariances)                # chol: (K, d, d)
        u = torch.linalg.solve_triangular(chol, (z - self.means[:, None]).mT, upper=False)  # (K, d, N)
        log_det = chol.diagonal(dim1=1, dim2=2).log().sum(1)
        return self.weights.log() + (normal_log_density(u).sum(1) - log_det[:, None]).T

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` of each row of ``z`` ``(N, d)``, in float64."""
        return torch.logsumexp(self.component_log_probs(z), 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes ``(n, d)`` as float32 (what a decoder takes): a component by its weight, then its normal."""
        pick = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covariances)[pick]
        return (self.means[pick] + torch.einsum("nij,nj->ni", chol, eps)).float()


def _m_step(z: torch.Tensor, resp: torch.Tensor, ridge: float, covariance: str) -> tuple[torch.Tensor, ...]:
    """Weights, means and covariances that maximise the expected log-likelihood under responsibilities ``resp``."""
    counts = resp.sum(0)
    resp = torch.where(counts > 1e-12, resp, torch.ones_like(resp))  # an empty component: the data's moments
    means = resp.T @ z / resp.sum(0)[:, None]
    diff = z - means[:, None]                                                         # (K, N, d)
    covs = (diff * resp.T[:, :, None]).mT @ diff / resp.sum(0)[:, None, None]
    if covariance == "diagonal":
        covs = torch.diag_embed(covs.diagonal(dim1=1, dim2=2))
    return (counts / len(z)).clamp_min(1e-300), means, covs + ridge * torch.eye(z.shape[1], dtype=z.dtype)


def _kmeans_labels(z: torch.Tensor, k: int, seed: int, restarts: int) -> torch.Tensor:
    """The best of ``restarts`` runs of `vaebook.evaluate.kmeans` (seeds ``seed``, ``seed + 1``, ...): the
    labels with the smallest sum of squared distances to their cluster means. One run can put two centres
    in one cluster and one between two clusters, a local optimum that EM rarely leaves."""
    best, best_cost = torch.zeros(len(z), dtype=torch.long), math.inf
    for r in range(restarts if k > 1 else 0):
        labels = kmeans(z, k, seed=seed + r, iterations=25)  # a start for EM need not be polished
        one_hot = torch.nn.functional.one_hot(labels, k).double()
        centres = one_hot.T @ z / one_hot.sum(0).clamp_min(1)[:, None]
        cost = float((z - centres[labels]).pow(2).sum())
        if cost < best_cost:
            best, best_cost = labels, cost
    return best


def fit_gaussian_mixture(codes: torch.Tensor, k: int, iterations: int = 100, tol: float = 1e-3,
                         ridge: float = 1e-6, covariance: Literal["full", "diagonal"] = "full",
                         seed: int = 0, restarts: int = 3) -> GaussianMixture:
    """A mixture of ``k`` normals fitted to ``codes`` ``(N, d)`` by the EM algorithm, in float64.

    Start: hard clusters from `vaebook.evaluate.kmeans` (k-means++, the best of
    ``restarts`` runs from seeds ``seed``, ``seed + 1``, ...), then
    alternate the E-step (each code's responsibilities, ``r_ik ∝ w_k N(z_i; m_k, S_k)``)
    and the M-step (weights, means and covariances as responsibility-weighted
    averages), until the average log-likelihood rises by less than ``tol`` nats or
    after ``iterations``. ``ridge`` is added to every covariance's diagonal, so a
    component on a few codes, or on codes that fill fewer than ``d`` dimensions, keeps
    an invertible covariance. With ``ridge = 0`` this is plain EM, and the average
    log-likelihood it records never decreases (EM's invariant); a small ridge nudges
    the M-step off the exact maximum. Deterministic given ``seed``.
    """
    if covariance not in ("full", "diagonal"):
        raise ValueError(f"covariance must be 'full' or 'diagonal', not {covariance!r}")
    z = codes.double()
    k = min(k, len(z))
    resp = torch.nn.functional.one_hot(_kmeans_labels(z, k, seed, restarts), k).double()
    mixture = GaussianMixture(*_m_step(z, resp, ridge, covariance))
    history: list[float] = []
    for _ in range(iterations):
        logp = mixture.component_log_probs(z)                       # E-step
        total = torch.logsumexp(logp, 1)
        history.append(float(total.mean()))
        if len(history) > 1 and history[-1] - history[-2] < tol:
            break
        mixture = GaussianMixture(*_m_step(z, (logp - total[:, None]).exp(), ridge, covariance))  # M-step
    else:
        history.append(float(mixture.log_prob(z).mean()))
    return GaussianMixture(mixture.weights, mixture.means, mixture.covariances, tuple(history))


def nearest_code_distances(points: torch.Tensor, reference: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """The Euclidean distance from each row of ``points`` to the nearest row of ``reference``."""
    ref = reference.float()
    return torch.cat([torch.cdist(points[i:i + chunk].float(), ref).min(1).values
                      for i in range(0, len(points), chunk)])


class NearestCodeScore(NamedTuple):
    """Where samples land: ``median`` distance to the nearest reference code, that median as a multiple of
    the held-out codes' (``ratio``), and the share of samples farther than 99% of held-out codes (``far``)."""

    median: float
    ratio: float
    far: float


def nearest_code_score(samples: torch.Tensor, reference: torch.Tensor, held_out: torch.Tensor,
                       quantile: float = 0.99) -> NearestCodeScore:
    """Score samples of codes against the codes of real images.

    ``reference`` are codes of training images, ``held_out`` codes of images the model
    never saw. A sampler that put its samples where real codes lie would score
    ``ratio`` ≈ 1 and ``far`` ≈ ``1 - quantile`` (what the held-out codes themselves
    score). It measures only where samples land: copies of training codes score best.
    """
    typical = nearest_code_distances(held_out, reference)
    d = nearest_code_distances(samples, reference)
    limit = typical.quantile(quantile)
    return NearestCodeScore(float(d.median()), float(d.median() / typical.median()), float((d > limit).float().mean()))


@full_float32()
@torch.no_grad()
def elbo_with_prior(model: VAE, x: torch.Tensor, prior: GaussianMixture | None = None, samples: int = 1,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Monte Carlo ELBO per image, ``E_q[log p(x|z) + log p(z) - log q(z|x)]``, with ``prior`` as ``p(z)``.

    ``prior=None`` is the model's own ``N(0, I)``. Averages ``samples`` draws ``z ~ q(z|x)``
    (one batch through the decoder). For any prior it is a lower bound on ``log p(x)`` of
    the model with that prior and the same decoder. Returns float64 tensors per image:
    ``elbo``, ``recon`` (``E_q[log p(x|z)]``) and ``kl`` (``E_q[log q(z|x) - log p(z)]``).
    """
    model.eval()
    x, n = _inputs(model, x), len(x)
    mu, logvar = model.encode(x)
    mu, logvar = mu.repeat(samples, 1), logvar.repeat(samples, 1)  # (samples * n, d), sample-major
    z = model.reparameterise(mu, logvar, generator=generator)
    log_q = normal_log_density(z, mu, logvar).sum(1).double().cpu()
    log_p = normal_log_density(z).sum(1).double().cpu() if prior is None else prior.log_prob(z.cpu())
    recon = model.log_likelihood(z, x.repeat(samples, *([1] * (x.dim() - 1)))).double().cpu()
    recon, kl = recon.view(samples, n).mean(0), (log_q - log_p).view(samples, n).mean(0)
    return {"elbo": recon - kl, "recon": recon, "kl": kl}


@full_float32()
@torch.no_grad()
def posterior_samples(model: VAE, data: ImageDataset | torch.Tensor, generator: torch.Generator | None = None,
                      batch_size: int = 1000) -> torch.Tensor:
    """One draw ``z ~ q(z|x)`` for every image, on the CPU: a sample of the aggregate posterior ``q(z)``.

    The codes to fit an ex-post prior to. Posterior means alone miss the spread of
    each ``q(z|x)``, which matters where the means are packed into thin directions.
    """
    model.eval()
    images, out = (data.images if isinstance(data, ImageDataset) else data), []
    for i in range(0, len(images), batch_size):
        mu, logvar = model.encode(_inputs(model, images[i:i + batch_size]))
        out.append(model.reparameterise(mu.cpu(), logvar.cpu(), generator=generator).float())
    return torch.cat(out)


def fitted_prior_numbers(model: VAE, train: ImageDataset, test: ImageDataset, k: int = 10, n: int = 1000,
                         samples: int = 4, seed: int = 0) -> dict[str, Any]:
    """The faces chapter's numbers for priors fitted to a VAE's training codes after training.

    Three priors besides the model's own ``N(0, I)`` (``"prior"``): ``"mixture"``, ``k``
    normals fitted by `fit_gaussian_mixture` to one draw from each training image's
    ``q(z|x)`` (`posterior_samples`); ``"normal"``, one normal fitted the same way; and
    ``"mixture_of_means"``, ``k`` normals fitted to the posterior means instead. For
    each: `nearest_code_score` of ``n`` samples against the training posterior means,
    with the test posterior means as the held-out yardstick (``"test_codes"``); and on
    the first ``n`` test images the ELBO with that prior (`elbo_with_prior`,
    ``samples`` draws of z, the same draws for every prior), in nats per image.
    """
    gen = torch.Generator().manual_seed(seed)
    train_codes, test_codes = embed_dataset(model, train), embed_dataset(model, test)
    drawn = posterior_samples(model, train, gen)
    start = time.perf_counter()
    mixture = fit_gaussian_mixture(drawn, k, seed=seed)
    seconds = time.perf_counter() - start
    priors: dict[str, GaussianMixture | None] = {
        "prior": None, "mixture": mixture, "normal": fit_gaussian_mixture(drawn, 1, seed=seed),
        "mixture_of_means": fit_gaussian_mixture(train_codes, k, seed=seed)}
    held_out = test_codes[:n]
    out: dict[str, Any] = {"k": len(mixture.weights), "n_train": len(train), "n_test": len(test),
                           "n": len(held_out), "samples": samples, "seed": seed,
                           "iterations": len(mixture.log_likelihood) - 1, "fit_seconds": round(seconds, 1),
                           "test_codes": nearest_code_score(held_out, train_codes, held_out)._asdict()}
    for name, prior in priors.items():
        z = torch.randn(n, model.latent_dim, generator=gen) if prior is None else prior.sample(n, gen)
        out[name] = {"score": nearest_code_score(z, train_codes, held_out)._asdict()}
        elbo_gen = torch.Generator().manual_seed(seed)  # the same z ~ q(z|x) for every prior
        terms = [elbo_with_prior(model, test.images[i:i + 100], prior, samples, elbo_gen)
                 for i in range(0, len(held_out), 100)]
        out[name].update({key: float(torch.cat([t[key] for t in terms]).mean()) for key in ("elbo", "recon", "kl")})
    return out


__all__ = ["GaussianMixture", "NearestCodeScore", "elbo_with_prior", "fit_gaussian_mixture", "fitted_prior_numbers",
           "nearest_code_distances", "nearest_code_score", "posterior_samples"]

"""Evaluating trained models on a whole data set: losses and latent codes.

Everything here runs under ``torch.no_grad`` in batches and is deterministic: where
a VAE needs a sample of ``z``, it comes from a CPU generator seeded by the caller, so
the same model on the same data gives the same numbers, on a GPU too (which also
computes in full float32 here, see `full_float32`), and evaluation never touches
the global random state that training relies on.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import torch

from .data import ImageDataset, condition_vectors, to_float
from .information import latent_information, normalized_mutual_information  # noqa: F401  (re-exported)
from .losses import elbo_terms, gaussian_kl, normal_log_density
from .models import FAMILIES, VAE, LatentModel


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """True float32 matmuls and convolutions on NVIDIA GPUs inside (also a decorator): from Ampere on, cuDNN's
    default TF32 (10-bit mantissa) would move a loss in its third digit. Training keeps TF32; CPUs are unchanged."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _images(data: ImageDataset | torch.Tensor) -> torch.Tensor:
    return data.images if isinstance(data, ImageDataset) else data


def _conditions(model: torch.nn.Module, data: ImageDataset | torch.Tensor) -> torch.Tensor | None:
    """A conditional model's ``y`` for every image of ``data`` (an `ImageDataset`); None for other models."""
    return condition_vectors(model.config, data) if model.config.condition else None


def _inputs(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """uint8 images as the model's floating-point type on its device (float64 for `PPCA.as_vae`)."""
    p = next(model.parameters())
    return to_float(images.to(p.device)).to(p.dtype)


@full_float32()
@torch.no_grad()
def dataset_loss(model: LatentModel, data: ImageDataset | torch.Tensor, beta: float = 1.0, batch_size: int = 1000,
                 seed: int = 0) -> dict[str, float]:
    """Mean per-image loss terms over a data set, in nats, as training reports them.

    Returns ``loss`` (``recon + beta * kl``), ``recon`` (``-log p(x|z)`` with one
    ``z ~ q(z|x)`` for a VAE, the code for an autoencoder), ``kl`` (0 for an
    autoencoder) and ``mse``, the mean squared error per pixel of the deterministic
    reconstruction ``decode(embed(x))``.
    """
    model.eval()
    device = model.device
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same z on every device
    images = _images(data)
    ys = _conditions(model, data)
    totals = torch.zeros(4, dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size].to(device))
        if cfg.kind in FAMILIES:  # a family scores itself (one sample of its latents, from gen)
            y = None if ys is None else ys[start:start + batch_size].to(device)
            output = model.score_terms(x, y, generator=gen)
            x_mean = model.reconstruct(x, y)
        elif isinstance(model, VAE):
            mu, logvar = model.encode(x)
            output = {**model.decode_params(model.reparameterise(mu, logvar, generator=gen)), "mu": mu, "logvar": logvar}
            x_mean = model.decode(mu)
        else:
            output = model.decode_params(model.encode(x))
            x_mean = model.output_mean(output["out"])  # an autoencoder's reconstruction is the decode of its code
        terms = elbo_terms(output, x, cfg.likelihood, cfg.sigma)
        recon, kl = terms["recon"], terms["kl"]
        mse = (x_mean - x).pow(2).flatten(1).mean(1)
        totals += torch.stack([recon.sum(), kl.sum(), mse.sum(), torch.tensor(float(len(x)), device=device)]).double().cpu()
    recon, kl, mse, n = totals.tolist()
    return {"loss": (recon + beta * kl) / n, "recon": recon / n, "kl": kl / n, "mse": mse / n}


@full_float32()
@torch.no_grad()
def embed_dataset(model: LatentModel, data: ImageDataset | torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The latent point of every image (``z`` for an autoencoder, ``mu`` for a VAE), on the CPU."""
    model.eval()
    images = _images(data)
    return torch.cat([model.embed(_inputs(model, images[i:i + batch_size])).float().cpu()
                      for i in range(0, len(images), batch_size)])


@full_float32()
@torch.no_grad()
def reconstruction_errors(model: LatentModel, data: ImageDataset | torch.Tensor, batch_size: int = 1000,
                          inputs: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per image between each image and ``decode(embed(input))``, on the CPU.

    ``inputs`` (floats in [0, 1], same shape) replaces the images fed to the model,
    e.g. noisy copies for denoising; the error is always measured against ``data``.
    """
    model.eval()
    device = model.device
    images = _images(data)
    errors = []
    for i in range(0, len(images), batch_size):
        x = to_float(images[i:i + batch_size].to(device))
        x_in = x if inputs is None else inputs[i:i + batch_size].to(device)
        errors.append((model.reconstruct(x_in).float() - x).pow(2).flatten(1).mean(1).cpu())
    return torch.cat(errors)


def roc_auc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve for telling ``positives`` (higher scores) from ``negatives``.

    Equals the probability that a random positive scores above a random negative (ties
    count half): the Mann-Whitney U statistic divided by the number of pairs.
    """
    scores = torch.cat([negatives, positives]).double()
    ranks = torch.empty_like(scores)
    order = scores.argsort()
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique()[torch.unique(scores, return_counts=True)[1] > 1]:  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_neg, n_pos = len(negatives), len(positives)
    u = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_neg * n_pos))


def kmeans(points: torch.Tensor, k: int, seed: int = 0, iterations: int = 100) -> torch.Tensor:
    """Cluster labels from k-means (Lloyd's algorithm, k-means++ start, fixed seed)."""
    from scipy.cluster.vq import kmeans2

    _, labels = kmeans2(points.double().numpy(), k, iter=iterations, minit="++", seed=seed)
    return torch.from_numpy(labels).long()


def cluster_purity(clusters: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of points whose cluster's most common true label is their own label."""
    table = torch.zeros(int(clusters.max()) + 1, int(labels.max()) + 1)
    table.index_put_((clusters, labels), torch.ones(len(labels)), accumulate=True)
    return float(table.max(1).values.sum() / len(labels))


def pca(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Principal components of the rows of ``x`` (N, D): ``(mean, components (k, D), variances (k,))``.

    From the eigendecomposition of the D x D covariance, in float64; components are
    orthonormal rows sorted by decreasing variance.
    """
    x = x.double().flatten(1)
    mean = x.mean(0)
    cov = torch.cov((x - mean).T)
    variances, vectors = torch.linalg.eigh(cov)
    top = variances.argsort(descending=True)[:k]
    return mean, vectors[:, top].T.contiguous(), variances[top]


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles in degrees between the column spaces of ``a`` (D, k) and ``b`` (D, m).

    All zero exactly when one space contains the other; 90 for orthogonal directions.
    """
    qa, _ = torch.linalg.qr(a.double())
    qb, _ = torch.linalg.qr(b.double())
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cosines))


@full_float32()
@torch.no_grad()
def log_likelihood_estimate(model: VAE, x: torch.Tensor, k: int, proposal: str = "posterior",
                            generator: torch.Generator | None = None, chunk: int = 100_000) -> torch.Tensor:
    """An importance-sampling estimate of ``log p(x)`` per image, from ``k`` samples of z.

    ``log (1/k) sum_i p(x|z_i) p(z_i) / r(z_i)`` with ``z_i ~ r``: ``r = q(z|x)`` (the
    encoder: the IWAE bound, equal in expectation to the ELBO at ``k = 1``) or ``r = p(z)``
    (the prior: naive Monte Carlo, ``(1/k) sum_i p(x|z_i)``). Samples are drawn in
    batches of about ``chunk`` decoder evaluations and combined with logsumexp in
    float64, so no ``p(x|z)`` underflows. In expectation both are lower bounds that
    rise to ``log p(x)`` as ``k`` grows; the prior needs astronomically many samples.
    """
    model.eval()
    device = model.device
    x = x.to(device)
    n = len(x)
    mu, logvar = model.encode(x)
    if proposal == "prior":
        mu, logvar = torch.zeros_like(mu), torch.zeros_like(logvar)
    elif proposal != "posterior":
        raise ValueError(f"proposal must be 'posterior' or 'prior', not {proposal!r}")
    per = max(1, min(k, chunk // n))  # samples per image in one batch
    log_w = []
    for start in range(0, k, per):
        m = min(per, k - start)
        mu_m, logvar_m = mu.repeat(m, 1), logvar.repeat(m, 1)  # (m * n, d), sample-major
        z = model.reparameterise(mu_m, logvar_m, generator=generator)
        x_m = x.repeat(m, *([1] * (x.dim() - 1)))
        log_px_z = model.log_likelihood(z, x_m).double()
        log_pz = normal_log_density(z).sum(1).double()
        log_r = normal_log_density(z, mu_m, logvar_m).sum(1).double()
        log_w.append((log_px_z + log_pz - log_r).view(m, n))
    log_w = torch.cat(log_w)
    return (torch.logsumexp(log_w, 0) - torch.log(torch.tensor(float(k), dtype=torch.float64))).cpu()


@full_float32()
@torch.no_grad()
def kl_per_dimension(model: VAE, data: ImageDataset | torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The average KL(q(z_j|x) || N(0, 1)) of each latent dimension j over a data set (nats)."""
    model.eval()
    images = _images(data)
    total = torch.zeros(model.latent_dim, dtype=torch.float64)
    for i in range(0, len(images), batch_size):
        mu, logvar = model.encode(_inputs(model, images[i:i + batch_size]))
        total += gaussian_kl(mu, logvar, per_dimension=True).sum(0).double().cpu()
    return total / len(images)


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, reference: ImageDataset | torch.Tensor,
                       batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the closest ``reference`` image in pixel space.

    Both are ``(N, C, H, W)`` (uint8 or floats in [0, 1]). Returns ``(rmse, index)``:
    the root-mean-square pixel difference to the nearest reference image and its
    position. A generator that copied its training set would have samples at
    RMSE near 0 from it; held-out real images give the scale of "genuinely new".
    """
    def flat(x: torch.Tensor) -> torch.Tensor:
        return (to_float(x) if x.dtype == torch.uint8 else x.float()).flatten(1)

    q = flat(queries).double()
    images = _images(reference)
    best = torch.full((len(q),), float("inf"), dtype=torch.float64)
    where = torch.zeros(len(q), dtype=torch.long)
    for i in range(0, len(images), batch_size):
        d, j = torch.cdist(q, flat(images[i:i + batch_size]).double()).min(1)
        better = d < best
        best[better], where[better] = d[better], j[better] + i
    return best / q.shape[1] ** 0.5, where


def attribute_vectors(model: LatentModel, data: ImageDataset, names: tuple[str, ...] | list[str]) -> dict[str, torch.Tensor]:
    """Latent direction of each binary attribute: mean code of images with it minus mean code without.

    ``data`` must carry ``attributes`` (CelebA's 40). Adding ``s * v`` to a face's
    code and decoding moves the face towards (s > 0) or away from the attribute,
    as far as the model's latent space is linear in it.
    """
    if data.attributes is None:
        raise ValueError(f"{data.name or 'this data set'} has no attributes; attribute vectors need CelebA's")
    z = embed_dataset(model, data)
    out = {}
    for name in names:
        if name not in data.attribute_names:
            raise ValueError(f"unknown attribute {name!r}; known: {', '.join(data.attribute_names)}")
        has = data.attributes[:, data.attribute_names.index(name)].bool()
        if has.all() or not has.any():
            raise ValueError(f"attribute {name!r} needs images both with and without it in {data.name}")
        out[name] = z[has].mean(0) - z[~has].mean(0)
    return out


def active_units(model: VAE, data: ImageDataset | torch.Tensor, threshold: float = 0.01,
                 batch_size: int = 1000) -> tuple[int, torch.Tensor]:
    """How many latent dimensions the VAE uses (Burda et al., 2016).

    Dimension ``j`` is *active* if its posterior mean moves with the input:
    ``Cov_x(E_q[z_j | x]) > threshold``. A collapsed dimension has ``q(z_j|x) = p(z_j)``
    for every ``x``, so its mean is constant (variance 0) and its KL is 0: the
    decoder ignores it. Returns the count and the per-dimension variances.
    """
    variance = embed_dataset(model, data, batch_size).double().var(0)
    return int((variance > threshold).sum()), variance


def bits_per_dim(nll_nats: float, dims: int, levels: int = 256) -> float:
    """A continuous density's negative log-likelihood of 8-bit images in bits per dimension.

    Pixels ``0..255`` are scaled to ``[0, 1]``, so neighbouring values are ``1/(levels - 1)``
    apart. A density ``p`` on that scale gives an 8-bit image probability of about
    ``p(x) / (levels - 1)^D`` (density times bin volume), hence
    ``bits/dim = (NLL + D log(levels - 1)) / (D log 2)``. The uniform model over
    ``levels`` values scores 8 bits/dim (a density spreading its mass evenly over the 256
    bins of width ``1/255`` centred on the pixel values); lower is better. Only
    meaningful for a proper density of x, i.e. a VAE with a Gaussian decoder: not
    Bernoulli on grey pixels, and not an autoencoder's ``-log p(x|z)`` at its code.
    """
    return (nll_nats + dims * math.log(levels - 1)) / (dims * math.log(2))


def evaluate_model(model: LatentModel, data: ImageDataset | torch.Tensor, k: int = 1000, n: int | None = 1000,
                   seed: int = 0, threshold: float = 0.01, chunk: int = 20_000) -> dict[str, Any]:
    """Everything ``python -m vaebook evaluate`` reports for one model, per image, in nats.

    For every model: ``recon`` (``-log p(x|z)``), ``mse``. For a VAE also, at beta = 1:
    ``neg_elbo`` (= recon + kl), ``kl``, ``iwae_nll`` (``-log p(x)`` estimated with ``k``
    importance samples on the first ``n`` images; ``neg_elbo_on_iwae_images`` is the
    negative ELBO on the same images, so the two compare), ``active_units`` and
    ``kl_per_dim``; with a Gaussian decoder, the negative ELBO and the IWAE estimate also
    in bits per dimension (``*_bpd``). ``neg_elbo``, ``recon`` and ``kl`` use the whole
    ``data``; ``chunk`` bounds the decoder evaluations per batch of the IWAE estimate.
    """
    images = _images(data)
    if model.config.kind in FAMILIES:
        return _evaluate_family(model, data, k, n, seed)
    loss = dataset_loss(model, images, beta=1.0, seed=seed)
    out: dict[str, Any] = {"images": len(images), "recon": loss["recon"], "mse": loss["mse"]}
    if not isinstance(model, VAE):
        return out  # an autoencoder has no likelihood
    sub = images[:n] if n is not None else images
    gen = torch.Generator().manual_seed(seed)
    iwae = torch.cat([log_likelihood_estimate(model, _inputs(model, sub[i:i + 100]), k, generator=gen, chunk=chunk)
                      for i in range(0, len(sub), 100)])
    out.update({"neg_elbo": loss["loss"], "kl": loss["kl"], "k": k, "iwae_images": len(sub),
                "iwae_nll": float(-iwae.mean()),
                "neg_elbo_on_iwae_images": dataset_loss(model, sub, beta=1.0, seed=seed)["loss"],
                "active_units": active_units(model, images, threshold)[0], "latent_dim": model.latent_dim,
                "kl_per_dim": kl_per_dimension(model, images).tolist()})
    return _with_bits_per_dim(model, out, images)


def _with_bits_per_dim(model: torch.nn.Module, out: dict[str, Any], images: torch.Tensor) -> dict[str, Any]:
    """``out`` with the negative ELBO and IWAE estimate in bits per dimension (``*_bpd``) where they mean
    something: a Gaussian decoder's proper density (of ``x | y`` for a conditional model)."""
    if model.config.likelihood == "gaussian" and "iwae_nll" in out:
        dims = int(images[0].numel())
        out["neg_elbo_bpd"], out["iwae_nll_bpd"] = bits_per_dim(out["neg_elbo"], dims), bits_per_dim(out["iwae_nll"], dims)
    return out


def _evaluate_family(model: torch.nn.Module, data: ImageDataset | torch.Tensor, k: int, n: int | None,
                     seed: int) -> dict[str, Any]:
    """`evaluate_model` for a family: its negative ELBO, and the IWAE estimate if it has ``log_likelihood_estimate``."""
    images = _images(data)
    loss = dataset_loss(model, data, beta=1.0, seed=seed)
    out: dict[str, Any] = {"images": len(images), "recon": loss["recon"], "mse": loss["mse"],
                           "neg_elbo": loss["loss"], "kl": loss["kl"]}
    if hasattr(model, "log_likelihood_estimate"):
        m = len(images) if n is None else min(n, len(images))
        sub = data.subset(m) if isinstance(data, ImageDataset) else images[:m]
        ys = _conditions(model, sub)
        gen = torch.Generator().manual_seed(seed)
        with full_float32(), torch.no_grad():
            iwae = torch.cat([model.log_likelihood_estimate(_inputs(model, _images(sub)[i:i + 100]), k, generator=gen,
                              y=None if ys is None else ys[i:i + 100].to(model.device)) for i in range(0, m, 100)])
        out.update({"k": k, "iwae_images": m, "iwae_nll": float(-iwae.mean()),
                    "neg_elbo_on_iwae_images": dataset_loss(model, sub, beta=1.0, seed=seed)["loss"]})
    return _with_bits_per_dim(model, out, images)


FACE_ATTRIBUTES = ("Smiling", "Eyeglasses", "Blond_Hair", "Male")  # the attributes the faces chapter studies


@torch.no_grad()
def reconstructions(model: LatentModel, x: torch.Tensor) -> torch.Tensor:
    """``model.reconstruct(x)`` on the model's device, returned on the CPU in [0, 1]."""
    model.eval()
    return model.reconstruct(x.to(model.device)).float().cpu().clamp(0, 1)


def prior_samples(model: VAE, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` images from a VAE's prior (`VAE.sample`), as float32 on the CPU in [0, 1]."""
    return model.sample(n, generator=generator).float().cpu().clamp(0, 1)


def celeba_numbers(vae: VAE, train: ImageDataset, test: ImageDataset, n: int = 1000,
                   seed: int = 0, attributes: Sequence[str] = FACE_ATTRIBUTES) -> dict[str, Any]:
    """The numbers the faces chapter quotes, computed from the models and the data.

    * ``nn_rmse_*``: pixel RMSE from ``n`` VAE samples, ``n`` held-out test faces and
      the VAE's reconstructions of those faces (``n`` at most the test set's size) to
      their nearest training face (median, 5th percentile and minimum). Samples that
      copied training faces would sit near 0; new real faces give the scale of "new";
      and since blurry images sit closer to everything in pixel space, the blurry
      reconstructions of faces not in the training set are the fair comparison.
    * ``attribute_counts``: training faces with each attribute (of ``len(train)``).
    """
    n = min(n, len(test))
    gen = torch.Generator().manual_seed(seed)
    samples = prior_samples(vae, n, gen)
    recons = torch.cat([reconstructions(vae, test.float(torch.arange(i, min(i + 250, n))))
                                 for i in range(0, n, 250)])
    queries = {"vae_samples": samples, "test_faces": test.images[:n], "vae_reconstructions": recons}
    out: dict[str, Any] = {"n": n, "n_train": len(train), "n_test": len(test), "seed": seed}
    for key, q in queries.items():
        rmse, _ = nearest_neighbours(q, train)
        out[f"nn_rmse_{key}"] = {"median": float(rmse.median()), "p05": float(rmse.quantile(0.05)),
                                 "min": float(rmse.min())}
    out["attribute_counts"] = {a: int(train.attributes[:, train.attribute_names.index(a)].sum()) for a in attributes}
    return out

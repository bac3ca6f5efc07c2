"""Evaluation helpers: nearest neighbours and attribute vectors against values worked out by hand."""

import pytest
import torch

from vaebook.data import ImageDataset
from vaebook.evaluate import attribute_vectors, nearest_neighbours


class FirstPixels(torch.nn.Module):
    """A stand-in encoder whose code is the first two pixel values: the expected vectors are easy to compute."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def embed(self, x):
        return x.flatten(1)[:, :2]


def test_nearest_neighbours_finds_copies_and_exact_distances_across_batches():
    levels = torch.tensor([0, 64, 128, 192, 255], dtype=torch.uint8)
    reference = levels[:, None, None, None].expand(5, 3, 4, 4).contiguous()
    queries = torch.stack([reference[3].float() / 255, torch.full((3, 4, 4), 0.1)])
    rmse, index = nearest_neighbours(queries, reference, batch_size=2)  # 3 batches: 2 + 2 + 1
    assert index.tolist() == [3, 0]
    torch.testing.assert_close(rmse, torch.tensor([0.0, 0.1], dtype=torch.float64), atol=1e-7, rtol=0)
    # uint8 queries are scaled like the reference
    rmse_u8, index_u8 = nearest_neighbours(reference[[4, 1]], reference, batch_size=3)
    assert index_u8.tolist() == [4, 1] and rmse_u8.abs().max() < 1e-12


def test_attribute_vectors_are_differences_of_class_means():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 2, 2), generator=gen, dtype=torch.uint8)
    attrs = torch.zeros(40, 3, dtype=torch.uint8)
    attrs[::3, 0] = 1
    attrs[:25, 1] = 1
    data = ImageDataset(images, attributes=attrs, attribute_names=("A", "B", "C"), name="toy")
    v = attribute_vectors(FirstPixels(), data, ["A", "B"])
    z = images.flatten(1)[:, :2].float() / 255
    for name, col in (("A", 0), ("B", 1)):
        has = attrs[:, col].bool()
        torch.testing.assert_close(v[name], z[has].mean(0) - z[~has].mean(0))
    with pytest.raises(ValueError, match="unknown attribute 'D'"):
        attribute_vectors(FirstPixels(), data, ["D"])
    with pytest.raises(ValueError, match="both with and without"):
        attribute_vectors(FirstPixels(), data, ["C"])
    with pytest.raises(ValueError, match="no attributes"):
        attribute_vectors(FirstPixels(), ImageDataset(images, name="plain"), ["A"])


def test_a_trained_linear_autoencoder_spans_the_top_k_pca_subspace():
    """Baldi & Hornik (1989): the squared-error optimum of a linear autoencoder is PCA's subspace
    (not its axes). Fit the package's linear AE with its own loss, full batch (L-BFGS converges where
    a few hundred Adam steps would still be crawling along the small directions), and measure the
    principal angles to the top-k principal components."""
    from vaebook.evaluate import pca, principal_angles
    from vaebook.losses import loss_terms
    from vaebook.models import ModelConfig, build_model

    gen = torch.Generator().manual_seed(0)
    d, k, n = 16, 3, 600
    basis, _ = torch.linalg.qr(torch.randn(d, k, generator=gen))
    scales = torch.tensor([0.15, 0.10, 0.07])
    x = 0.5 + (torch.randn(n, k, generator=gen) * scales) @ basis.T + 0.01 * torch.randn(n, d, generator=gen)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).view(n, 1, 1, d)
    data = ImageDataset(images, name="low-rank")
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="ae", arch="linear", in_shape=(1, 1, d), latent_dim=k,
                                    likelihood="gaussian", sigma=1.0)).double()
    xf = data.float().double()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_terms(model(xf), xf, "gaussian", 1.0)["loss"]
        loss.backward()
        return loss

    opt.step(closure)
    _, components, _ = pca(xf, k)
    decoder = model.decoder[0].weight.detach()  # (D, k): the decoder's column space
    angles = principal_angles(decoder, components.T)
    assert angles.max() < 1.0, angles
    random = principal_angles(torch.randn(d, k, generator=gen), components.T)
    assert random.max() > 30.0  # the bound above is not trivially met by any 3-d subspace


def test_bits_per_dim_of_a_uniform_density_counts_the_bins():
    """The uniform density on [0, 1]^D has log p = 0; 8-bit pixels scaled by 1/255 lie in bins of width
    1/255, so each pixel costs log2(255) bits; the uniform distribution over the 256 values, 8 bits."""
    import math

    from vaebook.evaluate import bits_per_dim

    assert bits_per_dim(0.0, 784) == pytest.approx(math.log2(255), rel=1e-12)
    assert bits_per_dim(784 * math.log(256 / 255), 784) == pytest.approx(8.0, rel=1e-12)


def test_evaluate_model_reports_what_each_kind_of_model_has():
    from vaebook.evaluate import evaluate_model
    from vaebook.models import ModelConfig, build_model

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 1, 4, 4), generator=gen, dtype=torch.uint8)
    torch.manual_seed(0)
    vae = build_model(ModelConfig(kind="vae", arch="mlp", in_shape=(1, 4, 4), latent_dim=3, hidden=8,
                                  likelihood="gaussian", sigma=0.3))
    r = evaluate_model(vae, images, k=50, n=10)
    assert r["iwae_images"] == 10 and r["k"] == 50 and r["latent_dim"] == 3 and len(r["kl_per_dim"]) == 3
    assert r["neg_elbo"] == pytest.approx(r["recon"] + r["kl"], rel=1e-9)
    assert r["iwae_nll"] <= r["neg_elbo_on_iwae_images"] + 1.0  # IWAE is the tighter bound (up to noise)
    assert {"neg_elbo_bpd", "iwae_nll_bpd"} <= set(r)
    ae = build_model(ModelConfig(kind="ae", arch="mlp", in_shape=(1, 4, 4), latent_dim=3, hidden=8,
                                 likelihood="gaussian", sigma=0.3))
    r_ae = evaluate_model(ae, images)
    assert set(r_ae) == {"images", "recon", "mse"}  # no likelihood, so no bits per dimension either


def test_evaluation_measures_in_full_float32_with_cpu_noise_and_restores_the_flags(monkeypatch):
    """On an NVIDIA GPU cuDNN would run float32 convolutions in TF32, and a CUDA generator draws other
    numbers than a CPU one: evaluation turns TF32 off while it measures (and back on after), and draws z
    with a CPU generator, so a GPU measures what the CPU measures."""
    from vaebook.evaluate import dataset_loss, embed_dataset
    from vaebook.models import VAE, ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vae", arch="conv", in_shape=(1, 8, 8), latent_dim=2, channels=(4,)))
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # as a training run may leave them
    seen, generators = [], []
    real_encode, real_reparameterise = model.encode, VAE.reparameterise

    def encode(x):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return real_encode(x)

    def reparameterise(mu, logvar, generator=None):
        generators.append(generator.device.type)
        return real_reparameterise(mu, logvar, generator)

    monkeypatch.setattr(model, "encode", encode)
    monkeypatch.setattr(VAE, "reparameterise", staticmethod(reparameterise))
    try:
        dataset_loss(model, images, batch_size=4)
        embed_dataset(model, images)
        restored = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert len(seen) == 3 and set(seen) == {(False, False)}
    assert generators == ["cpu", "cpu"]
    assert restored == (True, True)


def test_latent_information_is_zero_when_every_image_has_the_same_posterior():
    """Identical posteriors: the code says nothing about which image it came from, and the whole
    mean KL is the aggregate posterior's (here that one Gaussian's) distance from the prior."""
    import math

    from vaebook.evaluate import normalized_mutual_information  # noqa: F401  (still importable from here)
    from vaebook.information import latent_information
    from vaebook.losses import gaussian_kl

    mu = torch.tensor([[0.7, -1.2, 0.3]]).expand(200, 3)
    logvar = torch.tensor([[-1.0, 0.5, 0.0]]).expand(200, 3)
    r = latent_information(mu, logvar, samples=4)
    assert abs(r["mutual_information"]) < 1e-9
    assert r["kl"] == pytest.approx(float(gaussian_kl(mu[:1], logvar[:1])), rel=1e-6)
    assert r["marginal_kl"] == pytest.approx(r["kl"], abs=1e-9)
    assert r["log_n"] == pytest.approx(math.log(200))


def test_latent_information_of_separated_narrow_posteriors_is_log_n_and_never_more():
    """N narrow posteriors far apart: the code identifies the image, so I = H(x) = log N. Overlapping
    posteriors give less, and no estimate exceeds log N: log q(z) >= log q(z|x_n) - log N."""
    import math

    from vaebook.information import latent_information

    grid = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij"), -1).reshape(64, 2)
    r = latent_information(grid * 5.0, torch.full((64, 2), 2 * math.log(0.01)))
    assert r["mutual_information"] == pytest.approx(r["log_n"], abs=1e-6)
    gen = torch.Generator().manual_seed(0)
    for scale, log_sd in ((0.3, 0.0), (1.0, -2.0), (3.0, -6.0)):
        mu = scale * torch.randn(100, 3, generator=gen)
        logvar = torch.full((100, 3), 2 * log_sd) + 0.1 * torch.randn(100, 3, generator=gen)
        r = latent_information(mu, logvar, samples=3, seed=1)
        assert -0.05 < r["mutual_information"] <= r["log_n"] + 1e-12


def test_latent_information_splits_the_mean_kl_into_information_and_prior_mismatch():
    """E_x[KL(q(z|x) || p(z))] = I_q(x; z) + KL(q(z) || p(z)): check the second term against its own
    Monte Carlo estimate, E_{z ~ q(z)}[log q(z) - log p(z)], and that it is not negative."""
    import math

    from vaebook.information import latent_information
    from vaebook.losses import normal_log_density

    gen = torch.Generator().manual_seed(0)
    mu = 1.5 + torch.randn(40, 2, generator=gen)  # off-centre and too wide: a clear mismatch with N(0, I)
    logvar = torch.full((40, 2), -1.0)
    r = latent_information(mu, logvar, samples=100)
    assert r["kl"] == pytest.approx(r["mutual_information"] + r["marginal_kl"], rel=1e-12)
    assert r["marginal_kl"] > 0.5
    idx = torch.randint(0, 40, (20_000,), generator=gen)
    z = mu[idx] + (0.5 * logvar[idx]).exp() * torch.randn(20_000, 2, generator=gen)
    log_q = torch.logsumexp(normal_log_density(z[:, None], mu[None], logvar[None]).sum(2), 1) - math.log(40)
    direct = float((log_q - normal_log_density(z).sum(1)).mean())
    assert r["marginal_kl"] == pytest.approx(direct, abs=0.05)
    blocks = [latent_information(mu, logvar, samples=5, chunk_elements=c) for c in (7, 130, 2**22)]
    assert len({round(b["mutual_information"], 12) for b in blocks}) == 1  # 1, 3 or all 200 draws per block

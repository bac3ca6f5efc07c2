"""The conditional VAE and the two-level (ladder) VAE against their maths, and both through the one
training loop and evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from vaebook.data import ImageDataset, class_condition, condition_vectors
from vaebook.evaluate import dataset_loss, evaluate_model
from vaebook.hierarchical import gaussian_kl_between
from vaebook.losses import gaussian_kl
from vaebook.models import ModelConfig, build_model
from vaebook.train import TrainConfig, train

pytestmark = pytest.mark.unit

CLASSES = ("a", "b", "c")
CLASS_Y = class_condition(CLASSES)
CVAE = ModelConfig(kind="cvae", arch="mlp", in_shape=(1, 8, 8), latent_dim=2, hidden=16, condition=CLASS_Y)
CONV_CVAE = ModelConfig(kind="cvae", arch="conv", in_shape=(1, 8, 8), latent_dim=2, channels=(4, 8),
                        condition=CLASS_Y)
HVAE = ModelConfig(kind="hvae", arch="mlp", in_shape=(1, 8, 8), latent_dim=3, top_latent_dim=2, hidden=16)
BOTTOM_UP = ModelConfig(**{**HVAE.to_dict(), "hierarchy": "bottom-up"})


def _data(n: int = 96, seed: int = 0) -> ImageDataset:
    """Three classes of 8x8 images: a bright row whose position is the class, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.2
    x[torch.arange(n), 0, 2 * labels + 1] = 0.9
    return ImageDataset((x * 255).round().to(torch.uint8), labels, class_names=CLASSES)


def test_condition_vectors_one_hot_in_the_order_named() -> None:
    data = _data(10)
    y = condition_vectors(CVAE, data)
    assert torch.equal(y.argmax(1), data.labels) and torch.equal(y.sum(1), torch.ones(10))
    reordered = condition_vectors(ModelConfig(**{**CVAE.to_dict(), "condition": class_condition(("c", "a", "b"))}), data)
    assert torch.equal(reordered[:, 0], (data.labels == 2).float())
    with pytest.raises(ValueError, match="no attributes"):
        condition_vectors(ModelConfig(**{**CVAE.to_dict(), "condition": ("Smiling",)}), data)


@pytest.mark.parametrize("config", [CVAE, CONV_CVAE], ids=["mlp", "conv"])
def test_cvae_reads_y_in_encoder_and_decoder(config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(config)
    x, eye = torch.rand(4, 1, 8, 8), torch.eye(3)
    y0, y1 = eye[[0, 0, 0, 0]], eye[[1, 1, 1, 1]]
    assert not torch.allclose(model.encode(x, y0)[0], model.encode(x, y1)[0])
    z = torch.randn(4, 2)
    assert not torch.allclose(model.decode(z, y0), model.decode(z, y1))
    # the loss is the VAE's: recon + KL from the same output keys
    out = model(x, y0)
    assert set(out) >= {"out", "mu", "logvar", "z"}


def test_cvae_marginal_likelihood_is_the_mixture_over_classes() -> None:
    torch.manual_seed(0)
    model = build_model(CVAE).eval()
    x = torch.rand(5, 1, 8, 8)
    per_class = torch.stack([model.log_likelihood_estimate(x, 3, torch.Generator().manual_seed(c),
                                                           torch.eye(3)[c].expand(5, -1)) for c in range(3)])
    # the marginal draws its classes' samples from one generator in turn; redo that by hand
    g = torch.Generator().manual_seed(7)
    by_hand = torch.stack([model.log_likelihood_estimate(x, 3, g, torch.eye(3)[c].expand(5, -1)) for c in range(3)])
    marginal = model.marginal_log_likelihood_estimate(x, 3, torch.Generator().manual_seed(7))
    assert torch.allclose(marginal, torch.logsumexp(by_hand, 0) - math.log(3))
    # log p(x) lies within log C of every log p(x|y) in the mixture: max_y p(x|y) / C <= p(x) <= max_y p(x|y)
    assert (marginal <= by_hand.max(0).values + 1e-9).all()
    assert (marginal >= by_hand.max(0).values - math.log(3) - 1e-9).all()
    assert per_class.shape == (3, 5)


def test_cvae_samples_draw_uniform_classes() -> None:
    model = build_model(CVAE)
    y = model.random_conditions(3000, torch.Generator().manual_seed(0))
    assert torch.equal(y.sum(1), torch.ones(3000))
    assert ((y.mean(0) - 1 / 3).abs() < 0.03).all()
    images = model.sample(5, torch.Generator().manual_seed(0))
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_gaussian_kl_between_matches_torch_and_the_standard_normal_case() -> None:
    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(4))
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mq, (0.5 * lq).exp()), torch.distributions.Normal(mp, (0.5 * lp).exp())).sum(1)
    assert torch.allclose(gaussian_kl_between(mq, lq, mp, lp), expected)
    zeros = torch.zeros_like(mq)
    assert torch.allclose(gaussian_kl_between(mq, lq, zeros, zeros), gaussian_kl(mq, lq))
    assert torch.allclose(gaussian_kl_between(mq, lq, mq, lq), torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize("config", [HVAE, BOTTOM_UP], ids=["top-down", "bottom-up"])
def test_ladder_vae_bound_and_iwae(config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(config).eval()
    x = _data(8).float()
    terms = model.score_terms(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(terms["kl"], terms["kl_top"] + terms["kl_bottom"])
    assert (terms["kl_top"] >= 0).all()  # closed form; a one-sample bottom-up kl_bottom may be negative
    # the IWAE estimate with K samples averages above the one-sample ELBO (Burda et al.'s ordering)
    def elbo(seed: int) -> torch.Tensor:
        t = model.score_terms(x, generator=torch.Generator().manual_seed(seed))
        return -(t["recon"] + t["kl"])

    one = torch.stack([elbo(s) for s in range(200)])
    iwae = model.log_likelihood_estimate(x, 200, torch.Generator().manual_seed(1))
    assert (iwae.float() > one.mean(0)).all()
    # an IWAE estimate with one sample is an unbiased estimate of the ELBO (averaged over many draws)
    single = torch.stack([model.log_likelihood_estimate(x, 1, torch.Generator().manual_seed(s)) for s in range(400)])
    assert torch.allclose(single.mean(0).float(), one.mean(0), atol=3 * single.std(0).max().item() / 20)


@pytest.mark.parametrize("config", [HVAE, BOTTOM_UP], ids=["top-down", "bottom-up"])
def test_ladder_vae_samples_and_reconstructions_are_images(config: ModelConfig) -> None:
    model = build_model(config)
    x = torch.rand(3, 1, 8, 8)
    for images in (model.sample(4, torch.Generator().manual_seed(0)), model.reconstruct(x)):
        assert images.shape[1:] == (1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(model.sample(4, torch.Generator().manual_seed(0)),
                       model.sample(4, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("config", [CVAE, HVAE, BOTTOM_UP], ids=["cvae", "hvae", "hvae-bottom-up"])
def test_families_train_save_and_score(config: ModelConfig, tmp_path) -> None:
    data, test = _data(96, 0), _data(32, 1)
    tcfg = TrainConfig(epochs=4, batch_size=32, lr=3e-3)
    result = train(config, tcfg, data, test, tmp_path, device="cpu", progress=False)
    history = result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    first = dataset_loss(result.model, test)
    assert first == dataset_loss(result.model, test)  # seeded: the same numbers twice
    assert math.isclose(first["loss"], first["recon"] + first["kl"], rel_tol=1e-9)
    reloaded = build_model(config)
    reloaded.load_state_dict(result.model.state_dict())
    assert dataset_loss(reloaded, test) == first
    scores = evaluate_model(result.model, test, k=20, n=16)
    # the IWAE estimate (20 samples) is at least as good as the ELBO on the same images, up to noise
    assert scores["iwae_nll"] <= scores["neg_elbo_on_iwae_images"] + 0.5

"""Models: exact output sizes for every input the book uses, and the reparameterisation trick."""

import math

import pytest
import torch

from vaebook.models import VAE, Autoencoder, ModelConfig, build_model, conv_sizes, count_parameters

DRAFTS = (16, 32, 64, 128, 256)


@pytest.mark.parametrize("shape, channels", [
    ((1, 28, 28), (32, 64)),
    ((1, 28, 20), (32, 64)),
    ((3, 64, 64), (32, 64, 128, 256)),
    ((3, 218, 178), DRAFTS),
    ((3, 109, 89), DRAFTS),
])
@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_conv_models_reproduce_the_input_size(shape, channels, kind):
    model = build_model(ModelConfig(kind=kind, in_shape=shape, channels=channels, latent_dim=3))
    x = torch.rand(2, *shape)
    out = model(x)
    assert out["out"].shape == x.shape
    assert out["z"].shape == (2, 3)
    assert model.decode(out["z"]).shape == x.shape


def test_conv_sizes_halve_rounding_up():
    assert conv_sizes(218, 178, 5) == [(218, 178), (109, 89), (55, 45), (28, 23), (14, 12), (7, 6)]


def test_reference_mlp_vae_has_the_classic_parameter_count():
    model = build_model(ModelConfig(kind="vae", arch="mlp", latent_dim=20, hidden=400))
    # 784-400 + two 400-20 heads + 20-400 + 400-784, with biases
    want = (784 * 400 + 400) + 2 * (400 * 20 + 20) + (20 * 400 + 400) + (400 * 784 + 784)
    assert count_parameters(model) == want


def test_linear_autoencoder_is_linear():
    model = build_model(ModelConfig(kind="ae", arch="linear", latent_dim=4, likelihood="gaussian"))
    a, b = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    f = lambda x: model.reconstruct(x) - model.reconstruct(torch.zeros_like(x))  # noqa: E731
    torch.testing.assert_close(f(2 * a + 3 * b), 2 * f(a) + 3 * f(b), atol=1e-5, rtol=1e-4)


def test_bernoulli_decoder_outputs_probabilities_gaussian_outputs_means():
    z = torch.randn(4, 2) * 10
    bern = build_model(ModelConfig(kind="ae", latent_dim=2))
    img = bern.decode(z)
    assert img.min() >= 0 and img.max() <= 1
    torch.testing.assert_close(img, torch.sigmoid(bern.decoder(z)))
    gauss = build_model(ModelConfig(kind="ae", latent_dim=2, likelihood="gaussian"))
    torch.testing.assert_close(gauss.decode(z), gauss.decoder(z))


def test_reparameterise_samples_have_the_right_moments():
    mu = torch.tensor([[1.5, -2.0, 0.0]]).expand(200_000, 3)
    logvar = torch.log(torch.tensor([[0.25, 4.0, 1.0]])).expand(200_000, 3)
    z = VAE.reparameterise(mu, logvar, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), mu[0], atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), logvar[0].exp(), atol=0, rtol=0.02)


def test_reparameterise_is_differentiable_with_the_pathwise_gradients():
    # z = mu + exp(logvar / 2) eps: dz/dmu = 1 and dz/dlogvar = eps * exp(logvar / 2) / 2.
    mu = torch.zeros(1000, 2, requires_grad=True)
    logvar = torch.full((1000, 2), math.log(4.0), requires_grad=True)
    gen = torch.Generator().manual_seed(3)
    z = VAE.reparameterise(mu, logvar, generator=gen)
    z.sum().backward()
    eps = VAE.reparameterise(torch.zeros(1000, 2), torch.zeros(1000, 2), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(logvar.grad, eps * 2.0 / 2)


def test_vae_sample_is_seeded_and_in_pixel_range():
    model = build_model(ModelConfig(kind="vae", latent_dim=4))
    a = model.sample(3, generator=torch.Generator().manual_seed(0))
    b = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (3, 1, 28, 28)
    assert a.min() >= 0 and a.max() <= 1


def test_embed_is_the_code_or_the_posterior_mean():
    x = torch.rand(2, 1, 28, 28)
    ae, vae = build_model(ModelConfig(kind="ae")), build_model(ModelConfig(kind="vae"))
    assert isinstance(ae, Autoencoder) and isinstance(vae, VAE)
    torch.testing.assert_close(ae.embed(x), ae.encode(x))
    torch.testing.assert_close(vae.embed(x), vae.encode(x)[0])


@pytest.mark.parametrize("bad", [dict(kind="gan"), dict(arch="rnn"), dict(likelihood="poisson"),
                                 dict(in_shape=(28, 28)), dict(latent_dim=0), dict(channels=())])
def test_model_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_model_config_round_trips_through_json():
    import json

    cfg = ModelConfig(kind="vae", in_shape=(3, 64, 64), channels=DRAFTS, latent_dim=128)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg

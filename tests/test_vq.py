"""The VQ-VAE against the maths: nearest codes, the straight-through gradient, which loss moves what,
a causal and normalised PixelCNN prior, its KL term, codebook usage, training and saving."""

import itertools
import math
from collections import Counter

import pytest
import torch
from conftest import blobs

from vaebook.checkpoints import load_model
from vaebook.data import to_float
from vaebook.models import ModelConfig, build_model
from vaebook.train import TrainConfig, train
from vaebook.vq import COMMITMENT, VQVAE, CodePrior, codebook_usage

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: a second thread only adds synchronisation (slow on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = ModelConfig(kind="vqvae", arch="conv", in_shape=(1, 8, 8), channels=(4, 8), latent_dim=2, codebook_size=4)


def _tiny(seed: int = 0, **changes) -> VQVAE:
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**TINY.to_dict(), **changes}))


def _random_prior(k: int, seed: int = 0) -> CodePrior:
    """A prior with a random (not zero) output layer, so that it is far from uniform."""
    torch.manual_seed(seed)
    prior = CodePrior(k, channels=16, layers=2)
    torch.nn.init.normal_(prior.out.weight, std=0.5)
    torch.nn.init.normal_(prior.out.bias, std=0.5)
    return prior


def test_the_grid_and_the_shapes_follow_the_config():
    model = build_model(ModelConfig(kind="vqvae", channels=(32, 64), latent_dim=16, codebook_size=8))
    x = torch.rand(3, 1, 28, 28)
    assert model.grid == (7, 7) and model.encoder(x).shape == (3, 16, 7, 7)
    codes = model.encode(x)
    assert codes.shape == (3, 7, 7) and codes.dtype == torch.long
    assert model.reconstruct(x).shape == x.shape
    torch.testing.assert_close(model.decode(model.codebook.weight[:3]),  # one code everywhere
                               model.decode_codes(torch.arange(3)[:, None, None].expand(3, 7, 7)))
    assert set(model(x)) == {"recon", "kl", "aux"} and all(v.shape == (3,) for v in model(x).values())
    odd = build_model(ModelConfig(kind="vqvae", in_shape=(1, 28, 20), codebook_size=8))
    assert odd.reconstruct(torch.rand(2, 1, 28, 20)).shape == (2, 1, 28, 20)
    with pytest.raises(ValueError):
        build_model(ModelConfig(kind="vqvae", arch="mlp", codebook_size=8))


def test_quantise_picks_the_nearest_code():
    model = _tiny(codebook_size=7, latent_dim=3)
    torch.nn.init.normal_(model.codebook.weight)
    z_e = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    codes, e = model.quantise(z_e)
    book = model.codebook.weight.detach().double()
    for n, i, j in itertools.product(range(4), range(2), range(2)):
        z = z_e[n, :, i, j].double()
        dists = [float((z - book[k]).pow(2).sum()) for k in range(7)]
        assert dists[int(codes[n, i, j])] == pytest.approx(min(dists), abs=1e-6)
        torch.testing.assert_close(e[n, :, i, j].detach().double(), book[codes[n, i, j]])


def test_straight_through_passes_the_decoders_gradient_to_the_encoder_unchanged():
    model = _tiny()
    seen = {}

    def keep(name):
        def hook(module, inputs, output):
            t = output if name == "z_e" else inputs[0]
            t.retain_grad()
            seen[name] = t
        return hook

    model.encoder.register_forward_hook(keep("z_e"))
    model.decoder.register_forward_hook(keep("z_q"))
    model(torch.rand(5, 1, 8, 8))["recon"].sum().backward()  # recon depends on z_e only through z_q
    _, e = model.quantise(seen["z_e"].detach())
    torch.testing.assert_close(seen["z_q"].detach(), e.detach())  # forwards: the code vectors
    assert seen["z_q"].grad.abs().sum() > 0
    torch.testing.assert_close(seen["z_e"].grad, seen["z_q"].grad, rtol=0, atol=0)  # backwards: the identity


def test_the_codebook_loss_moves_only_the_codes_and_the_commitment_only_the_encoder():
    model = _tiny()
    torch.nn.init.normal_(model.codebook.weight)
    x = torch.rand(6, 1, 8, 8)

    def grads(term):
        model.zero_grad(set_to_none=True)
        z_e = model.encoder(x)
        losses = model.vq_losses(z_e, model.quantise(z_e)[1])
        losses[term].sum().backward()
        encoder = sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None)
        book = model.codebook.weight.grad
        return encoder, 0.0 if book is None else float(book.abs().sum()), losses

    encoder, book, losses = grads("codebook")
    assert encoder == 0 and book > 0
    encoder, book, _ = grads("commitment")
    assert encoder > 0 and book == 0
    torch.testing.assert_close(losses["codebook"], losses["commitment"])  # the same number, ||z_e - e||^2
    torch.testing.assert_close(model(x)["aux"], (1 + COMMITMENT) * losses["codebook"].detach())


def test_the_prior_is_causal_in_raster_order():
    k, h, w = 5, 4, 5
    prior = _random_prior(k).eval()
    codes = torch.randint(k, (2, h, w), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = prior(codes).flatten(2)  # (N, K, h * w) in raster order
        for j in range(h * w):
            changed = codes.clone().flatten(1)
            changed[:, j] = (changed[:, j] + 1) % k
            diff = (prior(changed.view(2, h, w)).flatten(2) - base).abs().amax((0, 1))
            assert float(diff[:j + 1].max()) < 1e-6, j  # no position up to j sees the code at j
            if j + 1 < h * w:
                assert float(diff[j + 1:].max()) > 1e-4, j  # and later ones do (the next one at least)


def test_the_prior_is_a_normalised_distribution_over_all_grids():
    k = 3
    prior = _random_prior(k, seed=3).eval()
    grids = torch.tensor(list(itertools.product(range(k), repeat=4))).view(-1, 2, 2)  # all 3^4 = 81 grids
    with torch.no_grad():
        logp = prior.log_prob(grids).double()
    assert float(torch.logsumexp(logp, 0)) == pytest.approx(0.0, abs=1e-5)
    assert float(logp.max() - logp.min()) > 1.0  # and far from uniform, so the test means something


def test_ancestral_samples_follow_the_priors_probabilities():
    model = _tiny(codebook_size=3)
    model.prior = _random_prior(3, seed=4)
    model.eval()
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).view(-1, 2, 2)
    with torch.no_grad():
        p = model.prior_log_prob(grids).exp()
    codes = model.sample_codes(4000, generator=torch.Generator().manual_seed(5))
    index = (codes.flatten(1) * torch.tensor([27, 9, 3, 1])).sum(1)  # the grid's row in `grids`
    freq = torch.bincount(index, minlength=81).double() / 4000
    assert float((freq - p.double()).abs().max()) < 0.03
    again = model.sample_codes(4000, generator=torch.Generator().manual_seed(5))
    assert torch.equal(codes, again)


def test_a_fresh_prior_is_uniform_so_the_kl_is_uniform_kl():
    model = build_model(ModelConfig(kind="vqvae", codebook_size=64)).eval()
    assert model.uniform_kl() == pytest.approx(49 * math.log(64))
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["kl"], torch.full((3,), model.uniform_kl()))
        terms = model.score_terms(x, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(terms["kl"], torch.full((3,), model.uniform_kl()))
        torch.testing.assert_close(terms["recon"], model(x)["recon"])  # deterministic: no draw


def test_the_terms_are_float32_under_bf16_autocast():
    model = _tiny()
    x = torch.rand(4, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert all(v.dtype == torch.float32 and bool(torch.isfinite(v).all()) for v in out.values())
    sum(out.values()).mean().backward()


def test_codebook_usage_counts_the_codes_of_every_position():
    model = _tiny(codebook_size=6).eval()
    torch.nn.init.normal_(model.codebook.weight, std=0.3)
    with torch.no_grad():
        model.codebook.weight[5] = 1e6  # never the nearest: dead
    data = blobs(10, seed=6)
    with torch.no_grad():
        codes = model.encode(to_float(data.images))
    counts = Counter(codes.flatten().tolist())
    usage = codebook_usage(model, data, batch_size=3)
    assert usage["counts"].tolist() == [counts.get(k, 0) for k in range(6)]
    assert usage["used"] == len(counts) and usage["dead"] == 6 - len(counts) >= 1
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    assert usage["perplexity"] == pytest.approx(math.exp(entropy))
    assert codebook_usage(model, data.images)["counts"].tolist() == usage["counts"].tolist()


def test_samples_are_images_and_seeded():
    model = _tiny().eval()
    for draw in (model.sample, model.sample_uniform):
        a = draw(5, generator=torch.Generator().manual_seed(7))
        b = draw(5, generator=torch.Generator().manual_seed(7))
        assert a.shape == (5, 1, 8, 8) and torch.equal(a, b) and 0 <= float(a.min()) <= float(a.max()) <= 1


def test_a_tiny_vqvae_learns_through_train_and_reloads_identically(tmp_path):
    train_set, test_set = blobs(256, 0), blobs(64, 1)
    tcfg = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=0, log_every=2)
    result = train(TINY, tcfg, train_set, test_set, tmp_path, device="cpu", progress=False)
    h = result.history
    assert h[-1]["train_loss"] < h[0]["train_loss"] and h[-1]["test_loss"] < h[0]["test_loss"]
    assert h[-1]["test_kl"] < result.model.uniform_kl()  # the prior has learned something about the codes
    x = to_float(test_set.images)
    rebuilt = build_model(result.model.config)
    rebuilt.load_state_dict(result.model.state_dict())
    for other in (rebuilt.eval(), load_model(tmp_path)):
        with torch.no_grad():
            for key in ("recon", "kl"):
                assert torch.equal(other.score_terms(x)[key], result.model.score_terms(x)[key])
            assert torch.equal(other.reconstruct(x), result.model.reconstruct(x))
            a = other.sample(6, generator=torch.Generator().manual_seed(8))
            assert torch.equal(a, result.model.sample(6, generator=torch.Generator().manual_seed(8)))

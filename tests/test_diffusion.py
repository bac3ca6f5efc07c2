"""The diffusion model against its maths: the forward process, Bayes' rule, the KLs, an unbiased ELBO."""

import math

import pytest
import torch

from vaebook.checkpoints import load_model, save_model
from vaebook.data import ImageDataset
from vaebook.diffusion import (MAX_BETA, PROB_MIN, coefficients, normal_kl, posterior, q_sample, schedule,
                               toy_data, toy_sample, train_toy)
from vaebook.evaluate import dataset_loss
from vaebook.losses import bernoulli_log_likelihood
from vaebook.models import ModelConfig, build_model
from vaebook.train import TrainConfig, train

pytestmark = pytest.mark.unit

CFG = ModelConfig(kind="diffusion", arch="conv", in_shape=(1, 8, 8), channels=(8, 16), latent_dim=16, steps=5)


def _model(cfg: ModelConfig = CFG, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """Grey images in [0, 1] with some exact 0s and 1s, like Fashion-MNIST's."""
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return torch.where(x < 0.3, 0.0, torch.where(x > 0.8, 1.0, x))


def test_the_cosine_schedule_is_nichol_and_dhariwals():
    betas, alphas, alpha_bars = schedule(100)
    t = torch.arange(101, dtype=torch.float64)
    f = torch.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert betas.dtype == torch.float64 and betas[0] == 0 and alpha_bars[0] == 1
    torch.testing.assert_close(alpha_bars[:-1], f[:-1] / f[0], rtol=1e-12, atol=0)  # unclipped steps
    assert betas[-1] == MAX_BETA and (betas[1:] > 0).all() and (alpha_bars.diff() < 0).all()
    torch.testing.assert_close(alphas, 1 - betas)


def test_q_of_x_t_given_x0_is_the_composition_of_the_one_step_gaussians():
    betas, alphas, alpha_bars = schedule(50)
    table = coefficients(50)
    x0 = torch.tensor([-1.0, 0.3, 1.0], dtype=torch.float64)
    mean, var = x0.clone(), torch.zeros(3, dtype=torch.float64)
    for t in range(1, 51):  # exact recursion: x_t = sqrt(1 - b_t) x_{t-1} + sqrt(b_t) noise
        mean, var = alphas[t].sqrt() * mean, alphas[t] * var + betas[t]
        torch.testing.assert_close(mean, table["sqrt_ab"][t] * x0, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(var, 1 - alpha_bars[t] + 0 * x0, rtol=1e-12, atol=1e-15)
    # and by simulation, step by step against q_sample's closed form
    gen = torch.Generator().manual_seed(0)
    x = torch.full((200_000,), 0.5, dtype=torch.float64)
    for t in range(1, 11):
        x = alphas[t].sqrt() * x + betas[t].sqrt() * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    t10 = torch.full(x.shape, 10)
    direct = q_sample(torch.full_like(x, 0.5), t10, torch.randn(x.shape, generator=gen, dtype=torch.float64), table)
    for a in (x, direct):
        assert float(a.mean()) == pytest.approx(0.5 * math.sqrt(alpha_bars[10]), abs=0.01)
        assert float(a.var()) == pytest.approx(float(1 - alpha_bars[10]), rel=0.01)


@pytest.mark.parametrize("t", [2, 5, 10])
def test_the_posterior_is_bayes_rule(t):
    """q(x_{t-1}|x_t, x_0) ~ q(x_t|x_{t-1}) q(x_{t-1}|x_0), normalised numerically on a grid in 1-D."""
    betas, alphas, alpha_bars = schedule(10)
    table = coefficients(10)
    x0, x_t = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    log_joint = (-(x_t - alphas[t].sqrt() * grid) ** 2 / (2 * betas[t])
                 - (grid - alpha_bars[t - 1].sqrt() * x0) ** 2 / (2 * (1 - alpha_bars[t - 1])))
    density = (log_joint - log_joint.max()).exp()
    density = density / torch.trapezoid(density, grid)
    mean = torch.trapezoid(grid * density, grid)
    var = torch.trapezoid((grid - mean) ** 2 * density, grid)
    got_mean, got_var = posterior(x_t.reshape(1), x0.reshape(1), torch.tensor([t]), table)
    assert float(got_mean) == pytest.approx(float(mean), abs=1e-8)
    assert float(got_var) == pytest.approx(float(var), rel=1e-6)


def test_the_posterior_at_step_one_is_the_data_itself():
    x0, x1 = torch.tensor([0.25]), torch.tensor([3.0])
    mean, var = posterior(x1, x0, torch.tensor([1]), coefficients(10))
    assert float(mean) == pytest.approx(0.25) and float(var) == 0


def test_normal_kl_is_torch_distributions_kl():
    gen = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(100, generator=gen), torch.randn(100, generator=gen)
    vq, vp = torch.rand(100, generator=gen) + 0.1, torch.rand(100, generator=gen) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mq, vq.sqrt()),
                                                 torch.distributions.Normal(mp, vp.sqrt()))
    torch.testing.assert_close(normal_kl(mq, vq, mp, vp), expected, rtol=1e-5, atol=1e-6)
    assert float(normal_kl(mq, vq, mq, vq).abs().max()) == 0  # equal distributions: exactly 0


@pytest.mark.parametrize("steps", [100, 1000])
def test_the_top_kl_is_negligible_for_the_schedule(steps):
    model = _model(ModelConfig(**{**CFG.to_dict(), "steps": steps}))
    x = torch.tensor([0.0, 1.0]).repeat_interleave(32).reshape(1, 1, 8, 8)  # the extreme pixel values
    terms = model.step_terms(x, torch.tensor([steps]), torch.zeros_like(x))
    assert -1e-5 < float(terms["kl_T"]) < 1e-3  # about 64 abar_T / 2 (1e-5, 1e-7), at float32's resolution


def test_the_one_sample_estimate_is_unbiased_and_forward_and_score_terms_use_it():
    model, x = _model(), _images(3)
    seed = 5
    gen = torch.Generator().manual_seed(seed)
    noises = [torch.randn(x.shape, generator=gen) for _ in range(CFG.steps)]  # elbo_terms_all_steps' draws
    with torch.no_grad():
        estimates = [model.estimate(x, torch.full((3,), t), noises[t - 1]) for t in range(1, CFG.steps + 1)]
    exact = model.elbo_terms_all_steps(x, generator=torch.Generator().manual_seed(seed))
    for key in ("recon", "kl"):
        mean = torch.stack([e[key] for e in estimates]).mean(0)  # t is uniform on 1..T
        torch.testing.assert_close(mean, exact[key], rtol=1e-5, atol=1e-4)
    assert (exact["recon"] > 0).all() and (exact["kl"] > 0).all()
    # score_terms draws t, then the noise, from its generator; forward from the global RNG
    gen = torch.Generator().manual_seed(1)
    t, noise = torch.randint(1, CFG.steps + 1, (3,), generator=gen), torch.randn(x.shape, generator=gen)
    scored = model.score_terms(x, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.estimate(x, t, noise)
        torch.manual_seed(2)
        out = model(x)
        torch.manual_seed(2)
        again = model.estimate(x, torch.randint(1, CFG.steps + 1, (3,)), torch.randn_like(x))
    assert set(scored) == {"recon", "kl"} and all(torch.equal(scored[k], expected[k]) for k in scored)
    assert all(torch.equal(out[k], again[k]) for k in ("recon", "kl", "objective"))


def test_an_exact_denoiser_of_a_one_image_data_set_has_no_kl_below_the_top(monkeypatch):
    """With x_0 fixed, the true noise is (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t): predicting it makes
    x0_hat = x_0, every KL of steps 2..T zero, reconstructions and samples the image itself."""
    model = _model(ModelConfig(**{**CFG.to_dict(), "steps": 20}))
    image = _images(1)
    x0 = 2 * image - 1
    table = model.table

    def exact(x_t, t):
        return (x_t - table["sqrt_ab"][t].view(-1, 1, 1, 1) * x0) / table["sqrt_1m_ab"][t].view(-1, 1, 1, 1)

    monkeypatch.setattr(model.denoiser, "forward", exact)
    x = image.repeat(4, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in range(2, 21):
            terms = model.step_terms(x, torch.full((4,), t), torch.randn(x.shape, generator=gen))
            assert float(terms["kl_t"].abs().max()) < 1e-4, t
            assert float(terms["eps_loss"].max()) < 1e-6, t
    elbo = model.elbo_terms_all_steps(x, generator=gen)
    torch.testing.assert_close(elbo["kl"], terms["kl_T"], rtol=0, atol=1e-3)
    p = x.clamp(PROB_MIN, 1 - PROB_MIN)
    torch.testing.assert_close(elbo["recon"], -bernoulli_log_likelihood(torch.logit(p), x), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(model.reconstruct(x), p, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.sample(4, torch.Generator().manual_seed(1)), p, rtol=0, atol=1e-5)


def test_samples_and_reconstructions_are_images_in_range_and_deterministic():
    model, x = _model(), _images(4)
    a = model.sample(6, torch.Generator().manual_seed(3))
    assert a.shape == (6, 1, 8, 8) and a.dtype == torch.float32 and 0 <= float(a.min()) <= float(a.max()) <= 1
    assert torch.equal(a, model.sample(6, torch.Generator().manual_seed(3)))
    r = model.reconstruct(x)
    assert r.shape == x.shape and 0 <= float(r.min()) <= float(r.max()) <= 1 and torch.equal(r, model.reconstruct(x))


def test_forward_under_bf16_autocast_gives_finite_float32_terms():
    model, x = _model().train(), _images(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert set(out) == {"recon", "kl", "objective"}
    for v in out.values():
        assert v.shape == (4,) and v.dtype == torch.float32 and torch.isfinite(v).all()
    out["objective"].mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_tiny_model_trains_through_the_loop_and_round_trips_through_build_model(tmp_path):
    data, test = ImageDataset((_images(96, 1) * 255).round().to(torch.uint8)), ImageDataset(
        (_images(32, 2) * 255).round().to(torch.uint8))
    tcfg = TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=0, log_every=1)
    result = train(CFG, tcfg, data, test, tmp_path / "run", device="cpu", progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses  # the objective, ||eps - eps_hat||^2, falls
    model = result.model
    rebuilt = build_model(CFG)
    rebuilt.load_state_dict(model.state_dict())
    assert set(model.state_dict()) == set(rebuilt.state_dict())  # the schedule is rebuilt from steps, not saved
    loaded = load_model(save_model(tmp_path / "saved", model, {}).parent)
    for m in (rebuilt, loaded):
        assert torch.equal(m.sample(3, torch.Generator().manual_seed(0)), model.sample(3, torch.Generator().manual_seed(0)))
    assert dataset_loss(loaded, test) == dataset_loss(model, test)


def test_the_static_graph_step_trains_exactly_as_the_eager_loop(tmp_path):
    """The CUDA-graph code path without capture (`graphs="static"`): forward draws t and the noise on the
    device inside the step, with no host sync, and gives the eager loop's weights bit for bit."""
    data = ImageDataset((_images(40, 3) * 255).round().to(torch.uint8))
    tcfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=1, log_every=1)
    static = train(CFG, tcfg, data, data, tmp_path / "static", device="cpu", progress=False, graphs="static")
    eager = train(CFG, tcfg, data, data, tmp_path / "eager", device="cpu", progress=False, graphs="off")
    assert [h["train_loss"] for h in static.history] == [h["train_loss"] for h in eager.history]
    for (name, a), b in zip(static.model.state_dict().items(), eager.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_config_must_describe_a_bernoulli_conv_model_with_an_even_embedding():
    for bad in ({"likelihood": "gaussian"}, {"arch": "mlp"}, {"latent_dim": 15}):
        with pytest.raises(ValueError):
            build_model(ModelConfig(**{**CFG.to_dict(), **bad}))


def test_the_2d_toy_learns_the_ring():
    out = train_toy("ring", steps=20, iterations=400, n=1000, seed=0)
    assert out["samples"].shape == (1000, 2)
    assert torch.equal(out["data"], toy_data(1000, "ring", torch.Generator().manual_seed(0)))
    off_ring = (out["samples"].norm(dim=1) - 0.8).abs().median()
    assert float(off_ring) < 0.25  # N(0, I), where sampling starts, has a median of 0.47
    assert sum(out["losses"][-50:]) < 0.8 * sum(out["losses"][:50])
    _, kept = toy_sample(out["model"], 20, 5, torch.Generator().manual_seed(0), keep=(20, 1))
    assert sorted(kept) == [1, 20] and kept[20].shape == (5, 2)

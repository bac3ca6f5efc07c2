"""A diffusion model as a hierarchical VAE whose encoder is fixed (Sohl-Dickstein et al. 2015, Ho et al. 2020).

The latents are ``x_1, ..., x_T``, each the size of the image. The *encoder* is not learned:
``q(x_t|x_{t-1}) = N(sqrt(1 - b_t) x_{t-1}, b_t I)`` adds a little noise at each step, so ``q(x_t|x_0) =
N(sqrt(abar_t) x_0, (1 - abar_t) I)`` with ``abar_t = prod_s (1 - b_s)``, and ``x_T`` is almost pure noise.
The *decoder* is the chain ``p(x_T) p(x_{T-1}|x_T) ... p(x|x_1)``, learned. The ELBO of any such model,

    -ELBO = E_q[-log p(x|x_1)] + sum_{t=2}^T E_q KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t))
            + KL(q(x_T|x_0) || N(0, I)),

splits here into one term per step, each in closed form (Kingma et al. 2021).

`schedule`, `coefficients`, `q_sample`, `posterior`, `predict_x0`, `normal_kl` and `ancestral_sample`
are the maths, shared by the image model `Diffusion` and the 2-D toy (`train_toy`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .losses import bernoulli_log_likelihood, gaussian_kl
from .models import ModelConfig, conv_sizes

MAX_BETA, COSINE_OFFSET = 0.999, 0.008  # Nichol & Dhariwal's clip (else b_T = 1) and s (keeps b_1 from ~0)
PROB_MIN = 1e-4  # p(x|x_1)'s probabilities live in [PROB_MIN, 1 - PROB_MIN]: log p stays finite
RECONSTRUCT_SEED = 0  # the noise of `Diffusion.reconstruct`, fixed so that it is deterministic
Table = dict[str, torch.Tensor]


def schedule(steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cosine noise schedule: ``(betas, alphas, alpha_bars)``, float64, each of length ``T + 1``; entry ``t``
    belongs to step ``t``, entry 0 to the clean data (``b_0 = 0``, ``abar_0 = 1``).

    Nichol & Dhariwal (2021) set ``abar_t = f(t) / f(0)``, ``f(t) = cos^2((t/T + s)/(1 + s) pi/2)``: the noise
    level a *fraction* ``t/T`` of the way is the same for every ``T``, so the small ``T`` a CPU needs only
    discretises the same path more coarsely, where Ho et al.'s linear 1e-4..0.02 was tuned for ``T = 1000``
    and must be rescaled ad hoc. It also destroys information more gently early on and ends at ``abar_T``
    near 0, so ``KL(q(x_T|x_0) || N(0, I))`` is negligible for any ``T``. The betas are clipped at `MAX_BETA`
    and ``abar`` is their running product, so the closed form is exactly the one-step Gaussians composed.
    """
    t = torch.arange(steps + 1, dtype=torch.float64)
    f = torch.cos((t / steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    betas = torch.cat([torch.zeros(1, dtype=torch.float64), (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)])
    return betas, 1 - betas, torch.cumprod(1 - betas, 0)


def coefficients(steps: int) -> Table:
    """Every number the formulas need, by step (index 0..T), in float64: ``sqrt_ab``, ``sqrt_1m_ab`` (``q(x_t|x_0)``'s
    mean factor and standard deviation) and the posterior ``q(x_{t-1}|x_t, x_0) = N(c0 x_0 + ct x_t, post_var)``:
    ``c0 = sqrt(abar_{t-1}) b_t / (1 - abar_t)``, ``ct = sqrt(1 - b_t) (1 - abar_{t-1}) / (1 - abar_t)``,
    ``post_var = (1 - abar_{t-1}) b_t / (1 - abar_t)`` (0 at ``t = 1``: ``x_0`` is then known)."""
    betas, alphas, ab = schedule(steps)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    one_m_ab = torch.where(torch.arange(steps + 1) == 0, 1.0, 1 - ab)  # entry 0 is never used; no 0/0
    return {"betas": betas, "alpha_bars": ab, "sqrt_ab": ab.sqrt(), "sqrt_1m_ab": (1 - ab).sqrt(),
            "c0": ab_prev.sqrt() * betas / one_m_ab, "ct": alphas.sqrt() * (1 - ab_prev) / one_m_ab,
            "post_var": (1 - ab_prev) * betas / one_m_ab}


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped to broadcast over ``like`` (one step per row): a gather, no host sync."""
    return values[t].reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, table: Table) -> torch.Tensor:
    """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``: a draw from ``q(x_t|x_0)`` for ``noise ~ N(0, I)``."""
    return _at(table["sqrt_ab"], t, x0) * x0 + _at(table["sqrt_1m_ab"], t, x0) * noise


def posterior(x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, table: Table) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``q(x_{t-1}|x_t, x_0)``, the Gaussian Bayes' rule gives (variance broadcastable)."""
    return _at(table["c0"], t, x0) * x0 + _at(table["ct"], t, x0) * x_t, _at(table["post_var"], t, x0)


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, table: Table) -> torch.Tensor:
    """``x_0`` from ``x_t`` and the noise in it: ``(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
    return (x_t - _at(table["sqrt_1m_ab"], t, x_t) * eps) / _at(table["sqrt_ab"], t, x_t)


def normal_kl(mean_q: torch.Tensor, var_q: torch.Tensor, mean_p: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean_q, var_q) || N(mean_p, var_p))`` elementwise, in closed form:
    ``(log(var_p / var_q) + (var_q + (mean_q - mean_p)^2) / var_p - 1) / 2``."""
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mean_q - mean_p).pow(2)) / var_p - 1)


def ancestral_sample(x0_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, table: Table,
                     draw: Callable[[], torch.Tensor], keep: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict]:
    """From ``x = x_T``: ``x_{t-1} = mu_tilde(x_t, x0_hat) + sqrt(beta_tilde_t) z`` for ``t = T..2``, with ``x0_hat
    = x0_of(x_t, t)`` and ``z = draw()``. Returns the last ``x0_hat`` and ``{t: x_t}`` for each ``t`` in ``keep``."""
    kept = {}
    for step in range(len(table["betas"]) - 1, 0, -1):
        kept.update({step: x} if step in keep else {})
        t = torch.full((len(x),), step, device=x.device)
        x0_hat = x0_of(x, t)
        if step > 1:
            mean, var = posterior(x, x0_hat, t, table)
            x = mean + var.sqrt() * draw()
    return x0_hat, kept


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the step (Vaswani et al. 2017): ``sin`` and ``cos`` of ``t`` at ``dim / 2``
    geometrically spaced frequencies, so the network can tell nearby steps apart at every scale."""
    args = t.float()[:, None] * torch.exp(-math.log(10_000) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    return torch.cat([args.sin(), args.cos()], 1)


class _Block(nn.Module):
    """A residual block: (GroupNorm, SiLU, 3x3 conv) twice, the time embedding added to the feature maps
    after the first conv, and a 1x1 conv on the skip path when the width changes."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(math.gcd(c_in, 8), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(math.gcd(c_out, 8), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h))) + self.time(emb)[:, :, None, None]
        return self.skip(h) + self.conv2(F.silu(self.norm2(out)))


class UNet(nn.Module):
    """A small U-Net that predicts the noise in ``x_t``: ``(x_t, t) -> eps_hat``, same shape as ``x_t``.

    A 3x3 stem to ``channels[0]``, then, as in `vaebook.models.ConvEncoder`, a stride-2 conv per entry of
    ``channels`` (28 -> 14 -> 7 for ``(32, 64)``), each followed by a `_Block`. On the way up a transposed conv
    restores each size exactly and a `_Block` reads it concatenated with the skip saved at that size; at full
    size the stem's features are added back and a conv gives ``eps_hat``. No block works at full size: a 3x3
    conv there costs as much as all the rest, and this network must train on two CPU cores.
    """

    def __init__(self, in_shape: tuple[int, int, int], channels: tuple[int, ...], emb_dim: int) -> None:
        super().__init__()
        (c, h, w), widths, n, self.emb_dim = in_shape, (channels[0], *channels), len(channels), emb_dim
        sizes = conv_sizes(h, w, n)
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(c, widths[0], 3, padding=1)
        self.downs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(n))
        self.down_blocks = nn.ModuleList(_Block(widths[i + 1], widths[i + 1], emb_dim) for i in range(n))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 3, stride=2, padding=1,
                                                    output_padding=(1 - sizes[i][0] % 2, 1 - sizes[i][1] % 2))
                                 for i in range(n))
        self.up_blocks = nn.ModuleList(_Block(2 * widths[i], widths[i], emb_dim) for i in range(1, n))
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(widths[0], c, 3, padding=1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim))
        skips = [h := self.stem(x_t)]  # the features of each size, full size first
        for down, block in zip(self.downs, self.down_blocks):
            h = block(down(h), emb)
            skips.append(h)
        for i in reversed(range(len(self.ups))):  # from the bottom (7x7 for 28x28 images) up
            h = self.ups[i](h)
            h = self.up_blocks[i - 1](torch.cat([h, skips[i]], 1), emb) if i > 0 else h + skips[0]
        return self.out(h)


class Diffusion(nn.Module):
    """A denoising diffusion model on images in [0, 1] (kind ``"diffusion"``), scored as a hierarchical VAE.

    The chain runs on ``x_0 = 2x - 1``. A `UNet` predicts the noise ``eps_hat(x_t, t)``, hence ``x0_hat =
    (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)`` clamped to [-1, 1], and the reverse step
    ``p(x_{t-1}|x_t) = N(mu_tilde(x_t, x0_hat), beta_tilde_t I)`` is the posterior with ``x0_hat`` for the
    unknown ``x_0``. Its variance is the posterior's, so each KL is a squared distance of means,
    ``||mu_tilde(x_t, x_0) - mu_tilde(x_t, x0_hat)||^2 / (2 beta_tilde_t)``. At the bottom ``p(x|x_1)`` is
    Bernoulli with probabilities ``(x0_hat(x_1) + 1) / 2`` (in [`PROB_MIN`, 1 - `PROB_MIN`]): not Ho et al.'s
    discretised Gaussian, but the likelihood of every Fashion-MNIST model of the book, so ``recon`` and the
    negative ELBO are in the same nats and the model takes its place in the same table. ``p(x_T) = N(0, I)``.

    Config: ``steps`` is ``T``; ``channels`` the U-Net's widths (``arch="conv"``); ``latent_dim`` the (even)
    width of the time embedding, the latents being ``T`` copies of the image's shape; ``likelihood="bernoulli"``;
    the rest is unused. The schedule's coefficients are buffers rebuilt from ``steps``, not saved.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "conv" or config.likelihood != "bernoulli" or config.latent_dim % 2:
            raise ValueError("a diffusion model needs arch='conv', likelihood='bernoulli', an even latent_dim")
        self.config, self.steps = config, config.steps
        for name, value in coefficients(config.steps).items():
            self.register_buffer(name, value.float(), persistent=False)
        self.denoiser = UNet(config.in_shape, config.channels, config.latent_dim)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def table(self) -> Table:
        """The schedule's `coefficients`, as this model's float32 buffers."""
        return {k: v for k, v in self.named_buffers() if "." not in k}

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps_hat, x0_hat)`` for ``x_t`` at steps ``t``, in float32 whatever autocast ran the U-Net in."""
        eps = self.denoiser(x_t, t).float()
        return eps, predict_x0(x_t, eps, t, self.table).clamp(-1, 1)

    @staticmethod
    def probabilities(x0_hat: torch.Tensor) -> torch.Tensor:
        """``p(x|x_1)``'s Bernoulli probabilities (also its mean): ``(x0_hat + 1) / 2``, kept off 0 and 1."""
        return ((x0_hat + 1) / 2).clamp(PROB_MIN, 1 - PROB_MIN)

    def step_terms(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image ``(N,)`` float32 terms at steps ``t`` (one per image), ``x_t`` drawn with ``noise``:
        ``nll_1 = -log p(x|x_1)`` (used at ``t = 1``), ``kl_t`` (the KL of step ``t >= 2``), ``kl_T =
        KL(q(x_T|x_0) || N(0, I))`` and ``eps_loss = ||noise - eps_hat||^2``. Both step terms are computed
        for every image and the caller picks with ``torch.where``, never branching on values. At ``t = 1``
        the posterior is a point mass (variance 0); its KL, discarded, uses ``b_1`` only to stay finite.
        """
        x, table = x.float(), self.table
        x0 = 2 * x - 1
        eps, x0_hat = self.denoise(x_t := q_sample(x0, t, noise, table), t)
        nll_1 = -bernoulli_log_likelihood(torch.logit(self.probabilities(x0_hat)), x)
        (mean_q, var), (mean_p, _) = posterior(x_t, x0, t, table), posterior(x_t, x0_hat, t, table)
        var = torch.where(t > 1, var.flatten(), table["betas"][t]).reshape(var.shape)
        kl_t = normal_kl(mean_q, var, mean_p, var).flatten(1).sum(1)
        mean_T = table["sqrt_ab"][self.steps] * x0  # q(x_T|x_0) = N(mean_T, (1 - abar_T) I)
        logvar_T = (1 - table["alpha_bars"][self.steps]).log().expand_as(mean_T)
        kl_T = gaussian_kl(mean_T.flatten(1), logvar_T.flatten(1))
        return {"nll_1": nll_1, "kl_t": kl_t, "kl_T": kl_T, "eps_loss": (noise - eps).pow(2).flatten(1).sum(1)}

    def estimate(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """The one-sample estimate at steps ``t`` drawn uniformly from 1..T: ``recon = T 1[t=1] nll_1``,
        ``kl = T 1[t>1] kl_t + kl_T``. Its mean over ``t`` is the negative ELBO's two parts exactly."""
        terms, T = self.step_terms(x, t, noise), float(self.steps)
        zero = torch.zeros_like(terms["nll_1"])
        return {"recon": T * torch.where(t == 1, terms["nll_1"], zero),
                "kl": T * torch.where(t > 1, terms["kl_t"], zero) + terms["kl_T"], "objective": terms["eps_loss"]}

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training: one ``t`` per image and its noise from the global RNG on the device (graph-safe).

        ``objective`` is Ho et al.'s ``L_simple``, the unweighted ``||eps - eps_hat||^2``. The ELBO's KL of
        step ``t`` is the same error times ``w_t = b_t / (2 (1 - b_t) (1 - abar_{t-1}))`` (before clamping),
        which varies by more than an order of magnitude (``T = 100``: 0.89 at ``t = 2``, 0.03 at 50, rising again
        over the last few steps, where the clamp bounds the error). Weighting every step alike moves weight,
        relatively, from the nearly clean steps, whose imperceptible detail the ELBO prizes, to the harder
        denoising of noisier steps, which shapes the image: a worse ELBO, better samples (Ho et al. 2020,
        sec. 3.4). ``recon`` and ``kl`` still report the ELBO, unbiased, as for every model of the book.
        """
        t = torch.randint(1, self.steps + 1, (x.shape[0],), device=x.device)
        return self.estimate(x, t, torch.randn_like(x, dtype=torch.float32))

    def _draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """``N(0, I)`` noise drawn on the CPU (from ``generator`` when given), moved to the model's device."""
        return torch.randn(shape, generator=generator, device="cpu").to(self.device)

    @torch.no_grad()
    def score_terms(self, x: torch.Tensor, y: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """`estimate` with ``t`` then the noise drawn from ``generator`` (CPU): the same numbers on every device."""
        t = torch.randint(1, self.steps + 1, (x.shape[0],), generator=generator, device="cpu").to(self.device)
        return {k: v for k, v in self.estimate(x, t, self._draw(tuple(x.shape), generator)).items() if k != "objective"}

    @torch.no_grad()
    def elbo_terms_all_steps(self, x: torch.Tensor,
                             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The negative ELBO with every step evaluated (``T`` U-Net passes): ``recon = nll_1`` and
        ``kl = sum_{t>=2} kl_t + kl_T`` per image, the low-variance numbers for an evaluation table.
        The noise of step ``t`` is the ``t``-th draw of ``x``'s shape from ``generator``."""
        terms = [self.step_terms(x, torch.full((len(x),), t, device=x.device), self._draw(tuple(x.shape), generator))
                 for t in range(1, self.steps + 1)]
        return {"recon": terms[0]["nll_1"], "kl": sum(s["kl_t"] for s in terms[1:]) + terms[0]["kl_T"]}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of ``p(x|x_1)`` for ``x_1 ~ q(x_1|x)``, its noise from a generator seeded with
        `RECONSTRUCT_SEED` (deterministic): how much of the image survives the first step."""
        t = torch.ones(len(x), dtype=torch.long, device=x.device)
        noise = self._draw(tuple(x.shape), torch.Generator().manual_seed(RECONSTRUCT_SEED))
        return self.probabilities(self.denoise(q_sample(2 * x.float() - 1, t, noise, self.table), t)[1])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling: ``x_T ~ N(0, I)``, then ``x_{t-1} ~ p(x_{t-1}|x_t)`` for ``t = T..2``
        (noise from ``generator``), and the mean of ``p(x|x_1)``, in [0, 1]."""
        shape = (n, *self.config.in_shape)
        x0_hat, _ = ancestral_sample(lambda x_t, t: self.denoise(x_t, t)[1], self._draw(shape, generator), self.table,
                                     lambda: self._draw(shape, generator))
        return self.probabilities(x0_hat)


@torch.no_grad()
def diffusion_numbers(model: Diffusion, test, n: int = 500, seed: int = 0) -> dict:
    """The negative ELBO of `Diffusion.elbo_terms_all_steps` (same noise) on the first ``n`` images of the data
    set ``test``, means per image, with where its nats go: per step ``t = 1..T``, the KL of step ``t`` (None at
    ``t = 1``, whose term is ``recon``) and the noise-prediction error ``||eps - eps_hat||^2`` behind it."""
    model.eval()
    n = min(n, len(test))
    x, gen = (test.images[:n].float() / 255).to(model.device), torch.Generator().manual_seed(seed)
    terms = [model.step_terms(x, torch.full((n,), t, device=x.device), model._draw(tuple(x.shape), gen))
             for t in range(1, model.steps + 1)]
    kl_t = [None] + [float(s["kl_t"].double().mean()) for s in terms[1:]]
    recon, kl_prior = float(terms[0]["nll_1"].double().mean()), float(terms[0]["kl_T"].double().mean())
    kl = sum(kl_t[1:]) + kl_prior
    return {"steps": model.steps, "images": n, "seed": seed, "neg_elbo": recon + kl,
            "recon": recon, "kl": kl, "kl_prior": kl_prior, "kl_t": kl_t,
            "eps_loss_t": [float(s["eps_loss"].double().mean()) for s in terms]}


# --------------------------------------------------------------------------- a 2-D toy for the chapter


def toy_data(n: int, kind: str = "moons", generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` points of a 2-D cloud inside about [-0.9, 0.9]^2 (so the [-1, 1] clamp of `toy_sample` never
    bites): ``"moons"`` (two interleaved half circles) or ``"ring"`` (radius 0.8), Gaussian jitter 0.05."""
    if kind not in ("moons", "ring"):
        raise ValueError(f"kind must be 'moons' or 'ring', not {kind!r}")
    angle = torch.rand(n, generator=generator) * (2 * math.pi if kind == "ring" else math.pi)
    points = 0.8 * torch.stack([angle.cos(), angle.sin()], 1)
    if kind == "moons":  # the lower moon is the upper one turned over and shifted by (1, 0.5)
        lower = (torch.rand(n, generator=generator) < 0.5)[:, None]
        points = torch.where(lower, torch.tensor([1.0, 0.5]) - points / 0.8, points / 0.8)
        points = (points - torch.tensor([0.5, 0.25])) / 1.7
    return points + 0.05 * torch.randn(n, 2, generator=generator)


class ToyDenoiser(nn.Module):
    """An MLP ``(x_t, embedding of t) -> eps_hat`` for 2-D points: three hidden layers of ``width`` SiLUs."""

    def __init__(self, width: int = 128, emb_dim: int = 32) -> None:
        super().__init__()
        self.emb_dim, hidden = emb_dim, [nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)]
        self.net = nn.Sequential(nn.Linear(2 + emb_dim, width), *hidden, nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_t, timestep_embedding(t, self.emb_dim)], 1))


@torch.no_grad()
def toy_sample(model: ToyDenoiser, steps: int, n: int, generator: torch.Generator | None = None,
               keep: tuple[int, ...] = ()) -> tuple[torch.Tensor, Table]:
    """`ancestral_sample` of ``n`` points from ``x_T ~ N(0, I)``, ``x0_hat`` clamped to [-1, 1] as for images:
    the points (the last ``x0_hat``) and ``{t: x_t}`` for each ``t`` in ``keep``."""
    table = {k: v.float() for k, v in coefficients(steps).items()}
    return ancestral_sample(lambda x_t, t: predict_x0(x_t, model(x_t, t), t, table).clamp(-1, 1),
                            torch.randn(n, 2, generator=generator), table,
                            lambda: torch.randn(n, 2, generator=generator), keep)


def train_toy(kind: str = "moons", steps: int = 50, iterations: int = 3000, n: int = 2000, batch_size: int = 256,
              lr: float = 1e-2, seed: int = 0) -> dict[str, object]:
    """Train a `ToyDenoiser` on ``n`` points of `toy_data` with ``L_simple`` (Adam, ``lr`` decayed linearly to 0,
    which sharpens the samples), in seconds. Returns ``data``, ``samples`` (``n`` points from `toy_sample`),
    ``losses`` (the mean ``||eps - eps_hat||^2`` of each iteration) and ``model``."""
    gen, _ = torch.Generator().manual_seed(seed), torch.manual_seed(seed)  # data and noise; initial weights
    data, table = toy_data(n, kind, gen), {k: v.float() for k, v in coefficients(steps).items()}
    model, losses = ToyDenoiser(), []
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / iterations)
    for _ in range(iterations):
        x0 = data[torch.randint(0, n, (batch_size,), generator=gen)]
        t, noise = torch.randint(1, steps + 1, (batch_size,), generator=gen), torch.randn(x0.shape, generator=gen)
        loss = (noise - model(q_sample(x0, t, noise, table), t)).pow(2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
        losses.append(loss.item())
    model.eval()
    return {"data": data, "samples": toy_sample(model, steps, n, gen)[0], "losses": losses, "model": model}

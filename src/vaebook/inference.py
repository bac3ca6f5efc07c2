"""Inference suboptimality: how much of the ELBO's shortfall is the encoder's fault.

For an image ``x`` the shortfall of the encoder's bound splits in two (Cremer, Li &
Duvenaud, 2018):

    log p(x) - ELBO(q_enc) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_enc)],

with ``q*`` the best diagonal Gaussian ``q(z|x)`` for this one image. The first bracket,
the *approximation gap*, is what a diagonal Gaussian cannot express about the true
posterior, ``KL(q* || p(z|x))``; no encoder of this family can close it. The second, the
*amortisation gap*, is the price of predicting ``q`` for all images with one network:
it is at least 0 because ``q*`` is the best of the family, the encoder's output included.

`optimise_posterior` finds ``q*`` by gradient ascent on each image's own ``(mu, logvar)``,
starting from the encoder's output, with the decoder frozen; `elbo_of` scores a ``q``
with many samples; `inference_gaps` measures both gaps, with the package's IWAE estimate
(`vaebook.evaluate.log_likelihood_estimate`) standing in for ``log p(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .evaluate import full_float32, log_likelihood_estimate
from .losses import elbo_terms
from .models import VAE


def _elbo(model: VAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, samples: int,
          generator: torch.Generator | None) -> torch.Tensor:
    """Reparameterised ELBO per image, averaged over ``samples`` draws of ``z`` (differentiable in mu, logvar)."""
    n = len(x)
    mu_s, logvar_s = mu.repeat(samples, 1), logvar.repeat(samples, 1)  # (samples * n, d), sample-major
    z = model.reparameterise(mu_s, logvar_s, generator=generator)
    x_s = x.repeat(samples, *([1] * (x.dim() - 1)))
    cfg = model.config
    terms = elbo_terms({**model.decode_params(z), "mu": mu_s, "logvar": logvar_s}, x_s, cfg.likelihood, cfg.sigma)
    return -(terms["recon"] + terms["kl"]).view(samples, n).mean(0)


@full_float32()
@torch.no_grad()
def elbo_of(model: VAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, samples: int = 100,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte Carlo ELBO of ``q(z|x) = N(mu, diag(exp(logvar)))`` per image, from ``samples`` draws, on the CPU.

    The KL term is exact; only ``E_q[log p(x|z)]`` is sampled, so many samples make the
    score of a ``q`` precise enough to compare two ``q`` of the same image.
    """
    model.eval()
    return _elbo(model, x, mu, logvar, samples, generator).double().cpu()


@full_float32()
def optimise_posterior(model: VAE, x: torch.Tensor, steps: int = 300, lr: float = 0.01, samples: int = 1,
                       generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's best diagonal Gaussian ``q*(z|x)``, by Adam on its own ``(mu, logvar)``.

    Starts from the encoder's output and maximises the reparameterised ELBO estimate with
    ``samples`` draws of ``z`` per image and step, the estimate training uses. The learning
    rate decays linearly from ``lr`` to 0, so that the noise of the gradients averages out
    at the end instead of leaving ``q`` jittering around its optimum. Images do not
    interact (the loss is a sum over images and Adam works per coordinate), and the model
    is frozen: in eval mode, and gradients are taken with respect to ``mu`` and ``logvar``
    only, so no parameter's ``.grad`` is touched.

    Returns:
        ``(mu, logvar)``, detached, and ``history``: the mean ELBO estimate over the batch
        at the start of each step (``steps`` values, the first one the encoder's).
    """
    model.eval()
    with torch.no_grad():
        mu0, logvar0 = model.encode(x)
    mu, logvar = mu0.clone().requires_grad_(True), logvar0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([mu, logvar], lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1 - step / max(steps, 1))
    history = torch.empty(steps, dtype=torch.float64)
    with torch.enable_grad():
        for step in range(steps):
            elbo = _elbo(model, x, mu, logvar, samples, generator)
            mu.grad, logvar.grad = torch.autograd.grad(-elbo.sum(), (mu, logvar))
            optimiser.step()
            decay.step()
            history[step] = elbo.detach().double().mean().cpu()
    return mu.detach(), logvar.detach(), history


@dataclass(frozen=True)
class InferenceGaps:
    """Means over a batch of images, in nats per image; ``history`` as in `optimise_posterior`."""

    encoder_elbo: float
    optimised_elbo: float
    log_px: float
    approximation_gap: float
    amortisation_gap: float
    history: torch.Tensor

    def row(self, name: str) -> str:
        """One line of a plain-text table (see `table_header`)."""
        return (f"{name:<16}{self.encoder_elbo:>9.1f}{self.optimised_elbo:>11.1f}{self.log_px:>9.1f}"
                f"{self.approximation_gap:>9.1f}{self.amortisation_gap:>9.1f}")


def table_header() -> str:
    """The column heads of `InferenceGaps.row`: 63 characters wide."""
    return f"{'model':<16}{'ELBO enc':>9}{'ELBO opt':>11}{'log p(x)':>9}{'approx':>9}{'amort':>9}"


def inference_gaps(model: VAE, x: torch.Tensor, k: int = 1000, steps: int = 300, lr: float = 0.01,
                   samples: int = 1, eval_samples: int = 100, seed: int = 0) -> InferenceGaps:
    """The approximation and amortisation gaps of a VAE on images ``x`` (floats, the model's dtype).

    The encoder's ``q`` and the optimised ``q*`` (`optimise_posterior` with ``steps``,
    ``lr``, ``samples``) are scored by `elbo_of` with ``eval_samples`` fresh draws, so
    neither is favoured by the noise ``q*`` was fitted to, and with the same draws of
    ``eps`` for both (common random numbers), so their difference is less noisy than
    either. ``log p(x)`` is the IWAE estimate with ``k`` samples from the encoder, a lower
    bound in expectation, which makes the approximation gap too small; a ``q*`` short of
    the optimum moves its shortfall from the amortisation gap to the approximation gap.
    """
    with torch.no_grad():
        mu_enc, logvar_enc = model.eval().encode(x)
    mu, logvar, history = optimise_posterior(model, x, steps, lr, samples, torch.Generator().manual_seed(seed))
    enc, opt = (elbo_of(model, x, m, lv, eval_samples, torch.Generator().manual_seed(seed + 1)).mean().item()
                for m, lv in ((mu_enc, logvar_enc), (mu, logvar)))
    log_px = log_likelihood_estimate(model, x, k, generator=torch.Generator().manual_seed(seed + 2)).mean().item()
    return InferenceGaps(enc, opt, log_px, log_px - opt, opt - enc, history)

"""Adam's three CPU implementations on the reference VAE's step: what the fused kernel would buy.

    python benchmarks/cpu_adam.py

Times one training step (batch of 128, forward, loss, backward, Adam) of the
reference MLP VAE with Adam's default on the CPU (the single-tensor loop, which
vaebook uses), the ``foreach`` one and the fused kernel (``fused=True``, torch >= 2.4),
interleaved, best of six rounds of 100 steps each; then trains each for 200 steps
from the same seed, alone, and says whether it gives the default's weights bit for bit.
"""

from __future__ import annotations

import time

import torch

from vaebook.data import fashion_mnist, to_float
from vaebook.experiments import get
from vaebook.losses import loss_terms
from vaebook.models import build_model


def main() -> None:
    cfg = get("fmnist-mlp-vae").model
    images = fashion_mnist("train", download=False).images
    kinds = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}

    def make(flags: dict):
        torch.manual_seed(0)
        model = build_model(cfg)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **flags)

        def step(i: int) -> None:
            x = to_float(images[i * 128:(i + 1) * 128])
            terms = loss_terms(model(x), x, cfg.likelihood, cfg.sigma)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()

        return model, step

    steps = {name: make(flags)[1] for name, flags in kinds.items()}
    best = dict.fromkeys(kinds, float("inf"))
    for _ in range(6):  # interleaved, so that a noisy machine slows all three alike
        for name, step in steps.items():
            t0 = time.perf_counter()
            for i in range(100):
                step(i)
            best[name] = min(best[name], (time.perf_counter() - t0) / 100)
    weights = {}
    for name, flags in kinds.items():  # alone from the same seed: the VAE's noise comes from the global RNG
        model, step = make(flags)
        for i in range(200):
            step(i)
        weights[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in kinds:
        print(f"{name:>8}: {best[name] * 1e3:.2f} ms/step; the default's weights bit for bit after 200 steps: "
              f"{torch.equal(weights[name], weights['default'])}")


if __name__ == "__main__":
    main()

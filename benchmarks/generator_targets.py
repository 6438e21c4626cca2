"""The generator's targets on its source archive, measured in one run and printed side by side.

Runs the evaluation protocol (:func:`training.distill.evaluation.evaluate_generator`) twice on
the same test set and reset keys, with DDIM (100 steps) and with the probability-flow ODE
sampler (Heun, 2 denoiser evaluations per step plus a last one: 9 steps = 19 evaluations),
times the sampling of 1000 policies (after compilation), and prints each figure next to
its target with PASS / FAIL::

    python benchmarks/generator_targets.py                       # the bundled pair
    python benchmarks/generator_targets.py --generator runs/gen --archive runs/archive \\
        --out runs/gen-eval                                      # also writes the PNGs

Targets (issue 4, the bundled walker2d-uni archive on a 2-core CPU): reward ratio >= 0.95,
reconstructed coverage >= 90% of the original's, JS divergence <= 0.05, ODE (<= 20 denoiser
evaluations) within 0.02 of DDIM-100's reward ratio, 1000 policies sampled in seconds.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from training.distill.evaluation import (  # noqa: E402
    archive_sample_fn,
    evaluate_generator,
    format_metrics,
)

SAMPLING_SECONDS = 30.0
"""Upper bound read as "seconds, not minutes" for sampling 1000 policies."""


def sampling_time(
    generator: Any, n: int, sampler: str, steps: int, seed: int
) -> tuple[float, float]:
    """``(first call, second call)`` seconds to sample ``n`` policies for random measures."""
    low = np.asarray(generator.descriptor_low, np.float32)
    high = np.asarray(generator.descriptor_high, np.float32)
    rng = np.random.default_rng(seed)
    measures = low + (high - low) * rng.uniform(size=(n, low.size)).astype(np.float32)
    times = []
    for i in range(2):
        start = time.perf_counter()
        policies = generator.sample(
            jax.random.key(seed + i), measures, sampler=sampler, steps=steps
        )
        jax.block_until_ready(policies)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def vae_only_sample_fn(generator: Any, archive: Any) -> Any:
    """``sample_fn`` decoding the VAE's posterior mean of the elite nearest to each request:
    the generator without its diffusion model (where the VAE alone loses fidelity)."""
    cells = archive.elite_indices()
    descriptors = np.asarray(archive.archive.descriptors)[cells]
    latents = generator.encode(archive.genomes(cells))

    def sample_fn(key: Any, measures: Any) -> Any:
        distance = ((np.asarray(measures)[:, None, :] - descriptors[None]) ** 2).sum(-1)
        return generator.decode(latents[distance.argmin(axis=1)])

    return sample_fn


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="walker2d-uni-ldm")
    parser.add_argument("--archive", default="walker2d-uni-map-elites")
    parser.add_argument("--ddim-steps", type=int, default=100)
    parser.add_argument(
        "--ode-steps", type=int, default=9, help="Heun steps (9: 19 denoiser evaluations)"
    )
    parser.add_argument("--samples", type=int, default=1000, help="policies in the timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="directory for the DDIM run's PNGs")
    parser.add_argument(
        "--noise",
        type=float,
        nargs="*",
        default=[0.0, 1e-4, 1e-3, 1e-2],
        help="the archive's own elites with Gaussian parameter noise of these fractions of "
        "the archive's per-parameter spread, under the same protocol (the ceiling a "
        "generator with that reconstruction error can reach)",
    )
    args = parser.parse_args(argv)

    import zoo
    from zoo.generator import load_generator

    print(f"devices: {jax.devices()}  cpus: {os.cpu_count()}")
    generator = load_generator(args.generator)
    archive = zoo.load_archive(args.archive)
    key = jax.random.key(args.seed)
    runs = {}
    for name, sampler, steps, out in (
        (f"ddim-{args.ddim_steps}", "ddim", args.ddim_steps, args.out),
        (f"ode-{args.ode_steps}", "ode", args.ode_steps, None),
    ):
        start = time.perf_counter()
        runs[name] = evaluate_generator(
            generator, archive, key, sampler=sampler, steps=steps, out_dir=out
        )
        print(f"\n== {name} ({time.perf_counter() - start:.1f} s)")
        print(format_metrics(runs[name]))
    timings = {
        name: sampling_time(generator, args.samples, sampler, steps, args.seed)
        for name, sampler, steps in (
            (f"ddim-{args.ddim_steps}", "ddim", args.ddim_steps),
            (f"ode-{args.ode_steps}", "ode", args.ode_steps),
        )
    }

    ceiling = {
        noise: evaluate_generator(archive_sample_fn(archive.archive, noise), archive, key)
        for noise in args.noise
    }
    vae_only = evaluate_generator(vae_only_sample_fn(generator, archive), archive, key)
    ddim, ode = runs[f"ddim-{args.ddim_steps}"], runs[f"ode-{args.ode_steps}"]

    def get(m: dict[str, Any], name: str) -> float | None:
        value = m.get(name)
        return None if value is None else float(value)

    gap = (
        None
        if get(ddim, "reward_ratio") is None or get(ode, "reward_ratio") is None
        else abs(ddim["reward_ratio"] - ode["reward_ratio"])
    )
    ddim_name, ode_name = f"ddim-{args.ddim_steps}", f"ode-{args.ode_steps}"
    rows: list[tuple[str, str, float | None, float | None, bool | None, bool | None]] = []

    def row(label: str, target: str, metric: str, ok: Any) -> None:
        a, b = get(ddim, metric), get(ode, metric)
        rows.append(
            (label, target, a, b, None if a is None else ok(a), None if b is None else ok(b))
        )

    row("reward ratio", ">= 0.95", "reward_ratio", lambda v: v >= 0.95)
    row("coverage / original", ">= 0.90", "coverage_ratio", lambda v: v >= 0.90)
    row("JS divergence", "<= 0.05", "js_divergence", lambda v: v <= 0.05)
    row("QD score / original", "(report)", "qd_score_ratio", lambda v: None)
    row("MEM", "(report)", "mem", lambda v: None)
    row("compression ratio", "(report)", "compression_ratio", lambda v: None)

    print(f"\n{args.generator} on {args.archive}, {archive.archive.elite_indices().size} elites")
    print(f"{'figure':<28} {'target':>9} {ddim_name:>12} {'':>5} {ode_name:>12} {'':>5}")
    show = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for label, target, a, b, ok_a, ok_b in rows:
        print(
            f"{label:<28} {target:>9} {show(a):>12} {verdict(ok_a):>5} {show(b):>12} "
            f"{verdict(ok_b):>5}"
        )
    print(
        f"{'|reward ratio ODE - DDIM|':<28} {'<= 0.02':>9} {'':>12} {'':>5} {show(gap):>12} "
        f"{verdict(None if gap is None else gap <= 0.02):>5}"
    )
    label = f"sample {args.samples} policies (s)"
    first_a, second_a = timings[ddim_name]
    first_b, second_b = timings[ode_name]
    print(
        f"{label:<28} {'seconds':>9} {second_a:>12.3f} {verdict(second_a <= SAMPLING_SECONDS):>5} "
        f"{second_b:>12.3f} {verdict(second_b <= SAMPLING_SECONDS):>5}"
    )
    print(f"{'  first call, with compile':<28} {'':>9} {first_a:>12.2f} {'':>5} {first_b:>12.2f}")
    print(
        "\nthe archive's own elites + parameter noise (fraction of the per-parameter spread "
        "over the elites), and the VAE alone, same protocol:"
    )
    print(f"{'noise':>8} {'reward ratio':>13} {'coverage / original':>20} {'JS':>8} {'MEM':>8}")
    lines = [(f"{noise:>8.0e}", m, "") for noise, m in ceiling.items()]
    lines.append((f"{'VAE only':>8}", vae_only, "   (elites encoded and decoded: no diffusion)"))
    for label, m, comment in lines:
        print(
            f"{label} {m['reward_ratio']:>13.4f} {m['coverage_ratio']:>20.4f} "
            f"{m['js_divergence']:>8.4f} {m['mem']:>8.4f}{comment}"
        )
    vae = generator.config.get("training", {}).get("final", {}).get("vae", {})
    if "normalised_error" in vae and generator.config["vae"].get("archive_normalisation"):
        print(
            f"the VAE's RMS reconstruction error is {math.sqrt(vae['normalised_error']):.4f} of "
            "that spread"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

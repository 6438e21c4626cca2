"""QDax 0.5 MAP-Elites or PGA-ME throughput on walker2d feet-contact (``walker2d_uni``).

Reference point for qdzoo's own benchmarks (``map_elites_throughput.py``, ``pg_scaling.py``).
This script runs in the separate QDax environment created by ``benchmarks/setup_qdax_env.sh``
and imports nothing from qdzoo::

    benchmarks/setup_qdax_env.sh
    JAX_PLATFORMS=cpu .venv-qdax/bin/python benchmarks/qdax_reference.py --json

Setup (mirrors QDax's MAP-Elites example):

* env: ``qdax.tasks.brax.v2.create("walker2d_uni", episode_length=...,
  backend="spring")``; QDax 0.5 forwards ``backend`` to the brax env constructor
  (its default is already "spring") and builds the env with ``debug=True`` so the
  feet-contact descriptor is available.
* policy: QDax ``MLP`` with hidden layers (64, 64), tanh hidden activation, tanh output,
  lecun-uniform init.
* scoring: ``create_brax_scoring_fn(..., deterministic=True)``, i.e. QDax's
  ``scoring_function_brax_envs`` with a reset function that returns one fixed initial
  state (drawn once from ``--seed``) for every episode.
* emitter (``--algo map-elites``): ``MixingEmitter`` with ``isoline_variation`` (iso_sigma
  0.005, line_sigma 0.05), variation_percentage 1.0.
* emitter (``--algo pga-me``): ``PGAMEEmitter`` with QDax's ``PGAMEConfig`` defaults (half
  Iso+LineDD, half policy gradient; 300 critic steps, 100 PG steps, minibatch 256, policy lr
  1e-3, replay buffer 1M), overridable with ``--critic-steps``, ``--pg-steps`` and
  ``--transition-batch`` to match a qdzoo run.
* archive: CVT, ``--cells`` centroids from 50,000 uniform samples in [0, 1]^2, computed
  once before anything is timed.
* metrics: ``default_qd_metrics`` with QDax's walker2d_uni reward offset
  (1.413 per step) times the episode length.

Timing: ``jax.jit(map_elites.update)`` is compiled and run for ``--warmup``
iterations (not timed), then ``--iterations`` updates are dispatched back to back and
the clock stops after ``jax.block_until_ready`` on the final state. Throughput is
``iterations * batch_size / elapsed`` evaluations per second; each evaluation is a
full ``episode_length``-step rollout (brax's unroll does not stop at termination).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
import types
from importlib.metadata import version

import jax
import jax.numpy as jnp


def _stub_brax_v1() -> None:
    """QDax 0.5's PGA-ME emitter imports ``QDEnv`` from ``qdax.tasks.brax.v1`` only as a type
    hint, and that package needs ``brax.v1``, which Brax 0.14 no longer ships. Register an
    empty stand-in for that one module so that the emitter imports; nothing of it runs."""
    name = "qdax.tasks.brax.v1.envs.base_env"
    for part in ("qdax.tasks.brax.v1", "qdax.tasks.brax.v1.envs", name):
        sys.modules.setdefault(part, types.ModuleType(part))
    sys.modules[name].QDEnv = object  # type: ignore[attr-defined]


_stub_brax_v1()

# mujoco (imported by brax) prints "Failed to import warp" to stdout; keep stdout for
# the result so that --json output is exactly one line.
with contextlib.redirect_stdout(sys.stderr):
    import qdax.tasks.brax.v2 as environments
    from qdax.core.containers.mapelites_repertoire import compute_cvt_centroids
    from qdax.core.emitters.mutation_operators import isoline_variation
    from qdax.core.emitters.pga_me_emitter import PGAMEConfig, PGAMEEmitter
    from qdax.core.emitters.standard_emitters import MixingEmitter
    from qdax.core.map_elites import MAPElites
    from qdax.core.neuroevolution.networks.networks import MLP
    from qdax.tasks.brax.v2.env_creators import create_brax_scoring_fn
    from qdax.utils.metrics import default_qd_metrics

ENV_NAME = "walker2d_uni"
NUM_INIT_CVT_SAMPLES = 50_000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=["map-elites", "pga-me"], default="map-elites")
    p.add_argument("--iterations", type=int, default=50, help="timed updates")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates after compile")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--episode-length", type=int, default=100)
    p.add_argument("--cells", type=int, default=1024, help="number of CVT centroids")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="spring", help="brax pipeline backend")
    p.add_argument("--iso-sigma", type=float, default=0.005)
    p.add_argument("--line-sigma", type=float, default=0.05)
    p.add_argument("--critic-steps", type=int, default=300, help="PGA-ME critic steps")
    p.add_argument("--pg-steps", type=int, default=100, help="PGA-ME policy-gradient steps")
    p.add_argument("--transition-batch", type=int, default=256, help="PGA-ME TD3 minibatch")
    p.add_argument(
        "--replay-buffer-size",
        type=int,
        default=1_000_000,
        help="PGA-ME replay buffer (QDax refuses a batch of transitions larger than it)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON line only")
    return p.parse_args(argv)


def log(args: argparse.Namespace, msg: str) -> None:
    # With --json, stdout carries only the result line; progress goes to stderr.
    print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    key = jax.random.key(args.seed)

    env = environments.create(ENV_NAME, episode_length=args.episode_length, backend=args.backend)
    backend = env.backend  # what the brax env actually uses

    policy_network = MLP(
        layer_sizes=(64, 64, env.action_size),
        activation=jnp.tanh,
        kernel_init=jax.nn.initializers.lecun_uniform(),
        final_activation=jnp.tanh,
    )

    key, subkey = jax.random.split(key)
    keys = jax.random.split(subkey, args.batch_size)
    fake_batch = jnp.zeros((args.batch_size, env.observation_size))
    init_params = jax.vmap(policy_network.init)(keys, fake_batch)
    num_params = sum(x[0].size for x in jax.tree.leaves(init_params))

    # Deterministic evaluation: one initial state, drawn here, reused for every episode.
    key, subkey = jax.random.split(key)
    scoring_fn = create_brax_scoring_fn(
        env,
        policy_network,
        environments.descriptor_extractor[ENV_NAME],
        subkey,
        episode_length=args.episode_length,
        deterministic=True,
    )

    qd_offset = environments.reward_offset[ENV_NAME] * args.episode_length
    metrics_fn = functools.partial(default_qd_metrics, qd_offset=qd_offset)

    variation_fn = functools.partial(
        isoline_variation, iso_sigma=args.iso_sigma, line_sigma=args.line_sigma
    )
    if args.algo == "pga-me":
        emitter = PGAMEEmitter(
            config=PGAMEConfig(
                env_batch_size=args.batch_size,
                num_critic_training_steps=args.critic_steps,
                num_pg_training_steps=args.pg_steps,
                batch_size=args.transition_batch,
                replay_buffer_size=args.replay_buffer_size,
            ),
            policy_network=policy_network,
            env=env,
            variation_fn=variation_fn,
        )
    else:
        emitter = MixingEmitter(
            mutation_fn=None,
            variation_fn=variation_fn,
            variation_percentage=1.0,
            batch_size=args.batch_size,
        )
    map_elites = MAPElites(
        scoring_function=scoring_fn, emitter=emitter, metrics_function=metrics_fn
    )

    # CVT centroids: computed once, outside every timed region.
    t0 = time.perf_counter()
    key, subkey = jax.random.split(key)
    centroids = compute_cvt_centroids(
        num_descriptors=env.descriptor_length,
        num_init_cvt_samples=NUM_INIT_CVT_SAMPLES,
        num_centroids=args.cells,
        minval=0.0,
        maxval=1.0,
        key=subkey,
    )
    centroids = jax.block_until_ready(centroids)
    log(args, f"cvt centroids: {centroids.shape} in {time.perf_counter() - t0:.1f}s")

    t0 = time.perf_counter()
    key, subkey = jax.random.split(key)
    repertoire, emitter_state, metrics = map_elites.init(init_params, centroids, subkey)
    repertoire = jax.block_until_ready(repertoire)
    init_s = time.perf_counter() - t0
    log(args, f"init (incl. scoring compile): {init_s:.1f}s")

    update_fn = jax.jit(map_elites.update)

    # Compile (not timed), then a few untimed warm-up iterations.
    t0 = time.perf_counter()
    update_fn = update_fn.lower(repertoire, emitter_state, key).compile()
    compile_s = time.perf_counter() - t0
    log(args, f"update compile: {compile_s:.1f}s")
    for _ in range(args.warmup):
        key, subkey = jax.random.split(key)
        repertoire, emitter_state, metrics = update_fn(repertoire, emitter_state, subkey)
    jax.block_until_ready((repertoire, emitter_state, metrics))

    # Pre-split the keys so the timed loop only dispatches updates.
    key, subkey = jax.random.split(key)
    iter_keys = jax.block_until_ready(jax.random.split(subkey, args.iterations))

    t0 = time.perf_counter()
    for i in range(args.iterations):
        repertoire, emitter_state, metrics = update_fn(repertoire, emitter_state, iter_keys[i])
    jax.block_until_ready((repertoire, emitter_state, metrics))
    elapsed = time.perf_counter() - t0

    evals = args.iterations * args.batch_size
    evals_per_s = evals / elapsed
    result = {
        "evals_per_s": evals_per_s,
        "env_steps_per_s": evals_per_s * args.episode_length,
        "algorithm": args.algo,
        "iterations": args.iterations,
        "warmup_iterations": args.warmup,
        "batch_size": args.batch_size,
        "episode_length": args.episode_length,
        "cells": args.cells,
        "seed": args.seed,
        "env": ENV_NAME,
        "backend": backend,
        "deterministic_reset": True,
        "policy": f"mlp 64x64 tanh, tanh output ({num_params} params)",
        "iso_sigma": args.iso_sigma,
        "line_sigma": args.line_sigma,
        "elapsed_s": elapsed,
        "compile_s": compile_s,
        "qdax_version": version("qdax"),
        "brax_version": version("brax"),
        "jax_version": jax.__version__,
        "jax_platform": jax.default_backend(),
        "jax_platforms_env": os.environ.get("JAX_PLATFORMS"),
        # QDax's default_qd_metrics: qd_score includes qd_offset per filled cell.
        "qd_offset": qd_offset,
        "qd_score": float(metrics["qd_score"]),
        "max_fitness": float(metrics["max_fitness"]),
        # QDax reports coverage in percent; "coverage" here is the fraction in [0, 1].
        "coverage": float(metrics["coverage"]) / 100.0,
        "coverage_percent": float(metrics["coverage"]),
    }
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(
            f"QDax {result['qdax_version']} {args.algo} on {ENV_NAME} "
            f"(brax {result['brax_version']}, backend {backend}, "
            f"jax {result['jax_version']} on {result['jax_platform']})\n"
            f"  batch {args.batch_size} x episode {args.episode_length}, "
            f"{args.iterations} timed iterations in {elapsed:.2f}s\n"
            f"  {evals_per_s:,.0f} evals/s = {result['env_steps_per_s']:,.0f} env steps/s\n"
            f"  qd_score {result['qd_score']:.1f} (offset {qd_offset:.1f}/cell), "
            f"coverage {result['coverage_percent']:.1f}%, "
            f"max fitness {result['max_fitness']:.2f}"
        )
    return result


if __name__ == "__main__":
    main()

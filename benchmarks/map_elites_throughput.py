"""MAP-Elites throughput: ours vs QDax 0.5 vs the environment-only limit, in one run.

Setting (from the foundation issue): walker2d-uni, batch 256, episode length 100, CVT archive
of 1024 cells, 2x64 tanh policy, Brax spring pipeline, CPU.

- **ours**: the full QD loop (ask, evaluate, insert, tell) in compiled chunks, timed after a
  warm-up chunk (compilation excluded).
- **environment only**: the same number of evaluations of the same kind of policies (a batch
  sampled from our archive at the end of the timed run) with no variation and no archive.
- **QDax**: ``benchmarks/qdax_reference.py`` run with the interpreter of a separate virtual
  environment (``benchmarks/setup_qdax_env.sh`` creates ``.venv-qdax``).

Usage::

    bash benchmarks/setup_qdax_env.sh            # once
    python benchmarks/map_elites_throughput.py [--iterations 30] [--qdax-python PATH]

``--baseline DIR`` also times the loop of another checkout of qdzoo (e.g. a ``git worktree``
of an older commit) in a subprocess with the same settings, to show that a change of the
loop did not cost throughput::

    git worktree add /tmp/qdzoo-before <commit>
    python benchmarks/map_elites_throughput.py --skip-qdax --baseline /tmp/qdzoo-before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import jax  # noqa: E402  (after XLA_FLAGS is set in main, before the backend starts)
import jax.numpy as jnp  # noqa: E402


def ours(args: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    """Evaluations per second of our loop and of the environment-only limit."""
    from training.qd.run import Run, TrainConfig
    from training.qd.sharding import sharded_evaluate

    config = TrainConfig(
        task="walker2d-uni",
        task_kwargs={"episode_length": args.episode_length, "backend": "spring"},
        evaluations=args.batch_size * (args.iterations + args.chunk + 1),
        batch_size=args.batch_size,
        cvt_cells=args.cells,
        policy={"hidden_sizes": [64, 64]},
        seed=args.seed,
        chunk=args.chunk,
    )
    run = Run(config)
    state = run.initial_state()
    state, _ = run.chunk(state, args.chunk)  # warm-up: compile + the first chunk
    jax.block_until_ready(state)
    n_chunks = args.iterations // args.chunk
    start = time.perf_counter()
    for _ in range(n_chunks):
        state, _ = run.chunk(state, args.chunk)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - start
    ours_rate = n_chunks * args.chunk * args.batch_size / elapsed
    metrics = {k: float(v) for k, v in state.archive.metrics().items()}

    # Environment-only limit: evaluate a fixed batch of the archive's elites, same count.
    policies, _ = state.archive.sample(jax.random.key(1), args.batch_size)
    evaluate = sharded_evaluate(run.task, run.mesh)

    @jax.jit
    def env_only(key: jax.Array) -> jax.Array:
        def body(total: jax.Array, k: jax.Array) -> tuple[jax.Array, None]:
            return total + jnp.sum(evaluate(policies, k).fitness), None

        return jax.lax.scan(body, jnp.zeros(()), jax.random.split(key, args.chunk))[0]

    jax.block_until_ready(env_only(jax.random.key(2)))
    start = time.perf_counter()
    for i in range(n_chunks):
        out = env_only(jax.random.key(3 + i))
    jax.block_until_ready(out)
    env_rate = n_chunks * args.chunk * args.batch_size / (time.perf_counter() - start)
    return ours_rate, env_rate, metrics


def qdax(args: argparse.Namespace) -> dict[str, float] | None:
    python = Path(args.qdax_python)
    if not python.exists():
        print(
            f"QDax environment not found at {python}: run benchmarks/setup_qdax_env.sh",
            file=sys.stderr,
        )
        return None
    cmd = [
        str(python),
        str(ROOT / "benchmarks" / "qdax_reference.py"),
        "--json",
        "--iterations",
        str(args.iterations),
        "--batch-size",
        str(args.batch_size),
        "--episode-length",
        str(args.episode_length),
        "--cells",
        str(args.cells),
        "--seed",
        str(args.seed),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline(args: argparse.Namespace) -> float | None:
    """Evaluations per second of the QD loop of the checkout ``args.baseline``."""
    tree = Path(args.baseline).resolve()
    script = tree / "benchmarks" / "map_elites_throughput.py"
    if not script.exists():
        print(f"--baseline: no {script}", file=sys.stderr)
        return None
    cmd = [sys.executable, str(script), "--skip-qdax"]
    for flag in ("iterations", "chunk", "batch_size", "episode_length", "cells", "seed"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    cmd += ["--devices", str(args.devices)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=tree)
    for line in done.stdout.splitlines():
        if line.startswith("qdzoo MAP-Elites"):
            return float(line.split()[-1])
    print(done.stderr[-3000:], file=sys.stderr)
    return None


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--iterations", type=int, default=30, help="timed iterations (after warm-up)")
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--episode-length", type=int, default=100)
    p.add_argument("--cells", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qdax-python", default=str(ROOT / ".venv-qdax" / "bin" / "python"))
    p.add_argument("--skip-qdax", action="store_true")
    p.add_argument("--baseline", metavar="DIR", help="another qdzoo checkout to time as well")
    p.add_argument(
        "--devices",
        type=int,
        default=os.cpu_count() or 1,
        help="host devices the population is split over (default: one per core)",
    )
    args = p.parse_args()
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )

    q = None if args.skip_qdax else qdax(args)
    before = baseline(args) if args.baseline else None
    ours_rate, env_rate, metrics = ours(args)
    print(
        f"walker2d-uni, batch {args.batch_size}, episode {args.episode_length}, "
        f"CVT {args.cells}, 2x64 tanh, spring; population split over {len(jax.devices())} "
        f"{jax.devices()[0].platform} device(s) (QDax: one)"
    )
    print(f"{'':<28}{'evals/s':>10}")
    print(f"{'qdzoo MAP-Elites':<28}{ours_rate:>10.1f}")
    print(
        f"{'environment only':<28}{env_rate:>10.1f}   ours / env-only = {ours_rate / env_rate:.2f}"
    )
    if before is not None:
        print(
            f"{'baseline checkout':<28}{before:>10.1f}   ours / baseline = {ours_rate / before:.2f}"
            f"  ({args.baseline})"
        )
    if q is not None:
        print(
            f"{'QDax ' + q.get('qdax_version', '') + ' MAP-Elites':<28}{q['evals_per_s']:>10.1f}"
            f"   ours / QDax = {ours_rate / q['evals_per_s']:.2f}"
            f"  (QDax backend {q.get('backend')}, "
            f"brax {q.get('brax_version')})"
        )
    print(
        f"our archive after the run: {metrics['num_elites']:.0f} elites, "
        f"QD score {metrics['qd_score']:.1f}, max fitness {metrics['max_fitness']:.2f}"
    )


if __name__ == "__main__":
    main()

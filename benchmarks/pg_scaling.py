"""Policy-gradient QD at scale: wall time, time per evaluation and final QD score of ASCII-ME,
DCRL-ME, PGA-ME and MAP-Elites for several batch sizes, at one fixed evaluation budget.

Setting: walker2d-uni (or any policy task), episode 250, CVT archive, 2x64 tanh policies,
Brax spring pipeline, every algorithm with its registry defaults (``--set NAME=VALUE``
overrides one in every algorithm that has it). Every run starts from the same seed and spends
the same number of evaluations (rounded up to whole iterations; the count is printed).

On CPU (the default) PGA-ME and DCRL-ME train with the ``cpu`` preset (50 critic steps,
10 policy-gradient steps of minibatch 128 per offspring and iteration); ``--full`` keeps their
registry defaults (``qdax`` for PGA-ME, ``paper`` for DCRL-ME); ``--set preset=NAME`` chooses.

Figures, per algorithm and batch size:

- **wall s**: the whole run, compilation included (what a user waits for);
- **compile s**: building the initial state plus the first chunk (dominated by compilation);
- **ms/eval**: steady-state time per evaluation after the first chunk, variation, critic
  training and archive insertion included;
- **QD score** and **coverage** of the final archive.

On CPU the run ends with a timing-only part: milliseconds per evaluation of ASCII-ME, PGA-ME
and DCRL-ME with their published training budgets (``qdax`` and ``paper`` presets), at batch
``--timing-batch``, over ``--timing-iterations`` iterations after the compiling one; those
budgets cannot reach the fixed evaluation budget on a 2-core CPU in reasonable time.

Then the ratios, in the same run: ASCII-ME's time per evaluation against
DCRL-ME's and PGA-ME's at each batch size (target >= 3x at batch >= 1024 on CPU), its QD score
against theirs (target >= 0.9x), and how its wall time moves as the batch grows.

Usage::

    python benchmarks/pg_scaling.py                       # CPU budget (~30 min on 2 cores)
    python benchmarks/pg_scaling.py --task hopper-uni
    python benchmarks/pg_scaling.py --full                # GPU: 1M evaluations, 1024 cells,
                                                          # batches 256, 1024, 4096
    python benchmarks/pg_scaling.py --algos ascii-me map-elites --batch-sizes 256

An algorithm that is not registered is reported as missing, not silently skipped.

With the QDax environment (``bash benchmarks/setup_qdax_env.sh`` once), QDax 0.5's PGA-ME runs
on the same configuration (batch, episode, cells, critic and PG steps, minibatch) through
``benchmarks/qdax_reference.py``, and its evaluations per second are printed next to ours
(``--skip-qdax`` to leave it out; only on walker2d-uni, the one task both define alike).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI (training/cli.py)

import jax  # noqa: E402

ALGORITHMS = ("ascii-me", "dcrl-me", "pga-me", "map-elites")


@dataclass
class Result:
    algorithm: str
    batch_size: int
    evaluations: int
    wall_s: float
    compile_s: float
    ms_per_eval: float
    qd_score: float
    coverage: float


def run_one(args: argparse.Namespace, algorithm: str, batch_size: int) -> Result:
    from training.qd import algorithms
    from training.qd.run import Run, TrainConfig

    known = algorithms.get(algorithm).defaults
    hyperparameters = {k: v for k, v in args.overrides if k in known}
    config = TrainConfig(
        task=args.task,
        algorithm=algorithm,
        task_kwargs={"episode_length": args.episode_length, **args.task_kwargs},
        evaluations=args.evaluations,
        batch_size=batch_size,
        cvt_cells=args.cells,
        policy={"hidden_sizes": [64, 64]},
        hyperparameters=hyperparameters,
        seed=args.seed,
        chunk=args.chunk,
    )
    start = time.perf_counter()
    run = Run(config)
    state = run.initial_state()
    # At least three quarters of the iterations are timed in steady state, however few the
    # budget leaves at a large batch (chunks of one length: one compilation).
    chunk = max(1, min(args.chunk, run.iterations // 4))
    first = min(chunk, run.iterations)
    state, _ = run.chunk(state, first)
    jax.block_until_ready(state)
    compiled = time.perf_counter()
    done = first
    while done < run.iterations:
        length = min(chunk, run.iterations - done)
        state, _ = run.chunk(state, length)
        done += length
    jax.block_until_ready(state)
    end = time.perf_counter()
    steady = (done - first) * run.evaluations_per_iteration
    metrics = {k: float(v) for k, v in state.elites.metrics().items()}
    return Result(
        algorithm=algorithm,
        batch_size=batch_size,
        evaluations=run.iterations * run.evaluations_per_iteration,
        wall_s=end - start,
        compile_s=compiled - start,
        ms_per_eval=1e3 * (end - compiled) / steady if steady else math.nan,
        qd_score=metrics["qd_score"],
        coverage=metrics["coverage"],
    )


def published_budget_timing(args: argparse.Namespace, algorithm: str, preset: str | None) -> float:
    """Steady-state milliseconds per evaluation of ``algorithm`` at batch
    ``args.timing_batch`` with its published per-iteration training budget (``preset``), from
    ``args.timing_iterations`` iterations after the compiling one (timing only)."""
    from training.qd.run import Run, TrainConfig

    batch = args.timing_batch
    config = TrainConfig(
        task=args.task,
        algorithm=algorithm,
        task_kwargs={"episode_length": args.episode_length, **args.task_kwargs},
        evaluations=batch * (1 + args.timing_iterations),
        batch_size=batch,
        cvt_cells=args.cells,
        policy={"hidden_sizes": [64, 64]},
        hyperparameters={} if preset is None else {"preset": preset},
        seed=args.seed,
        chunk=1,
    )
    run = Run(config)
    state, _ = run.chunk(run.initial_state(), 1)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(args.timing_iterations):
        state, _ = run.chunk(state, 1)
    jax.block_until_ready(state)
    evaluations = args.timing_iterations * run.evaluations_per_iteration
    return 1e3 * (time.perf_counter() - start) / evaluations


def qdax_pga_me(args: argparse.Namespace, batch_size: int, iterations: int) -> float | None:
    """QDax 0.5 PGA-ME's steady-state evaluations per second on our configuration."""
    from training.qd import algorithms
    from training.qd.emitters.policy_gradient import resolve_preset

    python = Path(args.qdax_python)
    if not python.exists():
        print(f"QDax environment not found at {python}: run benchmarks/setup_qdax_env.sh")
        return None
    known = algorithms.get("pga-me")
    hp = resolve_preset(
        known.hyperparameters({k: v for k, v in args.overrides if k in known.defaults})
    )
    cmd = [
        str(python),
        str(ROOT / "benchmarks" / "qdax_reference.py"),
        "--json",
        "--algo=pga-me",
        f"--iterations={max(2, iterations)}",
        f"--batch-size={batch_size}",
        f"--episode-length={args.episode_length}",
        f"--cells={args.cells}",
        f"--seed={args.seed}",
        f"--critic-steps={hp['critic_steps']}",
        f"--pg-steps={hp['pg_steps']}",
        f"--transition-batch={hp['transition_batch']}",
        # QDax refuses to insert more transitions at once than its buffer holds (ours keeps
        # the newest): at least one batch of episodes.
        f"--replay-buffer-size={max(hp['buffer_size'], batch_size * args.episode_length)}",
    ]
    env = {**os.environ, "JAX_PLATFORMS": jax.devices()[0].platform}
    env.pop("XLA_FLAGS", None)  # QDax runs the population on one device
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["evals_per_s"])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and math.isfinite(a) and math.isfinite(b) else "n/a"


def report(
    args: argparse.Namespace,
    results: list[Result],
    missing: list[str],
    qdax: dict[int, float | None],
) -> None:
    print(
        f"\n{args.task} {args.task_kwargs}, episode {args.episode_length}, CVT {args.cells}, "
        "2x64 tanh policies, "
        f"budget {args.evaluations} evaluations, seed {args.seed}, "
        f"overrides {dict(args.overrides)}, "
        f"{len(jax.devices())} {jax.devices()[0].platform} device(s)"
    )
    header = (
        f"{'algorithm':<12}{'batch':>7}{'evals':>9}{'wall s':>9}{'compile s':>11}"
        f"{'ms/eval':>10}{'QD score':>12}{'coverage':>10}"
    )
    print(header)
    for r in results:
        print(
            f"{r.algorithm:<12}{r.batch_size:>7}{r.evaluations:>9}{r.wall_s:>9.1f}"
            f"{r.compile_s:>11.1f}{r.ms_per_eval:>10.3f}{r.qd_score:>12.1f}{r.coverage:>10.3f}"
        )
    for name in missing:
        print(f"{name:<12} not registered: nothing measured")

    by = {(r.algorithm, r.batch_size): r for r in results}
    print("\nASCII-ME against the actor-critic methods (same batch, same budget):")
    print(f"{'batch':>7}  {'vs':<10}{'speed-up per eval':>19}{'wall speed-up':>15}{'QD ratio':>10}")
    for batch in args.batch_sizes:
        ascii_me = by.get(("ascii-me", batch))
        if ascii_me is None:
            continue
        for other in ("dcrl-me", "pga-me", "map-elites"):
            o = by.get((other, batch))
            if o is None:
                continue
            print(
                f"{batch:>7}  {other:<10}{_ratio(o.ms_per_eval, ascii_me.ms_per_eval):>19}"
                f"{_ratio(o.wall_s, ascii_me.wall_s):>15}"
                f"{_ratio(ascii_me.qd_score, o.qd_score):>10}"
            )
    if qdax:
        print("\nPGA-ME steady-state evaluations per second, same configuration:")
        print(f"{'batch':>7}{'qdzoo':>10}{'QDax 0.5':>10}{'ours / QDax':>13}")
        for batch, theirs in qdax.items():
            mine = by.get(("pga-me", batch))
            ours = 1e3 / mine.ms_per_eval if mine else math.nan
            shown = f"{theirs:.1f}" if theirs else "failed"
            print(f"{batch:>7}{ours:>10.1f}{shown:>10}{_ratio(ours, theirs or math.nan):>13}")
        print(f"  (qdzoo splits the population over {len(jax.devices())} device(s); QDax uses one)")
    print("\nWall time as the batch grows (same budget):")
    for name in args.algos:
        row = [by[(name, b)] for b in args.batch_sizes if (name, b) in by]
        if row:
            cells = ", ".join(
                f"{r.batch_size}: {r.wall_s:.0f} s / QD {r.qd_score:.0f}" for r in row
            )
            print(f"  {name:<12}{cells}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", default="walker2d-uni", help="policy task (default: walker2d-uni)")
    p.add_argument("--algos", nargs="+", default=list(ALGORITHMS), help="algorithms to run")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 256 1024 4096")
    p.add_argument("--evaluations", type=int, default=None, help="budget (CPU 16384, --full 1M)")
    p.add_argument("--episode-length", type=int, default=250)
    p.add_argument("--cells", type=int, default=None, help="CVT cells (CPU 256, --full 1024)")
    p.add_argument("--chunk", type=int, default=4, help="iterations per compiled chunk")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--full", action="store_true", help="the full-size GPU setting")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--timing-batch", type=int, default=256, help="batch of the published-budget timing"
    )
    p.add_argument(
        "--timing-iterations",
        type=int,
        default=1,
        help="timed iterations at the published budgets on CPU (0: skip that part)",
    )
    p.add_argument("--qdax-python", default=str(ROOT / ".venv-qdax" / "bin" / "python"))
    p.add_argument("--skip-qdax", action="store_true", help="do not run QDax's PGA-ME")
    p.add_argument(
        "--devices",
        type=int,
        default=os.cpu_count() or 1,
        help="host devices the population is split over, as qdzoo train (default: one per core)",
    )
    args = p.parse_args()
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )
    args.batch_sizes = args.batch_sizes or [256, 1024, 4096]
    args.evaluations = args.evaluations or (1_000_000 if args.full else 16_384)
    args.cells = args.cells or (1024 if args.full else 256)
    # Brax tasks run the spring pipeline (the fastest on CPU); point-maze has no backend.
    args.task_kwargs = {} if args.task == "point-maze" else {"backend": "spring"}
    args.overrides = []
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set expects NAME=VALUE, got {item!r}")
        try:
            args.overrides.append((name, json.loads(value)))
        except json.JSONDecodeError:
            args.overrides.append((name, value))

    if not args.full and not any(name == "preset" for name, _ in args.overrides):
        # The actor-critic methods' per-iteration training budget a 2-core CPU can afford.
        args.overrides.append(("preset", "cpu"))

    from training.qd import algorithms

    missing = [a for a in args.algos if a not in algorithms.names()]
    results: list[Result] = []
    for batch in args.batch_sizes:
        for name in args.algos:
            if name in missing:
                continue
            print(f"running {name} at batch {batch} ...", file=sys.stderr, flush=True)
            results.append(run_one(args, name, batch))
            r = results[-1]
            print(
                f"  {r.wall_s:.1f} s, {r.ms_per_eval:.3f} ms/eval, QD {r.qd_score:.1f}",
                file=sys.stderr,
                flush=True,
            )
    qdax: dict[int, float | None] = {}
    if not args.skip_qdax and args.task == "walker2d-uni" and "pga-me" in args.algos:
        for r in results:
            if r.algorithm == "pga-me":
                print(f"running QDax PGA-ME at batch {r.batch_size} ...", file=sys.stderr)
                iterations = r.evaluations // r.batch_size
                steady = iterations - max(1, min(args.chunk, iterations // 4))
                qdax[r.batch_size] = qdax_pga_me(args, r.batch_size, steady)
    report(args, results, missing, qdax)

    if not args.full and args.timing_iterations > 0:
        published = [("ascii-me", None), ("pga-me", "qdax"), ("dcrl-me", "paper")]
        timings = {}
        for name, preset in published:
            if name in args.algos and name not in missing:
                print(f"timing {name} ({preset or 'default'}) ...", file=sys.stderr, flush=True)
                timings[name] = published_budget_timing(args, name, preset)
        print(
            f"\nPer-evaluation time with the published training budgets (PGA-ME 'qdax': 300 "
            f"critic and 100 PG steps of minibatch 256; DCRL-ME 'paper': 3000 and 150 of 100), "
            f"batch {args.timing_batch}, {args.timing_iterations} iteration(s) after compiling, "
            "timing only:"
        )
        ascii_ms = timings.get("ascii-me")
        for name, ms in timings.items():
            faster = ascii_ms and name != "ascii-me"
            speed = f"   ASCII-ME is {ms / ascii_ms:.1f}x faster" if faster else ""
            print(f"  {name:<12}{ms:>10.3f} ms/eval{speed}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))


if __name__ == "__main__":
    main()

"""Model-based QD against model-free QD at equal real evaluations (the GDA-QD paper's claim):
QD score (% of the task's maximum), coverage and max return against the number of real
evaluations for MAP-Elites, PGA-ME, DA-QD-ext and GDA-QD, the median over seeds.

Targets (Lim, Flageat & Cully, 2023): the ordering GDA-QD >= DA-QD-ext > MAP-Elites in QD
score at equal real evaluations, and GDA-QD reaching MAP-Elites' final QD score with at most a
fifth of MAP-Elites' real evaluations on point-maze. The paper's point-maze figures (median
of 15; QD score % / coverage % / max return): MAP-Elites 93.74 / 99.92 / -25.36, PGA-ME
93.06 / 99.92 / -24.06, DA-QD-ext 96.67 / 99.92 / -24.81, GDA-QD 97.70 / 99.92 / -24.24.

Every algorithm runs the setting of the task's recipes (``<task>-da-qd-ext`` and
``<task>-gda-qd``: grid, episode length, policy network, batch size), with its own
hyperparameters:

- MAP-Elites: Iso+LineDD with the library defaults (0.005 / 0.05);
- PGA-ME: half Iso+LineDD, half policy gradient, with the ``<task>-gda-qd`` recipe's TD3
  settings but the ``cpu`` training budget (50 critic and 10 policy-gradient steps per
  iteration; ``qdax``'s, spent on half of every batch instead of GDA-QD's tenth, is left to
  ``--full``);
- DA-QD-ext, GDA-QD: their recipes (the CPU-sized dynamics ensemble and imagination);
  ``--set NAME=VALUE`` overrides any of their hyperparameters (an ablation of the recipes'
  choices).

With ``--full``, the papers' settings and ``--full-evaluations``, for a GPU: the dynamics
model and imagination of the papers (4 x (512, 512), 100 imagined iterations) and the
``qdax`` TD3 budget for PGA-ME and GDA-QD.

The QD score is reported as a percentage of the task's maximum: every cell holding an elite
of the best possible fitness (``cells * (max_fitness - qd_offset)``). A PNG of the median
curves goes to ``--out``.

Usage::

    python benchmarks/model_based.py --out model_based.png           # point-maze, 3 seeds
    python benchmarks/model_based.py --task ant-trap --out ant.png      # CPU budget
    python benchmarks/model_based.py --task ant-trap --full --out a.png  # GPU budget
    python benchmarks/model_based.py --algos da-qd-ext --seeds 0 \
        --set model_probabilistic=true retrain_every=25 model_steps=500  # an ablation
    python benchmarks/model_based.py --cache runs/ --seeds 0 1 2 3 4  # resumable, extendable
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI (training/cli.py)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
from curves import at, cached_curve, metric_history  # noqa: E402  (benchmarks/curves.py)

ALGORITHMS = ("map-elites", "pga-me", "da-qd-ext", "gda-qd")
NAMES = {
    "map-elites": "MAP-Elites",
    "pga-me": "PGA-ME",
    "da-qd-ext": "DA-QD-ext",
    "gda-qd": "GDA-QD",
}
FRACTIONS = (0.2, 0.5, 1.0)
FULL = {
    # The papers' model and imagination (training.qd.algorithms.model_based defaults).
    "model_hidden_sizes": [512, 512],
    "model_steps": 1000,
    "max_imagined_iterations": 100,
    "preset": "qdax",
}
CPU_EVALUATIONS = {"point-maze": 3200}
"""The CPU budgets (real evaluations) by task: all four algorithms x 3 seeds in minutes
on a 2-core CPU; other tasks default to their recipes' budget."""
TD3_KEYS = (
    "preset",
    "critic_hidden_sizes",
    "critic_steps",
    "pg_steps",
    "transition_batch",
    "policy_learning_rate",
    "buffer_size",
)


def config_for(algorithm: str, args: argparse.Namespace, seed: int):  # -> TrainConfig
    """The ``<task>-gda-qd`` / ``<task>-da-qd-ext`` recipes' setting for ``algorithm``."""
    from training.recipes import load_recipe

    recipe = "da-qd-ext" if algorithm == "da-qd-ext" else "gda-qd"
    base = load_recipe(f"{args.task}-{recipe}").config
    hyperparameters: dict[str, object] = dict(base.hyperparameters)
    if algorithm == "map-elites":
        hyperparameters = {}
    elif algorithm == "pga-me":
        hyperparameters = {k: v for k, v in hyperparameters.items() if k in TD3_KEYS}
        hyperparameters["preset"] = FULL["preset"] if args.full else "cpu"
    elif args.full:
        hyperparameters.update({k: v for k, v in FULL.items() if k != "preset"})
        if algorithm == "gda-qd":
            hyperparameters["preset"] = FULL["preset"]
    if algorithm in ("da-qd-ext", "gda-qd"):
        hyperparameters.update(args.set)
    if args.evaluations is not None:
        evaluations = args.evaluations
    elif args.full:
        evaluations = args.full_evaluations
    else:
        evaluations = CPU_EVALUATIONS.get(args.task, base.evaluations)
    return dataclasses.replace(
        base,
        algorithm=algorithm,
        hyperparameters=hyperparameters,
        evaluations=evaluations,
        seed=seed,
        chunk=args.chunk,
    )


def qd_maximum(cells: int, spec) -> float | None:  # spec: TaskSpec
    """The QD score of an archive full of elites of the best possible fitness, or None when
    the task's fitness has no upper bound (then the raw QD score is reported)."""
    if spec.max_fitness is None:
        return None
    return cells * (spec.max_fitness - spec.qd_offset)


def run_seeds(algorithm: str, args: argparse.Namespace) -> list[tuple[list[dict], float]]:
    """For every seed: the elitist archive's metrics after every chunk (with the real
    evaluations spent) and the run's wall seconds, read from ``args.cache`` for the seeds
    that finished before. The compiled loop is shared by the seeds (only the first run's
    wall time includes the compilation)."""
    from training.qd.run import Run

    run = None
    runs = []
    for seed in args.seeds:
        config = config_for(algorithm, args, seed)

        def compute(config=config) -> tuple[list[dict], float]:
            nonlocal run
            print(f"{algorithm} seed {config.seed} ...", file=sys.stderr, flush=True)
            if run is None:
                run = Run(config)
            run.config = config
            state = run.initial_state()
            maximum = qd_maximum(state.elites.num_cells, run.task.spec)
            start = time.perf_counter()
            state, history = metric_history(run, state)
            jax.block_until_ready(state)
            for metrics in history:
                metrics["qd_percent"] = (
                    metrics["qd_score"]
                    if maximum is None
                    else 100.0 * metrics["qd_score"] / maximum
                )
                metrics["coverage"] *= 100.0
            return history, time.perf_counter() - start

        runs.append(cached_curve(args.cache, config, compute))
    return runs


def median_curve(runs: list[tuple[list[dict], float]], name: str) -> tuple[list, list]:
    """``(evaluations, median of metric name)`` at the first run's checkpoints."""
    xs = [h["evaluations"] for h in runs[0][0]]
    ys = [statistics.median(at(h, x)[name] for h, _ in runs) for x in xs]
    return xs, ys


def first_reaching(xs: list, ys: list, target: float) -> float | None:
    """The first number of evaluations at which the curve reaches ``target`` (None: never)."""
    for x, y in zip(xs, ys, strict=True):
        if y >= target:
            return x
    return None


def plot(results: dict, args: argparse.Namespace, path: Path, qd_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("qd_percent", qd_label), ("coverage", "coverage (%)"))
    panels += (("max_fitness", "max return"),)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=100)
    for ax, (name, label) in zip(axes, panels, strict=True):
        for algorithm, runs in results.items():
            xs, ys = median_curve(runs, name)
            ax.plot(xs, ys, label=algorithm)
        ax.set_xlabel("real evaluations")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{args.task}: median over seeds {args.seeds}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", default="point-maze", help="a task with both recipes")
    p.add_argument(
        "--evaluations", type=int, default=None, help="budget (default: CPU_EVALUATIONS)"
    )
    p.add_argument("--full", action="store_true", help="the papers' settings and budget (GPU)")
    p.add_argument("--full-evaluations", type=int, default=1_000_000)
    p.add_argument("--algos", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--chunk", type=int, default=5, help="iterations between curve points")
    p.add_argument("--out", type=Path, default=Path("model_based.png"), help="PNG of curves")
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder of finished runs' curves (one JSON per algorithm, seed and config): "
        "a rerun reads them instead of training again, so an interrupted benchmark, or one "
        "given more seeds or algorithms, trains only what is missing",
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="override a hyperparameter of DA-QD-ext and GDA-QD (VALUE read as JSON, e.g. "
        "model_probabilistic=false retrain_every=25 model_steps=500)",
    )
    args = p.parse_args()
    from training.cli import parse_assignments
    from zoo.errors import ConfigError

    try:
        args.set = parse_assignments(args.set, "--set")
    except ConfigError as error:
        p.error(str(error))

    results = {algorithm: run_seeds(algorithm, args) for algorithm in args.algos}

    budget = max(h[-1]["evaluations"] for runs in results.values() for h, _ in runs)
    from zoo import tasks

    raw = tasks.make(args.task).spec.max_fitness is None
    qd = "QD" if raw else "QD%"
    if raw:
        print(f"{args.task} has no fitness maximum: QD columns are raw QD scores")
    device = jax.devices()[0]
    print(
        f"\n{args.task}{' (full)' if args.full else ''}: median over seeds {args.seeds}, "
        f"{budget:,} real evaluations, on {len(jax.devices())} {device.platform} device(s)"
    )
    header = f"{'algorithm':<11}"
    for fraction in FRACTIONS:
        header += f"{qd + ' @' + format(int(fraction * budget), ','):>14}"
    header += f"{'coverage%':>11}{'max ret':>10}{'wall s':>8}"
    print(header)
    final: dict[str, float] = {}
    for algorithm, runs in results.items():
        row = f"{algorithm:<11}"
        for fraction in FRACTIONS:
            value = statistics.median(at(h, fraction * budget)["qd_percent"] for h, _ in runs)
            row += f"{value:>14.2f}"
        last = [at(h, budget) for h, _ in runs]
        final[algorithm] = statistics.median(x["qd_percent"] for x in last)
        row += f"{statistics.median(x['coverage'] for x in last):>11.2f}"
        row += f"{statistics.median(x['max_fitness'] for x in last):>10.2f}"
        row += f"{statistics.median(w for _, w in runs):>8.0f}"
        print(row)

    if {"gda-qd", "da-qd-ext", "map-elites"} <= set(final):
        g, d, m = final["gda-qd"], final["da-qd-ext"], final["map-elites"]
        holds = g >= d > m
        print(
            f"ordering GDA-QD >= DA-QD-ext > MAP-Elites (final {qd}): {g:.2f} / {d:.2f} / "
            f"{m:.2f}: {'holds' if holds else 'does not hold'}"
        )
    if "map-elites" in final:
        target = final["map-elites"]
        for algorithm in [a for a in results if a != "map-elites"]:
            name = NAMES[algorithm]
            xs, ys = median_curve(results[algorithm], "qd_percent")
            reached = first_reaching(xs, ys, target)
            if reached is None:
                print(f"{name} never reaches MAP-Elites' final {qd} ({target:.2f})")
            else:
                print(
                    f"{name} reaches MAP-Elites' final {qd} ({target:.2f}) after "
                    f"{reached:,} real evaluations: {reached / budget:.2f} of MAP-Elites' "
                    f"{budget:,}" + (" (target <= 0.20)" if algorithm == "gda-qd" else "")
                )
    plot(results, args, args.out, "QD score" if raw else "QD score (% of max)")
    print(f"curves: {args.out}")


if __name__ == "__main__":
    main()

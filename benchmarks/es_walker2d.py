"""The scaled CMA-MAE paper's claim on walker2d-uni, measured: sep-CMA-MAE and LM-MA-MAE
against ME-ES and MAP-Elites in QD score at equal evaluations, with 128x128 tanh policies
(19,590 parameters, where a full CMA-ES's 19,590^2 covariance does not fit).

Every algorithm runs the setting of the ``walker2d-uni-sep-cma-mae`` recipe (16x16 grid over
the feet-contact fractions, 100-step episodes, deterministic reset, the same policy network,
the same budget of evaluations, those spent outside the archive included):

- sep-CMA-MAE and LM-MA-MAE: the recipes' 5 instances x 40, sigma0 0.02, archive learning
  rate 0.001, thresholds from the task's lowest fitness (the paper's setting); scored on their
  elitist result archive;
- MAP-Elites: Iso+LineDD with the library defaults, 200 offspring per iteration;
- ME-ES: ``--me-es-instances`` OpenAI-ES points, each estimating its gradient from
  ``--me-es-samples`` mirrored evaluations per step (the paper used 10,000 samples on 1,000
  workers; at a CPU budget of 200,000 evaluations that would be twenty steps in all).

Printed: QD score (the task's offset applied), coverage and best fitness at a quarter, half
and all of the budget, the median over ``--seeds``, and the wall time of each run (all on the
same device, one after another).

Usage::

    python benchmarks/es_walker2d.py                       # 200,000 evaluations, seed 0
    python benchmarks/es_walker2d.py --evaluations 20000 --algos map-elites sep-cma-mae
    python benchmarks/es_walker2d.py --seeds 0 1 2
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
from curves import at, metric_history  # noqa: E402  (benchmarks/curves.py)

ALGORITHMS = ("sep-cma-mae", "lm-ma-mae", "me-es", "map-elites")
FRACTIONS = (0.25, 0.5, 1.0)


def config_for(algorithm: str, args: argparse.Namespace, seed: int):  # -> TrainConfig
    """The ``walker2d-uni-sep-cma-mae`` recipe's setting with ``algorithm`` swapped in."""
    from training.recipes import load_recipe

    base = load_recipe("walker2d-uni-sep-cma-mae").config
    hyperparameters: dict[str, object] = dict(base.hyperparameters)
    batch_size = base.batch_size
    if algorithm == "map-elites":
        hyperparameters = {}
    elif algorithm == "me-es":
        hyperparameters = {"samples": args.me_es_samples}
        batch_size = args.me_es_instances
    return dataclasses.replace(
        base,
        algorithm=algorithm,
        hyperparameters=hyperparameters,
        batch_size=batch_size,
        evaluations=args.evaluations,
        seed=seed,
    )


def run_one(algorithm: str, args: argparse.Namespace, seed: int) -> tuple[list[dict], float]:
    """The elitist archive's metrics after every chunk (with the evaluations spent) and the
    run's wall seconds."""
    from training.qd.run import Run

    run = Run(config_for(algorithm, args, seed))
    state = run.initial_state()
    start = time.perf_counter()
    state, history = metric_history(run, state)
    jax.block_until_ready(state)
    return history, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--evaluations", type=int, default=200_000, help="budget (the recipes': 200,000)"
    )
    p.add_argument("--algos", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--me-es-instances", type=int, default=2)
    p.add_argument("--me-es-samples", type=int, default=100)
    args = p.parse_args()

    results: dict[str, list[tuple[list[dict], float]]] = {}
    for algorithm in args.algos:
        for seed in args.seeds:
            print(f"{algorithm} seed {seed} ...", file=sys.stderr, flush=True)
            results.setdefault(algorithm, []).append(run_one(algorithm, args, seed))

    device = jax.devices()[0]
    print(
        f"\nwalker2d-uni, 16x16 grid, 100-step episodes, 128x128 tanh policies, "
        f"{args.evaluations:,} evaluations, median over seeds {args.seeds}, "
        f"on {len(jax.devices())} {device.platform} device(s)"
    )
    header = f"{'algorithm':<13}"
    for fraction in FRACTIONS:
        e = int(fraction * args.evaluations)
        header += f"{'QD @' + format(e, ','):>15}"
    header += f"{'coverage':>10}{'max fit':>9}{'wall s':>8}"
    print(header)
    final: dict[str, float] = {}
    for algorithm, runs in results.items():
        row = f"{algorithm:<13}"
        for fraction in FRACTIONS:
            qd = statistics.median(at(h, fraction * args.evaluations)["qd_score"] for h, _ in runs)
            row += f"{qd:>15,.0f}"
        last = [at(h, args.evaluations) for h, _ in runs]
        final[algorithm] = statistics.median(x["qd_score"] for x in last)
        row += f"{statistics.median(x['coverage'] for x in last):>10.3f}"
        row += f"{statistics.median(x['max_fitness'] for x in last):>9.1f}"
        row += f"{statistics.median(w for _, w in runs):>8.0f}"
        print(row)
    for es in ("sep-cma-mae", "lm-ma-mae"):
        for baseline in ("me-es", "map-elites"):
            if es in final and baseline in final:
                verdict = "beats" if final[es] > final[baseline] else "does not beat"
                print(
                    f"{es} {verdict} {baseline}: QD {final[es]:,.0f} vs {final[baseline]:,.0f} "
                    f"({final[es] / final[baseline]:.2f}x)"
                )


if __name__ == "__main__":
    main()

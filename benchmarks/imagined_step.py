"""The cost of an imagined episode's model steps: each ensemble member on its own rows
(stratified member draws) against every member on every row, side by side in one run.

``training.dynamics.predict_step`` runs each of the ``E`` members only on the rows it
predicts when every member owns ``B / E`` rows (what ``zoo.tasks.imagined.draw_members``
draws when ``E`` divides ``B``); otherwise every member runs on every row. This script times
``--steps`` model steps (one compiled ``fori_loop``, compilation excluded, best of
``--repeats``) of a 4-member ensemble on ``--batch`` rows of point-maze-sized states and
actions, for both draws (the "every member" draw moves one row to another member) and for
each of ``--hidden`` widths, on the default JAX device.

Usage::

    python benchmarks/imagined_step.py [--batch 64] [--steps 100] [--hidden 128 512]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402

from training import dynamics  # noqa: E402
from zoo.tasks.imagined import draw_members  # noqa: E402


def time_steps(
    model: dynamics.DynamicsModel,
    states: jax.Array,
    actions: jax.Array,
    members: jax.Array,
    steps: int,
    repeats: int,
) -> float:
    """Best wall seconds of ``steps`` chained model steps (compiled once beforehand)."""

    @jax.jit
    def rollout(model: dynamics.DynamicsModel, states: jax.Array, members: jax.Array) -> jax.Array:
        def body(i: jax.Array, x: jax.Array) -> jax.Array:
            key = jax.random.fold_in(jax.random.key(0), i)
            return dynamics.predict_step(model, key, x, actions, members, sample=False)[0]

        return jax.lax.fori_loop(0, steps, body, states)

    rollout(model, states, members).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        rollout(model, states, members).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=64, help="rows (episodes) per step")
    p.add_argument("--steps", type=int, default=100, help="model steps per timing")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 512], help="member widths")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    if args.batch % args.members:
        p.error(f"--batch ({args.batch}) must be a multiple of --members ({args.members})")

    state_size, action_size = 2, 2  # point-maze
    states = jax.random.normal(jax.random.key(1), (args.batch, state_size))
    actions = jax.random.normal(jax.random.key(2), (args.batch, action_size))
    stratified = draw_members(jax.random.key(3), args.batch, args.members)
    uneven = stratified.at[0].set((stratified[0] + 1) % args.members)
    device = jax.devices()[0]
    print(
        f"{args.steps} model steps of {args.members} members on {args.batch} rows, "
        f"{device.platform} ({device.device_kind}), best of {args.repeats}"
    )
    print(f"{'widths':<12}{'own rows ms':>14}{'every member ms':>18}{'speed-up':>10}")
    for width in args.hidden:
        config = dynamics.DynamicsConfig(members=args.members, hidden_sizes=(width, width))
        model = dynamics.init_dynamics(jax.random.key(0), config, state_size, action_size)
        own = time_steps(model, states, actions, stratified, args.steps, args.repeats)
        every = time_steps(model, states, actions, uneven, args.steps, args.repeats)
        print(
            f"{f'({width}, {width})':<12}{own * 1e3:>14.2f}{every * 1e3:>18.2f}{every / own:>9.1f}x"
        )


if __name__ == "__main__":
    main()

"""The one QD loop: ``ask -> evaluate -> insert -> tell``, for every algorithm.

A chunk of iterations runs as one jitted ``lax.scan`` with the loop state donated (the
archive is updated in place, never copied); between chunks the host updates the progress
bar, appends the metrics log and writes an atomic checkpoint.

The batch to evaluate next is part of the state (``pending``): the initial state holds the
task's random initial genomes, and each step ends by asking the emitter for the next batch.
So iteration 0 needs no special case (no ``cond`` around the step) and every chunk of the
same length runs the same compiled program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Int, PRNGKeyArray

from models.policy import PolicySpec
from training.qd.emitter import Emitter
from zoo.archive import Archive
from zoo.tasks.base import Evaluation, Task

Metrics = dict[str, Array]


class QDState(eqx.Module):
    """Everything that changes during a run (checkpointed as one pytree)."""

    archive: Archive
    emitter_state: Any
    pending: Any
    key: PRNGKeyArray
    iteration: Int[Array, ""]


def init_state(
    task: Task,
    emitter: Emitter,
    archive: Archive,
    key: PRNGKeyArray,
    policy: PolicySpec | None,
) -> QDState:
    """The state before iteration 0: an empty archive, the emitter's initial state and the
    task's random initial genomes as the first batch to evaluate."""
    key, k_emitter, k_genomes = jax.random.split(key, 3)
    return QDState(
        archive=archive,
        emitter_state=emitter.init(k_emitter, archive),
        pending=task.init_genomes(k_genomes, emitter.batch_size, policy),
        key=key,
        iteration=jnp.asarray(0, jnp.int32),
    )


POPULATION_AXIS = "population"


def population_mesh(batch_size: int, devices: list[jax.Device] | None = None) -> Mesh | None:
    """A 1-D mesh over as many devices as evenly divide ``batch_size`` (None for one device).

    On a CPU machine, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes N host
    devices; each runs its share of the population on its own thread (the ``qdzoo`` CLI sets
    N to the number of cores).
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    while n > 1 and batch_size % n:
        n -= 1
    return None if n <= 1 else Mesh(np.array(devices[:n]), (POPULATION_AXIS,))


def local_share_evaluate(
    task: Task, mesh: Mesh | None, return_trajectory: bool
) -> Callable[[Any, PRNGKeyArray], Evaluation]:
    """``evaluate(genomes, key)`` for code running *inside* ``shard_map`` over ``mesh``.

    Every device holds the whole batch; it evaluates its own contiguous share and the small
    results are all-gathered, so each device ends with the evaluation of the whole batch.
    Each share folds its index into the key (independent stochastic resets); results of
    deterministic-reset tasks do not depend on the number of devices.
    """

    def evaluate(genomes: Any, key: PRNGKeyArray) -> Evaluation:
        return task.evaluate(genomes, key, return_trajectory=return_trajectory)

    if mesh is None:
        return evaluate

    def share(genomes: Any, key: PRNGKeyArray) -> Evaluation:
        index = jax.lax.axis_index(POPULATION_AXIS)
        batch = jax.tree_util.tree_leaves(genomes)[0].shape[0]
        size = batch // mesh.size
        mine = jax.tree_util.tree_map(
            lambda x: jax.lax.dynamic_slice_in_dim(x, index * size, size), genomes
        )
        result = evaluate(mine, jax.random.fold_in(key, index))
        return jax.tree_util.tree_map(
            lambda x: jax.lax.all_gather(x, POPULATION_AXIS, tiled=True), result
        )

    return share


def sharded_evaluate(
    task: Task, mesh: Mesh | None, return_trajectory: bool
) -> Callable[[Any, PRNGKeyArray], Evaluation]:
    """``task.evaluate`` with the population split over ``mesh``; replicated inputs and
    outputs (for use outside the QD loop, e.g. to measure the environment-only limit)."""
    evaluate = local_share_evaluate(task, mesh, return_trajectory)
    return evaluate if mesh is None else on_every_device(evaluate, mesh)


def on_every_device(fn: Callable[..., Any], mesh: Mesh) -> Callable[..., Any]:
    """Run ``fn`` on every device of ``mesh`` with replicated inputs and outputs.

    Inside, ``fn`` may split work by ``jax.lax.axis_index(POPULATION_AXIS)`` and gather it
    back; everything else is computed identically on each device, with no collective.
    """
    return jax.shard_map(fn, mesh=mesh, in_specs=P(), out_specs=P(), check_vma=False)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Place ``tree`` on every device of ``mesh`` (no-op without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P()))


def make_step(
    task: Task, emitter: Emitter, mesh: Mesh | None = None
) -> Callable[[QDState], tuple[QDState, Metrics]]:
    """One QD iteration as a pure function ``state -> (state, metrics)``.

    With a ``mesh``, each device evaluates its share of the batch and the results are
    gathered; asking, inserting and telling are small and run identically on every device
    (one all-gather per iteration, instead of collectives inside the archive update).
    """
    evaluate = local_share_evaluate(task, mesh, emitter.needs_trajectory)

    def step(state: QDState) -> tuple[QDState, Metrics]:
        key, k_eval, k_ask = jax.random.split(state.key, 3)
        genomes = state.pending
        evaluation = evaluate(genomes, k_eval)
        archive, info = state.archive.insert(genomes, evaluation.fitness, evaluation.descriptors)
        emitter_state = emitter.tell(state.emitter_state, archive, genomes, evaluation, info)
        pending, emitter_state = emitter.ask(k_ask, emitter_state, archive)
        new_state = QDState(archive, emitter_state, pending, key, state.iteration + 1)
        metrics = dict(archive.metrics())
        metrics["iteration"] = new_state.iteration
        metrics["added"] = jnp.sum(info.status > 0)
        return new_state, metrics

    return step if mesh is None else on_every_device(step, mesh)


def make_chunk(
    step: Callable[[QDState], tuple[QDState, Metrics]],
) -> Callable[[QDState, int], tuple[QDState, Metrics]]:
    """``chunk(state, length)``: ``length`` iterations as one jitted scan.

    The state argument is donated; ``length`` is static (one compilation per distinct
    length: a run uses at most two, its chunk size and the remainder). Metrics have a
    leading axis of ``length``.
    """

    def chunk(state: QDState, length: int) -> tuple[QDState, Metrics]:
        return jax.lax.scan(lambda s, _: step(s), state, None, length=length)

    return jax.jit(chunk, static_argnums=(1,), donate_argnums=(0,))

"""The population split over devices: a 1-D mesh, and evaluation of each device's share.

On a CPU machine, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes N host
devices; each runs its share of the population on its own thread (the ``qdzoo`` CLI sets N
to the number of cores). On accelerators the mesh spans the local devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PRNGKeyArray

from training.qd.emitter import EvaluateFn
from zoo.errors import ConfigError
from zoo.tasks.base import Evaluation, Task
from zoo.tasks.protocol import population_size

POPULATION_AXIS = "population"


def population_mesh(batch_size: int, devices: list[jax.Device] | None = None) -> Mesh | None:
    """A 1-D mesh over as many devices as evenly divide ``batch_size`` (None for one device).

    The devices are those of every process of a multi-process run (``jax.devices()``), which
    must all take part: a batch they do not divide raises.

    Raises:
        ConfigError: a multi-process run whose batch size is not a multiple of its devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    while n > 1 and batch_size % n:
        n -= 1
    if jax.process_count() > 1 and n != len(devices):
        raise ConfigError(
            f"a run over {jax.process_count()} processes splits each batch over all their "
            f"{len(devices)} devices, so the batch size must be a multiple of {len(devices)}; "
            f"given --batch-size {batch_size}: use e.g. "
            f"--batch-size {len(devices) * max(1, round(batch_size / len(devices)))}"
        )
    return None if n <= 1 else Mesh(np.array(devices[:n]), (POPULATION_AXIS,))


def local_share_evaluate(task: Task, mesh: Mesh | None) -> EvaluateFn:
    """``evaluate(genomes, key, *, transitions=False)`` for code running *inside*
    ``shard_map`` over ``mesh`` (plain ``task.evaluate`` without a mesh).

    Every device holds the whole batch; it evaluates its own contiguous share and the
    results are all-gathered, so each device ends with the evaluation of the whole batch. A
    batch that the devices do not divide is padded with copies of its last genome (their
    results are dropped). Each share folds its index into the key (independent stochastic
    resets); results of deterministic-reset tasks do not depend on the number of devices.
    """

    def evaluate(genomes: Any, key: PRNGKeyArray, *, transitions: bool = False) -> Evaluation:
        return task.evaluate(genomes, key, transitions=transitions)

    if mesh is None:
        return evaluate

    def share(genomes: Any, key: PRNGKeyArray, *, transitions: bool = False) -> Evaluation:
        index = jax.lax.axis_index(POPULATION_AXIS)
        batch = population_size(genomes)
        size = -(-batch // mesh.size)
        padding = size * mesh.size - batch
        if padding:
            genomes = jax.tree_util.tree_map(
                lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], padding, axis=0)]), genomes
            )
        mine = jax.tree_util.tree_map(
            lambda x: jax.lax.dynamic_slice_in_dim(x, index * size, size), genomes
        )
        result = evaluate(mine, jax.random.fold_in(key, index), transitions=transitions)
        gathered = jax.tree_util.tree_map(
            lambda x: jax.lax.all_gather(x, POPULATION_AXIS, tiled=True), result
        )
        if padding:
            gathered = jax.tree_util.tree_map(lambda x: x[:batch], gathered)
        return gathered

    return share


def sharded_evaluate(task: Task, mesh: Mesh | None) -> EvaluateFn:
    """``task.evaluate`` with the population split over ``mesh``; replicated inputs and
    outputs (for use outside the QD loop, e.g. to measure the environment-only limit)."""
    evaluate = local_share_evaluate(task, mesh)
    if mesh is None:
        return evaluate

    def run(genomes: Any, key: PRNGKeyArray, *, transitions: bool = False) -> Evaluation:
        return on_every_device(lambda g, k: evaluate(g, k, transitions=transitions), mesh)(
            genomes, key
        )

    return run


def on_every_device(fn: Callable[..., Any], mesh: Mesh) -> Callable[..., Any]:
    """Run ``fn`` on every device of ``mesh`` with replicated inputs and outputs.

    Inside, ``fn`` may split work by ``jax.lax.axis_index(POPULATION_AXIS)`` and gather it
    back; everything else is computed identically on each device, with no collective.
    """
    return jax.shard_map(fn, mesh=mesh, in_specs=P(), out_specs=P(), check_vma=False)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Place ``tree`` on every device of ``mesh`` (no-op without a mesh); a mesh over the
    devices of several processes (``qdzoo train --distributed``) gets each process's own
    copy of ``tree`` on its devices."""
    if mesh is None:
        return tree
    if any(d.process_index != jax.process_index() for d in mesh.devices.flat):
        from training.distributed import replicate_global

        return replicate_global(tree, mesh)
    return jax.device_put(tree, NamedSharding(mesh, P()))
